"""What integrators trip over first: CORS, error messages, ids, a busy port, the first run."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from tests.support import ROOT, Api, ServerProcess, unique_name

ORIGIN = "https://app.example.org"


# --- CORS -----------------------------------------------------------------------------------

async def preflight(http: aiohttp.ClientSession, url: str, origin: str,
                    method: str = "POST") -> aiohttp.ClientResponse:
    """An OPTIONS preflight as a browser sends it."""
    async with http.options(url, headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}) as r:
        await r.read()
        return r


async def test_cors_is_off_unless_origins_are_configured(
        http: aiohttp.ClientSession, server: ServerProcess) -> None:
    """By default no origin is allowed: preflight is 405, answers carry no CORS header."""
    r = await preflight(http, server.url + "/rpc", ORIGIN)
    assert r.status == 405 and "Access-Control-Allow-Origin" not in r.headers
    async with http.post(server.url + "/rpc", headers={"Origin": ORIGIN}, json={
            "jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}) as resp:
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_preflight_and_answers_for_allowed_origins(
        http: aiohttp.ClientSession, server_factory: Callable[..., ServerProcess]) -> None:
    """--cors-origins: preflights of /rpc, /poll, /files and /files/{id} are answered for
    the listed origins only; real answers (errors too) echo the origin and expose headers."""
    server = server_factory("--cors-origins", f"{ORIGIN}, http://localhost:3000")
    for path, method, allowed in [("/rpc", "POST", "POST"), ("/poll", "GET", "GET, HEAD"),
                                  ("/files", "POST", "POST"), ("/files/f_x", "GET", "GET, HEAD")]:
        r = await preflight(http, server.url + path, ORIGIN, method)
        assert r.status == 204, path
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert r.headers["Access-Control-Allow-Methods"] == allowed
        assert set(r.headers["Access-Control-Allow-Headers"].split(", ")) == {
            "Authorization", "Content-Type"}
        assert "Origin" in r.headers["Vary"]
    refused = await preflight(http, server.url + "/rpc", "https://evil.example")
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers
    not_covered = await preflight(http, server.url + "/docs", ORIGIN, "GET")
    assert not_covered.status == 405

    alice = Api(http, server.url)
    await alice.connect(unique_name("cors"))
    headers = {**alice.headers(), "Origin": "http://localhost:3000"}
    async with http.post(server.url + "/rpc", headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "session.status"}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "Content-Disposition" in resp.headers["Access-Control-Expose-Headers"]
    async with http.get(server.url + "/poll?timeout=0", headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 401  # an error a page must be able to read
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.post(server.url + "/files?name=a.txt", data=b"hi", headers=headers) as resp:
        file_id = (await resp.json())["file_id"]
        assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    async with http.get(f"{server.url}/files/{file_id}", headers=headers) as resp:
        assert await resp.read() == b"hi"
        assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    async with http.get(server.url + "/poll?timeout=0",
                        headers={**alice.headers(), "Origin": "https://evil.example"}) as resp:
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_star_allows_every_origin(
        http: aiohttp.ClientSession, server_factory: Callable[..., ServerProcess]) -> None:
    """`--cors-origins '*'` answers any origin with `*` (tokens are headers, not cookies)."""
    server = server_factory("--cors-origins", "*")
    r = await preflight(http, server.url + "/rpc", "https://anywhere.example")
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_origins_must_be_origins(tmp_path: Path) -> None:
    """A path or a bare host in --cors-origins is refused at start."""
    done = subprocess.run([sys.executable, "-m", "rpc.server", "--data-dir", str(tmp_path),
                           "--cors-origins", "app.example.org"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--cors-origins takes origins" in done.stderr


# --- validation messages --------------------------------------------------------------------

PYTHON_REPR = ("{'", "['", "': ", "is not valid under", "is valid under each", "None", "True")


async def test_invalid_params_name_the_fields_to_fix(api: Callable[[], Api]) -> None:
    """-32602 data.detail says which field and what to do, in words; data.path stays."""
    alice = api()
    await alice.connect(unique_name("val"))
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"text": "hi"}, "exactly one of chat_id, to is required", ""),
        ({"chat_id": "general", "to": "bob", "text": "hi"},
         "exactly one of chat_id, to (chat_id and to were given)", ""),
        ({"chat_id": "general"}, "at least one of text, attachments is required", ""),
        ({"chat_id": "general", "text": ""}, "text: must not be empty", "/text"),
        ({"chat_id": "general", "text": 5}, "text: must be a string", "/text"),
        ({"chat_id": "general", "attachments": [7]}, "attachments[0]: must be a string",
         "/attachments/0"),
        ({"chat_id": "general", "text": "x", "colour": "red"},
         'unknown field "colour"; allowed: attachments, chat_id', ""),
        ({"chat_id": "general", "text": "x", "send_at": "noon"},
         "send_at: must be an RFC 3339 date-time", "/send_at"),
        ({"to": "no way", "text": "x"},
         "to: must be 3 to 32 letters, digits or underscores (pattern ^", "/to"),
    ]
    for params, detail, path in cases:
        failure = await alice.error("messages.send", **params)
        assert failure.code == -32602 and failure.message == "Invalid params"
        assert failure.data["detail"].startswith(detail), (params, failure.data)
        assert failure.data["path"] == path
        assert not any(bit in failure.data["detail"] for bit in PYTHON_REPR), failure.data
    missing = await api().error("session.connect", username="abc")
    assert missing.data["detail"] == "missing required field password"


async def test_invalid_request_members_are_quoted_as_json(api: Callable[[], Api]) -> None:
    """An unknown envelope member is named as JSON, not as a Python repr."""
    status, answer = await api().raw(b'{"jsonrpc":"2.0","id":1,"method":"x","extra\'s":1}')
    assert answer["error"]["data"]["detail"] == 'unexpected member "extra\'s"'


# --- ids ------------------------------------------------------------------------------------

async def test_ids_are_echoed_exactly_as_sent(api: Callable[[], Api]) -> None:
    """Ids beyond 64 bits, beyond a double, or with a fraction come back byte for byte."""
    client = api()
    for raw in [b"18446744073709551616", b"-9223372036854775809",
                b"123456789012345678901234567890", b"-1e400", b"1.50", b"2", b'"s"']:
        body = b'{"jsonrpc":"2.0","method":"nope","id":%s}' % raw
        async with client.http.post(client.url + "/rpc", data=body) as r:
            text = await r.read()
        assert text.endswith(b'"id":%s}' % raw), text
    batch = b'[{"jsonrpc":"2.0","method":"nope","id":18446744073709551617},' \
            b'{"jsonrpc":"2.0","method":"nope","id":7}]'
    async with client.http.post(client.url + "/rpc", data=batch) as r:
        text = await r.read()
    assert b'"id":18446744073709551617}' in text and b'"id":7}' in text
    # A number beyond a double anywhere but in an id is still unparsable, as before.
    _, answer = await client.raw(b'{"jsonrpc":"2.0","method":"nope","id":1.5,"params":'
                                 b'{"a":1e400}}')
    assert answer["error"]["code"] == -32700 and answer["id"] is None
    _, answer = await client.raw(b'{"jsonrpc":"2.0","method":"nope","id":1e400,"x":NaN}')
    assert answer["error"]["code"] == -32700


# --- busy port, first run -------------------------------------------------------------------

def test_busy_port_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """Another process on the port: one line naming it and how to change it; no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "rpc.server", "--port", str(port), "--data-dir",
             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "already in use" in line]
    assert len(lines) == 1 and f"port {port}" in lines[0]
    assert "--port" in lines[0] and "MESSENGER_PORT" in lines[0]
    assert "messenger on http" not in done.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python3 and the venv's python: records what it was asked to do.
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "--version ") echo "Python 3.11.0" ;;
esac
exit 0
"""


def test_bootstrap_says_what_it_is_doing(tmp_path: Path) -> None:
    """scripts/bootstrap (run by scripts/server and scripts/test) announces a slow first
    install and an update, and is silent when there is nothing to do."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap", tmp_path / "scripts" / "bootstrap")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(tmp_path / "fake.log")}

    def bootstrap() -> str:
        done = subprocess.run(["bash", str(tmp_path / "scripts" / "bootstrap")], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stderr

    first = bootstrap()
    assert "creating .venv" in first and "installing into .venv (first run" in first
    assert bootstrap() == ""
    stamp = tmp_path / ".venv" / ".installed"
    os.utime(stamp, (stamp.stat().st_atime - 10, stamp.stat().st_mtime - 10))
    assert "updating .venv" in bootstrap()


@pytest.mark.parametrize("script", ["server", "test"])
def test_scripts_run_bootstrap_first(script: str) -> None:
    """scripts/server and scripts/test go through scripts/bootstrap (and so its messages)."""
    text = (ROOT / "scripts" / script).read_text()
    assert "scripts/bootstrap" in text.split("exec", 1)[0]

"""The OpenRPC document as integrators' tools see it, checked with those very tools.

tests/node/check_openrpc.mjs runs the official `@open-rpc/schema-utils-js` and ajv (its
draft-07 class and Ajv2020) against a running server's /openrpc.json; the versions are pinned
in tests/node/package-lock.json. Without node the tests skip, except in CI (CI=true or
MESSENGER_REQUIRE_NODE=1, which .ci/run sets), where that is a failure.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import schemas
from tests.support import ROOT, Api, ServerProcess

NODE_DIR = ROOT / "tests" / "node"
NPM_CACHE = Path(os.environ.get("HOME", "/tmp")) / ".cache" / "messenger-npm"
# Keywords that draft-07 does not know (or reads differently): a schema using one would mean
# one thing to a 2020-12 validator and another to the draft-07 tools OpenRPC assumes.
NOT_IN_DRAFT7 = {"unevaluatedProperties", "unevaluatedItems", "dependentRequired",
                 "dependentSchemas", "prefixItems", "$dynamicRef", "$dynamicAnchor",
                 "$recursiveRef", "$recursiveAnchor", "$anchor", "minContains", "maxContains",
                 "$vocabulary", "definitions", "dependencies", "additionalItems"}


def _required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("MESSENGER_REQUIRE_NODE") == "1"


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/node's packages installed (npm ci, cache outside the repo)."""
    node_bin, npm = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm is None:
        _unavailable("node/npm not installed (apt-get install nodejs npm)")
    assert node_bin is not None and npm is not None
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--cache", str(NPM_CACHE), "--no-audit", "--no-fund"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            _unavailable(f"npm ci failed: {done.stderr[-1000:]}")
    return node_bin


async def run_check(node: str, url: str) -> tuple[int, str]:
    """Run check_openrpc.mjs against a server; its exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "check_openrpc.mjs"), url, cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_official_tools_accept_the_served_document(
        node: str, server_factory: Callable[..., ServerProcess]) -> None:
    """validateOpenRPCDocument and parseOpenRPCDocument accept /openrpc.json as served; ajv
    draft-07 and 2020-12 compile every schema strictly, accept every example, agree on probes."""
    server = server_factory()
    status, out = await run_check(node, server.url)
    assert status == 0, out
    assert f"server url {server.url}/rpc" in out, out


@pytest.fixture
async def broken_server() -> AsyncIterator[str]:
    """A server whose document has what the tools refuse: a relative server URL and a
    2020-12-only keyword."""
    doc = {"openrpc": "1.3.2", "info": {"title": "t", "version": "1"},
           "servers": [{"name": "s", "url": "/rpc"}],
           "methods": [{"name": "m", "params": [], "result": {
               "name": "r", "schema": {"type": "object", "unevaluatedProperties": False}}}]}

    async def openrpc(request: web.Request) -> web.Response:
        return web.json_response(doc)

    async def rpc(request: web.Request) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "result": doc, "id": 1})

    app = web.Application()
    app.router.add_get("/openrpc.json", openrpc)
    app.router.add_post("/rpc", rpc)
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield str(test_server.make_url("")).rstrip("/")


async def test_the_check_does_refuse_what_integrators_tripped_on(
        node: str, broken_server: str) -> None:
    """The checker is not a rubber stamp: the issue's two findings each fail it."""
    status, out = await run_check(node, broken_server)
    assert status == 1, out
    assert 'should match format \\"uri\\"' in out, out
    assert 'unknown keyword: "unevaluatedProperties"' in out, out


def _keywords(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, keyword) of every object key in a schema document, data values included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("examples", "const", "enum", "default"):
                yield path, key
                yield from _keywords(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _keywords(value, f"{path}/{i}")


def test_no_schema_uses_a_keyword_draft7_reads_differently() -> None:
    """Every schema file means the same to draft-07 and 2020-12 (no node needed for this)."""
    files = [schemas.SCHEMA_DIR / "defs.json", *sorted(schemas.SCHEMA_DIR.glob("*/*.json"))]
    found = []
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for where, key in _keywords(doc, path.name):
            # `$defs` is only where schemas/ keeps shared types; the OpenRPC document moves
            # them to components.schemas.
            is_property = where.endswith("/properties")
            if key in NOT_IN_DRAFT7 and not is_property:
                found.append(f"{where}/{key}")
            if key == "items" and isinstance(_at(doc, f"{where}/{key}", path.name), list):
                found.append(f"{where}/items (an array means prefixItems in 2020-12)")
    assert found == []


def _at(doc: Any, pointer: str, root: str) -> Any:
    node = doc
    for part in pointer.removeprefix(root).strip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_chat_status_is_a_chat_plus_its_counts() -> None:
    """chat and chat_status list their fields in full (for draft-07); they do not drift."""
    defs = schemas.defs()["$defs"]
    chat, status = defs["chat"], defs["chat_status"]
    assert chat["additionalProperties"] is False and status["additionalProperties"] is False
    for name, prop in chat["properties"].items():
        assert status["properties"].get(name) == prop, name
    assert set(chat["required"]) <= set(status["required"])
    assert "unread" in status["properties"]


async def test_server_url_is_absolute_from_the_request_or_public_url(
        server_factory: Callable[..., ServerProcess]) -> None:
    """/openrpc.json and rpc.discover name the URL the client reached, or --public-url."""
    plain = server_factory()
    public = server_factory("--public-url", "https://chat.example.org/messenger/")
    async with aiohttp.ClientSession() as http:
        for headers, expected in [
                ({}, f"{plain.url}/rpc"),
                ({"Host": "chat.example.net:8443"}, "http://chat.example.net:8443/rpc"),
                ({"Host": "[::1]:9"}, "http://[::1]:9/rpc"),
                # Not a host name: the listening address instead (still a valid URI).
                ({"Host": "a b\\c"}, f"{plain.url}/rpc")]:
            async with http.get(plain.url + "/openrpc.json", headers=headers) as r:
                assert (await r.json())["servers"][0]["url"] == expected, headers
            async with http.post(plain.url + "/rpc", headers=headers, json={
                    "jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}) as r:
                assert (await r.json())["result"]["servers"][0]["url"] == expected, headers
        # HTTP/1.0 without a Host header: the listening address (no name lookup).
        reader, writer = await asyncio.open_connection("127.0.0.1", plain.port)
        writer.write(b"GET /openrpc.json HTTP/1.0\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        doc = json.loads(raw.partition(b"\r\n\r\n")[2])
        assert doc["servers"][0]["url"] == f"{plain.url}/rpc"
        discovered = await Api(http, public.url).call("rpc.discover")
        assert discovered["servers"][0]["url"] == "https://chat.example.org/messenger/rpc"
        async with http.get(public.url + "/openrpc.json") as r:
            assert await r.json() == discovered


def test_public_url_must_be_an_absolute_url(tmp_path: Path) -> None:
    """A --public-url the document could not use is refused at start, in one line."""
    done = subprocess.run(
        [sys.executable, "-m", "rpc.server", "--data-dir",
         str(tmp_path), "--public-url", "chat.example.org"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--public-url must be an absolute http(s) URL" in done.stderr
    assert "Traceback" not in done.stderr

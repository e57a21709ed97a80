"""Test helpers: a real server process on a loopback port, and a schema-checking test client."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import orjson
from jsonschema.protocols import Validator

import schemas
from rpc.validation import compile_schema

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


# Tests register many users from one address with short passwords; the tests of those
# limits pass their own values (a later flag wins).
# Cheap password hashes (1 MiB, a few ms): the suite makes thousands of accounts. The tests
# about hashing under load ask for the real cost (REAL_HASHING).
TEST_DEFAULTS = ("--register-limit", "1000000", "--min-password", "1",
                 "--send-limit", "1000000000", "--password-cost", "10")
REAL_HASHING = ("--password-cost", "14")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique_name(prefix: str = "u") -> str:
    """A username no other test uses (3-32 of letters, digits, _)."""
    return f"{prefix}{os.getpid() % 10000}_{next(_counter)}_{time.monotonic_ns() % 100000}"[:32]


@contextlib.contextmanager
def running_server(data_dir: Path, *args: str) -> Iterator["ServerProcess"]:
    """A started server, stopped when the block ends (for module-scoped fixtures)."""
    proc = ServerProcess(data_dir, *args).start()
    try:
        yield proc
    finally:
        if proc.proc is not None:
            proc.stop()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so no server outlives a run."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# Server processes are forked from a process that imported the server once (a multiprocessing
# forkserver): a start then costs a fork instead of a Python start-up and ~0.4 s of imports.
# They are real processes all the same: own pid, signals, exit codes, `rpc.server.main` run
# from the top. MESSENGER_TEST_FORK=0 starts each with `python -m rpc.server` instead.
FORK = os.environ.get("MESSENGER_TEST_FORK", "1") != "0"
_forkserver: Any = None


def _zygote() -> Any:
    """The multiprocessing context whose forkserver has the server imported."""
    global _forkserver
    if _forkserver is None:
        import multiprocessing
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["rpc.server", "store.postgres", "client.cli",
                                    "tests.support"])
        _forkserver = ctx
    return _forkserver


def _serve_forked(argv: list[str], log_path: str, env: dict[str, str]) -> None:
    """In the forked child: what `python -m rpc.server ARGV` would do, logging to log_path."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    _die_with_parent()  # the forkserver: it ends with the test process
    from rpc.server import main
    main(argv)


def _run_module_forked(module: str, argv: list[str], env: dict[str, str], cwd: str,
                       stdin: str, out_path: str, err_path: str) -> None:
    """In the forked child: `python -m MODULE ARGV` with stdin given and output to files."""
    import runpy
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    r, w = os.pipe()
    with os.fdopen(w, "w", encoding="utf-8") as feed:  # small inputs: fits the pipe
        feed.write(stdin)
    os.dup2(r, 0)
    os.close(r)
    for target, path in ((1, out_path), (2, err_path)):
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
    _die_with_parent()
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_module(module: str, args: list[str], env: dict[str, str], cwd: Path, stdin: str = "",
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([python, "-m", module, *args], ...)` with text output captured, in a
    process forked from the zygote (FORK) so that it skips Python's start-up and imports."""
    if not FORK or len(stdin.encode()) > 32 * 1024:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                              input=stdin, capture_output=True, text=True, timeout=timeout)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        process = _zygote().Process(target=_run_module_forked, daemon=True, args=(
            module, list(args), dict(env), str(cwd), stdin, out, err))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            os.kill(process.pid, signal.SIGKILL)
            process.join()
            raise subprocess.TimeoutExpired([module, *args], timeout)
        with open(out, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        with open(err, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args],
                                       process.exitcode, stdout, stderr)


class ForkedProcess:
    """The part of `subprocess.Popen` the tests use, over a forked multiprocessing.Process."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        ctx = _zygote()
        self.process = ctx.Process(target=_serve_forked, daemon=True,
                                   args=(argv, str(log_path), dict(os.environ)))
        self.process.start()
        self.pid: int = self.process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        if self.returncode is None and not self.process.is_alive():
            self.returncode = self.process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit; its code (TimeoutExpired when it does not come in time)."""
        self.process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(["rpc.server"], timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process."""
        if self.poll() is None:
            os.kill(self.pid, sig)


class PortTaken(RuntimeError):
    """The server could not listen: another process took the port first."""


_DIE_WITH_PARENT = _die_with_parent


class ServerProcess:
    """`messenger-server` as a process of its own (forked, see FORK) with its own data directory."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | ForkedProcess | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.started_once = False

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        """Start and wait until it answers.

        The port was free when picked, but a test running in parallel (pytest -n) may take
        it first: a first start then moves to another free port (a restart keeps its port).
        """
        for attempt in range(5):
            try:
                return self._start()
            except PortTaken:
                if self.started_once or attempt == 4:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start(self) -> "ServerProcess":
        log = open(self.log_path, "ab")
        log_start = log.tell()
        argv = ["--port", str(self.port), "--data-dir", str(self.data_dir), *TEST_DEFAULTS,
                *self.args]
        # A test that puts its own code in the child (monkeypatching _die_with_parent) gets a
        # fresh interpreter: only there does that code run before the server.
        if FORK and _die_with_parent is _DIE_WITH_PARENT:
            log.close()
            self.proc = ForkedProcess(argv, self.log_path)
        else:
            self.proc = subprocess.Popen([sys.executable, "-m", "rpc.server", *argv], cwd=ROOT,
                                         stdout=log, stderr=log, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                with open(self.log_path, "rb") as f:
                    f.seek(log_start)
                    said = f.read().decode(errors="replace")
                if f"port {self.port} is already in use" in said:
                    raise PortTaken(said)
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/openrpc.json", timeout=1):
                    self.started_once = True
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Stop it with a signal; its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Graceful stop, then start on the same port and data."""
        self.stop()
        self.start()

    def log(self) -> str:
        """What the server logged so far."""
        return self.log_path.read_text(errors="replace")


class SchemaChecker:
    """Validates every result and event against schemas/ (the docs' own source)."""

    def __init__(self) -> None:
        self.results: dict[str, Validator] = {
            name: compile_schema(ms.result) for name, ms in schemas.method_schemas().items()}
        self.events: dict[str, Validator] = {
            name: compile_schema(s) for name, s in schemas.event_schemas().items()}

    def result(self, method: str, result: Any) -> None:
        """Raise if a method's result does not match its schema."""
        self.results[method].validate(result)

    def event(self, event: Any) -> None:
        """Raise if an event does not match its type's schema."""
        self.events[event["type"]].validate(event)


CHECK = SchemaChecker()


class RpcFailure(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['code']}: {error['message']} {error.get('data')}")
        self.code: int = error["code"]
        self.message: str = error["message"]
        self.data: Any = error.get("data")


class Api:
    """A bare JSON-RPC test client over real HTTP; checks each result and event's schema."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.username = ""
        self.cursor: int | None = None

    def headers(self) -> dict[str, str]:
        """Authorization header when logged in."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def raw(self, body: bytes | str) -> tuple[int, Any]:
        """POST a raw body to /rpc; HTTP status and decoded answer (None if empty)."""
        data = body.encode() if isinstance(body, str) else body
        async with self.http.post(self.url + "/rpc", data=data, headers=self.headers()) as r:
            content = await r.read()
            return r.status, orjson.loads(content) if content else None

    async def call(self, method: str, **params: Any) -> Any:
        """Call a method; its (schema-checked) result, or RpcFailure."""
        status, answer = await self.raw(orjson.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        assert status == 200, (status, answer)
        if "error" in answer:
            assert answer["error"]["code"] != -32603, answer
            raise RpcFailure(answer["error"])
        CHECK.result(method, answer["result"])
        return answer["result"]

    async def error(self, method: str, **params: Any) -> RpcFailure:
        """Call a method that must fail; the failure."""
        try:
            result = await self.call(method, **params)
        except RpcFailure as failure:
            return failure
        raise AssertionError(f"{method} succeeded: {result}")

    async def connect(self, username: str, password: str = "secret pw") -> Any:
        """session.connect and keep the token."""
        result = await self.call("session.connect", username=username, password=password)
        self.token = result["token"]
        self.username = result["username"]
        return result

    async def poll(self, cursor: int | None = None, timeout: float = 0,
                   limit: int | None = None, advance: bool = True) -> Any:
        """GET /poll; the schema-checked answer (cursor kept when `advance`)."""
        query: dict[str, str] = {"timeout": str(timeout)}
        if cursor is not None:
            query["cursor"] = str(cursor)
        if limit is not None:
            query["limit"] = str(limit)
        async with self.http.get(self.url + "/poll", params=query, headers=self.headers()) as r:
            body = await r.json()
            assert r.status == 200, (r.status, body)
        for event in body["events"]:
            CHECK.event(event)
        seqs = [e["seq"] for e in body["events"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        if advance:
            self.cursor = body["cursor"]
        return body

    async def all_messages(self, chat_id: str) -> list[Any]:
        """Every live message of a chat, paging back through messages.history."""
        pages: list[list[Any]] = []
        params: dict[str, Any] = {"chat_id": chat_id, "limit": 100}
        while True:
            page = await self.call("messages.history", **params)
            pages.insert(0, page["messages"])
            if not page["more"]:
                return [m for chunk in pages for m in chunk]
            params["before"] = page["messages"][0]["message_id"]

    async def next_events(self, timeout: float = 5) -> list[Any]:
        """Poll from the kept cursor until something arrives."""
        body = await self.poll(self.cursor, timeout=timeout)
        events: list[Any] = body["events"]
        return events


def share_niceness() -> None:
    """Give the sessions this process's descendants started our niceness.

    scripts/test runs the parallel round at nice 19 beside the timing round. Linux's
    autogroup scheduling shares the CPU between sessions first and by niceness only within
    one, so a child that starts a session of its own (Playwright's Chromium, pg_ctl's
    postmaster) would compete with the timing round as an equal. Where /proc/PID/autogroup
    is missing or not ours to write, nothing changes.
    """
    mine = os.nice(0)
    if mine <= 0:
        return
    family: dict[int, tuple[int, int]] = {}  # pid: (parent, session)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            family[int(entry)] = (int(fields[1]), int(fields[3]))
    ours, session = {os.getpid()}, os.getsid(0)
    grown = True
    while grown:
        grown = False
        for pid, (parent, _) in family.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                grown = True
    for pid in ours:
        if family.get(pid, (0, session))[1] != session:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/autogroup").write_text(str(mine))


async def wait_until(predicate: Any, timeout: float = 5, interval: float = 0.05) -> None:
    """Await an async predicate becoming true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached in time")

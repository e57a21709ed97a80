"""What the benchmark scenarios share: the target under test and the measurements."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "bench password"


@dataclass
class Target:
    """A server under test: its URL and, when known, its process."""

    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    workdir: str | None = None
    # Several processes of one deployment (PostgreSQL): users are spread over them.
    more_urls: list[str] = field(default_factory=list)
    more_pids: list[int] = field(default_factory=list)
    more_spawned: list["Target"] = field(default_factory=list)  # stopped with this one

    @property
    def urls(self) -> list[str]:
        """Every process's URL, the first one first."""
        return [self.url, *self.more_urls]

    @property
    def pids(self) -> list[int]:
        """Every known process id."""
        return [p for p in [self.pid, *self.more_pids] if p is not None]

    def stop(self, wait: float = 10) -> None:
        """Stop a process we started (SIGTERM, then SIGKILL after `wait` seconds)."""
        for other in self.more_spawned:
            other.stop(wait)
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(target: Target) -> None:
    """Wait until a started target answers; stop it (and clean up) if it never does."""
    proc = target.proc
    assert proc is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            code = proc.returncode
            target.stop()
            raise SystemExit(f"{target.url}: server exited with {code}")
        try:
            with urllib.request.urlopen(target.url + "/openrpc.json", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    target.stop()
    raise SystemExit(f"{target.url}: server did not start")


def cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) the processes have used so far."""
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_kib(pid: int | None) -> int | None:
    """Resident memory of a process in KiB."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Meter:
    """Wall time and the CPU share of the generator and the server over a window."""

    pids: list[int]
    wall: float = field(default_factory=time.perf_counter)
    client_cpu: float = field(default_factory=time.process_time)
    server_cpu: float | None = None

    def __post_init__(self) -> None:
        self.server_cpu = cpu_seconds(self.pids)

    def read(self) -> dict[str, Any]:
        """Elapsed seconds and CPU use as % of one core."""
        elapsed = max(time.perf_counter() - self.wall, 1e-6)
        out: dict[str, Any] = {
            "seconds": round(elapsed, 3),
            "client_cpu_pct": round(100 * (time.process_time() - self.client_cpu) / elapsed, 1)}
        now = cpu_seconds(self.pids)
        if now is not None and self.server_cpu is not None:
            out["server_cpu_pct"] = round(100 * (now - self.server_cpu) / elapsed, 1)
        return out


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of values, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def ms(seconds: float) -> float:
    """Seconds as milliseconds, rounded."""
    return round(seconds * 1000, 1)


async def gather_limited(n: int, make: Callable[[int], Awaitable[Any]],
                         concurrency: int) -> list[Any]:
    """Run make(0..n-1) with at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with gate:
            return await make(i)

    return await asyncio.gather(*[one(i) for i in range(n)])

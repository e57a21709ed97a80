"""Smoke test of messenger-bench: every scenario runs on tiny sizes, against both targets."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT

TINY = ["--senders", "2", "--duration", "0.5", "--pollers", "4", "--users", "3",
        "--messages", "2", "--interval", "0.05", "--idle-polls", "4", "--connects", "2",
        "--concurrency", "2", "--settle", "0.3", "--stop-wait", "1"]


def run_bench(*args: str) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "client.bench", *args, *TINY], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_every_scenario_runs_against_messenger_and_floor() -> None:
    rows = run_bench("--spawn", "--floor", "send", "fanout", "idle", "connect")
    by = {(r["scenario"], r["target"]): r for r in rows}
    assert set(by) == {(s, t) for s in ("send", "fanout", "idle", "connect")
                       for t in ("floor", "messenger")}
    messenger = {s: by[(s, "messenger")] for s in ("send", "fanout", "idle", "connect")}
    assert messenger["send"]["acks"] and messenger["send"]["errors"] == 0
    assert messenger["fanout"]["delivered"] == 1.0
    assert messenger["idle"]["held"] == 4 and "kib_per_poll" in messenger["idle"]
    assert messenger["connect"]["connects_per_s"]
    assert "server_cpu_pct" in messenger["send"] and "client_cpu_pct" in messenger["send"]


def test_spawned_processes_share_one_postgres_database(pg_url: str) -> None:
    rows = run_bench("--spawn", "--processes", "2", "--server-arg=--store",
                     "--server-arg=postgres", f"--server-arg=--database-url={pg_url}",
                     "send", "fanout")
    by = {r["scenario"]: r for r in rows}
    assert by["send"]["acks"] and by["send"]["errors"] == 0
    assert by["fanout"]["delivered"] == 1.0  # polls on both processes woke
    refused = subprocess.run([sys.executable, "-m", "client.bench", "--spawn", "--processes",
                              "2", "send"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "--store" in refused.stderr


def test_datascale_measures_both_sizes_and_the_stall() -> None:
    rows = run_bench("--spawn", "datascale", "--datascale-sizes", "50", "300")
    (row,) = rows
    assert row["scenario"] == "datascale" and row["seed_errors"] == 0
    for kind in ("status", "backlog_poll", "history", "send"):
        assert float(str(row[f"{kind}_50_ms"])) > 0 and f"{kind}_ratio" in row
    assert float(str(row["worst_stall_ms"])) > 0


def test_soak_reports_memory_and_descriptor_growth() -> None:
    rows = run_bench("--spawn", "soak", "--soak-seconds", "2", "--soak-sample", "0.2")
    (row,) = rows
    assert row["scenario"] == "soak" and row["errors"] == 0
    assert row["sends"] and row["polled"] and row["connects"] and row["uploads"]
    assert "rss_growth_pct" in row and "fds_growth_pct" in row


def test_send_with_wrk() -> None:
    if shutil.which("wrk") is None:  # .ci/run installs it: in CI a missing wrk fails
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed (apt-get install wrk)")
        pytest.skip("wrk is not installed")
    rows = run_bench("--spawn", "--wrk", "send")
    assert rows[0]["generator"] == "wrk" and rows[0]["errors"] == 0
    assert float(str(rows[0]["acks_per_s"])) > 0

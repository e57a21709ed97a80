"""The README's tour runs as written against a fresh server, and answers as it says.

Each ```sh block of the tour section runs in one bash process (so TOKEN carries over),
with `localhost:8000` pointed at a test server. A `# -> ` line right after a command is its
expected output: compared without whitespace, `...` standing for anything. A JSON answer
with an error must be one the README shows as such.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.support import ROOT, ServerProcess

README = ROOT / "README.md"
TOUR = "## A tour with curl"
MARK = "@@README-STEP-{}@@"


@dataclass
class Step:
    """A run of command lines, and the output the README shows for it (if any)."""

    code: str
    expected: str | None


def tour_blocks(text: str) -> list[str]:
    """The ```sh blocks of the tour section."""
    start = text.index(TOUR)
    end = text.find("\n## ", start + len(TOUR))
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)


def steps(block: str) -> list[Step]:
    """Commands split at comments and blank lines; `# -> ` lines are expected output."""
    out: list[Step] = []
    code: list[str] = []
    for line in block.splitlines():
        if line.startswith("# -> "):
            assert out or code, f"an expected output with no command: {line}"
            if code:
                out.append(Step("\n".join(code), line[5:]))
                code = []
            else:
                prev = out[-1]
                prev.expected = (prev.expected or "") + line[5:]
        elif not line.strip() or line.lstrip().startswith("#"):
            if code:
                out.append(Step("\n".join(code), None))
                code = []
        else:
            code.append(line)
    if code:
        out.append(Step("\n".join(code), None))
    return out


def pattern(expected: str) -> re.Pattern[str]:
    """The expected output as a regex: whitespace ignored, `...` matching anything."""
    parts = re.sub(r"\s+", "", expected).split("...")
    return re.compile(".*?".join(re.escape(p) for p in parts), re.S)


def run_block(block: str, url: str, env: dict[str, str]) -> tuple[list[Step], list[str], str]:
    """Run one block's steps in one bash; the steps, each step's output, and stderr."""
    todo = steps(block)
    port = url.rsplit(":", 1)[1]
    script = ["set -eo pipefail"]
    for i, step in enumerate(todo):
        script.append(f"printf '\\n{MARK.format(i)}\\n'")
        script.append(step.code.replace("localhost:8000", f"localhost:{port}")
                      .replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    outputs = re.split(r"\n@@README-STEP-\d+@@\n", done.stdout)[1:]
    assert len(outputs) == len(todo), done.stdout
    return todo, outputs, done.stderr


def test_tour_parsing_finds_commands_and_outputs() -> None:
    """The splitter sees what a reader sees (and the matcher can say no)."""
    block = "# c\ncurl a \\\n  b\n# -> {\"x\":1,...}\n\nA=1\necho $A\n# -> 1\n"
    assert [(s.code, s.expected) for s in steps(block)] == [
        ("curl a \\\n  b", '{"x":1,...}'), ("A=1\necho $A", "1")]
    assert pattern('{"x": 1, ...}').fullmatch('{"x":1,"y":[2]}')
    assert not pattern('{"x":1,...}').fullmatch('{"x":2,"y":1}')
    assert not pattern('{"events":[],"cursor":2}').fullmatch('{"events":[],"cursor":3}')


def test_readme_tour_runs_against_a_fresh_server(
        server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """Every tour command succeeds on a fresh server and prints what the README says."""
    blocks = tour_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the tour lost its blocks"
    server = server_factory()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env.update(MESSENGER_SERVER=server.url, XDG_CONFIG_HOME=str(tmp_path / "config"))
    compared = 0
    for block in blocks:
        todo, outputs, stderr = run_block(block, server.url, env)
        for step, output in zip(todo, outputs):
            text = output.strip()
            where = f"README step:\n{step.code}\nprinted:\n{text[:2000]}\n{stderr[-1000:]}"
            if step.expected is not None:
                assert pattern(step.expected).fullmatch(re.sub(r"\s+", "", text)), \
                    f"{where}\nexpected:\n{step.expected}"
                compared += 1
            if text.startswith("{"):
                answer = json.loads(text)
                shown_as_error = step.expected is not None and '"error"' in step.expected
                assert "error" not in answer or shown_as_error, where
    assert compared >= 10

"""The README stays true: its Python blocks run, its commands parse, its tables are complete.

Python blocks run in order in one fresh interpreter (working directory: a temporary folder), on
the ``cpu_numpy`` backend. A block whose first line is ``# file: PATH`` is written to PATH in
that folder instead (the plugin example's modules), so later blocks can import it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlplug.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)

DRIVER = """
import json, sys
for line, code in json.load(open(sys.argv[1])):
    exec(compile("\\n" * (line - 1) + code, "README.md", "exec"), globals())
"""


@dataclass
class Block:
    """One fenced block of the README: its language, first code line and text."""

    lang: str
    line: int
    body: str


def blocks(lang: str | None = None) -> list[Block]:
    """Return the README's fenced blocks (of language ``lang``), in order."""
    text = README.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("body")) + 1
        found.append(Block(m["lang"], line, m["body"]))
    return [b for b in found if lang is None or b.lang == lang]


def shell_commands() -> list[str]:
    """Return every command line of the README's bash blocks, ``&&`` chains split."""
    commands = []
    for block in blocks("bash"):
        for raw in block.body.splitlines():
            line = raw.split("  #")[0].strip()
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def has_cpu_numpy() -> bool:
    """Whether the cpu_numpy plugin is installed."""
    try:
        import mlplug_cpu_numpy  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not has_cpu_numpy(), reason="the tour runs on mlplug-cpu-numpy")
def test_readme_python_blocks_run(tmp_path: Path) -> None:
    """Every Python block of the README runs, in order, without error."""
    snippets = []
    for block in blocks("python"):
        first = block.body.partition("\n")[0]
        if first.startswith("# file: "):
            target = tmp_path / first.removeprefix("# file: ").strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / "__init__.py").touch()
            target.write_text(block.body, encoding="utf-8")
        else:
            snippets.append((block.line, block.body))
    assert len(snippets) >= 5, "the tour lost its examples"
    (tmp_path / "blocks.json").write_text(json.dumps(snippets))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *(p for p in sys.path if p)])
    proc = subprocess.run(
        [sys.executable, "driver.py", "blocks.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tiny: softmax is not supported" in proc.stdout


def test_readme_mlplug_commands_parse() -> None:
    """Each ``mlplug ...`` command in the README is accepted by the parser."""
    parser = build_parser()
    commands = [c for c in shell_commands() if c.startswith("mlplug ")]
    assert commands
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])


def test_readme_first_commands_set_up_and_test() -> None:
    """The first command installs everything and runs the matrix; the second runs the tests."""
    first, second = blocks("bash")[:2]
    assert first.body.strip().endswith("mlplug conformance")
    for part in ("python3 -m venv", "pip install torch==2.13.0", "./plugins/cpu_numpy",
                 "./plugins/ggml", "./plugins/torch"):  # fmt: skip
        assert part in first.body
    assert first.body.index("torch==2.13.0") < first.body.index("./plugins/torch")
    assert second.body.strip() == "pip install '.[test]' && python -m pytest tests plugins"


def test_ci_runs_the_readme_test_command() -> None:
    """``.ci/run`` installs the same packages and runs the README's test command."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = blocks("bash")[1].body.strip().split("&&")[-1].strip()
    assert test_command in ci
    for part in ("torch==2.13.0", "'.[test]'", "./plugins/cpu_numpy", "./plugins/ggml",
                 "./plugins/torch", "set -euo pipefail"):  # fmt: skip
        assert part in ci


def test_environment_variables_are_documented() -> None:
    """Every ``MLPLUG_*`` variable read by the core or a plugin is in the README's table."""
    used: set[str] = set()
    for folder in (ROOT / "core", ROOT / "plugins"):
        for path in folder.rglob("*.py"):
            if "tests" in path.parts:
                continue
            used |= set(re.findall(r"\bMLPLUG_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8")))
    table = {m for m in re.findall(r"^\| `(MLPLUG_[A-Z0-9_]+)` \|", README.read_text(), re.M)}
    assert used, "no environment variable found: the scan is broken"
    assert sorted(used - table) == []


def test_cli_commands_are_documented() -> None:
    """The README's CLI table has a row for every subcommand of the parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices is not None
    text = README.read_text(encoding="utf-8")
    for name in sub.choices:
        assert f"| `mlplug {name}" in text

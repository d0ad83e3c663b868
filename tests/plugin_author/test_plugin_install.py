"""A plugin author's path, end to end, in a fresh virtual environment.

``mlplug new-plugin`` (the core's own command, installed in the environment), ``pip install``
of the result, its ``pytest``, and ``mlplug conformance --backend NAME``: green on the first
try, for both engines, with exactly the cases the in-process run says are unsupported shown as
xfails. The same for the README's hand-written ``tiny`` plugin, installed from the README's
own ``pyproject.toml`` block. The tests share one new virtual environment holding only the
core, built from a wheel cache (see ``conftest.py``), each installing a plugin of its own name;
they are marked ``venv``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlplug.conformance import all_cases
from mlplug.dtypes import DType

pytestmark = pytest.mark.venv

ROOT = Path(__file__).resolve().parents[2]
Shell = Callable[..., subprocess.CompletedProcess[str]]


def pytest_counts(output: str) -> Counter[str]:
    """Return the outcome counts of pytest's last summary line (``3 passed, 2 xfailed``)."""
    last = [ln for ln in output.strip().splitlines() if re.search(r"\d+ \w+ in [\d.]+s", ln)]
    assert last, output[-2000:]
    return Counter({w: int(n) for n, w in re.findall(r"(\d+) (\w+)", last[-1])})


# The array engine is the README's walk (test_readme_walk_runs_as_written); here the graph one.
@pytest.mark.parametrize("engine", ["graph"])
def test_new_plugin_installs_and_its_tests_pass_first_time(
    tmp_path: Path,
    venv: Any,
    engine: str,
    shell: Shell,
    statuses: Callable[[str, Path], dict[str, str]],
) -> None:
    """new-plugin, pip install, pytest: zero failures, unsupported cases as xfails."""
    name = f"my{engine}"
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()  # the statuses' in-process run is inside, a few seconds
    made = shell([venv.bin("mlplug"), "new-plugin", name, "--engine", engine], work)
    assert made.returncode == 0, made.stderr
    plugin = work / name
    # What this checkout's core says of the plugin's source, before pip leaves metadata there.
    expected = Counter(statuses(name, plugin).values())
    venv.pip_install(f"./{name}[test]", cwd=work)
    tested = shell([venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], plugin)
    minutes = (time.monotonic() - started) / 60
    print(f"{engine}: new-plugin to a green pytest run in {minutes:.2f} min")
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr
    counts = pytest_counts(tested.stdout)
    assert set(counts) <= {"passed", "xfailed"}, counts
    assert counts["xfailed"] == expected["unsupported"] > 0
    assert counts["passed"] == expected["pass"] + 1  # and the smoke test

    listed = shell([venv.bin("mlplug"), "backends", "--json"], work)
    assert name in [b["name"] for b in json.loads(listed.stdout)]
    matrix = shell([venv.bin("mlplug"), "conformance", "--backend", name, "-q", "--markdown",
                    "c.md"], work)  # fmt: skip
    assert matrix.returncode == 0, matrix.stderr
    assert f"implement next on {name}, by op family" in matrix.stdout
    badge = f"https://img.shields.io/badge/{name}-{expected['pass']}%2F{len(all_cases())}"
    assert badge in (work / "c.md").read_text()


# -- the README's section ------------------------------------------------------------------------
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def plugin_section() -> list[tuple[str, str]]:
    """Return the (language, body) blocks of the README's "Writing a backend plugin" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Writing a backend plugin")
    end = text.index("\n## ", start + 1)
    return [(m["lang"], m["body"]) for m in FENCE.finditer(text[start:end])]


def write_readme_files(folder: Path) -> None:
    """Write the section's files (``# pyproject.toml``, ``# file: PATH`` blocks) to ``folder``."""
    for _, body in plugin_section():
        first = body.partition("\n")[0].strip()
        if first == "# pyproject.toml":
            (folder / "pyproject.toml").write_text(body, encoding="utf-8")
        elif first.startswith("# file: "):
            path = folder / first.removeprefix("# file: ")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")


def readme_commands(prefix: str) -> list[str]:
    """Return the section's shell command lines starting with ``prefix`` (comments dropped)."""
    found = []
    for lang, body in plugin_section():
        if lang == "bash":
            found += [ln.split("  #")[0].strip() for ln in body.splitlines()]
    return [c for c in found if c.startswith(prefix)]


def test_readme_section_every_block_is_exercised() -> None:
    """The section's blocks are the ones the tests below and tests/core/test_docs.py run."""
    blocks = plugin_section()
    langs = Counter(lang for lang, _ in blocks)
    assert langs == {"python": 4, "bash": 2, "toml": 1}, langs
    assert readme_commands("mlplug new-plugin ") and readme_commands("pytest -p mlplug.conformance")
    assert readme_commands("pip install ./ pytest")


def test_readme_tiny_plugin_installs_and_passes_its_ops(
    tmp_path: Path, venv: Any, shell: Shell
) -> None:
    """The README's pyproject.toml installs as written; its pytest command runs green; every
    F32 case of the ops tiny implements (add, mul, contiguous) passes unless it also needs an
    op tiny lacks; nothing fails."""
    work = tmp_path / "tiny"
    work.mkdir()
    write_readme_files(work)
    (install,) = readme_commands("pip install ./ ")
    venv.pip_install(*install.split()[2:], cwd=work)  # pip install ./ pytest
    (command,) = readme_commands("pytest -p mlplug.conformance")
    tested = shell([venv.python, "-m", *command.split(), "-q", "-p", "no:cacheprovider"], work)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr
    counts = pytest_counts(tested.stdout)
    assert set(counts) <= {"passed", "xfailed"}, counts

    (matrix,) = readme_commands("mlplug conformance --backend tiny")
    ran = shell([venv.bin("mlplug"), *matrix.split()[1:], "-q", "--json", "r.json"], work)
    assert ran.returncode == 0, ran.stderr
    results = json.loads((work / "r.json").read_text())["results"]
    status = {r["case"]: r["status"] for r in results}
    error = {r["case"]: r["error"] or "" for r in results}
    implemented = {"add", "mul", "contiguous"}
    f32 = [
        c.id
        for c in all_cases()
        if c.op in implemented and all(a.dtype == DType.F32 for a in c.args)
    ]
    assert len(f32) > 30
    for case in f32:  # passes, or needs an op tiny does not implement
        missing = re.match(r"tiny: (\w+) is not supported", error[case])
        assert status[case] == "pass" or (missing and missing[1] not in implemented), (
            case,
            status[case],
            error[case],
        )
    assert status["add-f32-gold1-6+2"] == status["mul-f32-tile-8x6x4x2"] == "pass"
    assert counts["passed"] == sum(1 for s in status.values() if s == "pass")


def test_readme_walk_runs_as_written(
    tmp_path: Path,
    venv: Any,
    shell: Shell,
    statuses: Callable[[str, Path], dict[str, str]],
) -> None:
    """The section's first block, run line by line in bash in an environment holding only the
    core: new-plugin, pip install, pytest (green: the starter ops pass, every other case is an
    xfail), and the conformance matrix with its to-do list."""
    from mlplug.cli._new_plugin import write_plugin

    walk = next(body for lang, body in plugin_section() if lang == "bash")
    name = re.search(r"^mlplug new-plugin (\w+)", walk, re.MULTILINE)
    assert name is not None, walk
    name_ = name[1]
    # The expected outcome: the same plugin rendered elsewhere, run by this checkout's core.
    write_plugin(name_, tmp_path / "expected")
    expected = Counter(statuses(name_, tmp_path / "expected").values())
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = str(Path(venv.python).parent)
    env = {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "VIRTUAL_ENV": str(venv.path),
        "PIP_NO_INDEX": "1",  # pip install as written, from the wheel cache
        "PIP_FIND_LINKS": str(venv.wheelhouse),
    }
    ran = shell(["bash", "-c", "set -euo pipefail\n" + walk], work, extra_env=env)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    counts = pytest_counts(ran.stdout)
    assert set(counts) <= {"passed", "xfailed"}, counts
    assert counts["xfailed"] == expected["unsupported"] > 0
    assert counts["passed"] == expected["pass"] + 1  # and the smoke test
    assert f"implement next on {name_}, by op family" in ran.stdout

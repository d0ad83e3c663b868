"""The ``docs/`` pages stay true: every Python block of every page runs on ``cpu_numpy``.

Each page's blocks run in order in one fresh interpreter (working directory: a temporary folder),
so a later block of a page may use names an earlier one defined. Links between pages must point
at pages that exist.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\((?P<target>[^)#\s]*\.md|)(?:#(?P<anchor>[^)\s]*))?\)")
HEADING = re.compile(r"^#+ (?P<title>.+)$", re.MULTILINE)

DRIVER = """
import json, sys
name = sys.argv[2]
for line, code in json.load(open(sys.argv[1])):
    exec(compile("\\n" * (line - 1) + code, name, "exec"), globals())
"""


def pages() -> list[Path]:
    """Return every Markdown page of ``docs/``, sorted by name."""
    return sorted(DOCS.glob("*.md"))


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """Return ``(first code line, code)`` of each ```` ```python ```` block of ``page``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        if m["lang"] == "python":
            found.append((text.count("\n", 0, m.start("body")) + 1, m["body"]))
    return found


def anchors(page: Path) -> set[str]:
    """Return the anchors of ``page``'s headings, as GitHub makes them (outside code blocks)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found = set()
    for m in HEADING.finditer(text):
        title = m["title"].strip().lower()
        found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def has_cpu_numpy() -> bool:
    """Whether the cpu_numpy plugin is installed."""
    try:
        import mlplug_cpu_numpy  # noqa: F401
    except ImportError:
        return False
    return True


def test_docs_folder_has_the_pages() -> None:
    """The index and one page per op family exist."""
    names = {p.name for p in pages()}
    expected = {"index.md", "tensors.md", "elementwise.md", "reduce.md", "linalg.md",
                "layout.md", "nn.md", "models-and-memory.md", "devices.md"}  # fmt: skip
    assert expected <= names


def test_every_page_is_linked_from_the_index_and_links_resolve() -> None:
    """The index lists every page; every ``.md`` link (and its ``#anchor``) of every page exists."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in pages():
        if page.name != "index.md":
            assert f"({page.name})" in index, f"index.md does not link {page.name}"
        for m in LINK.finditer(page.read_text(encoding="utf-8")):
            target = page.parent / (m["target"] or page.name)
            assert target.exists(), f"{page.name}: broken link {m['target']}"
            if m["anchor"]:
                assert m["anchor"] in anchors(target), f"{page.name}: no #{m['anchor']} there"


@pytest.mark.skipif(not has_cpu_numpy(), reason="the pages' examples run on mlplug-cpu-numpy")
@pytest.mark.parametrize("page", [p for p in pages() if python_blocks(p)], ids=lambda p: p.name)
def test_page_python_blocks_run(page: Path, tmp_path: Path) -> None:
    """Every Python block of ``page`` runs, in order, without error."""
    (tmp_path / "blocks.json").write_text(json.dumps(python_blocks(page)))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "driver.py", "blocks.json", f"docs/{page.name}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

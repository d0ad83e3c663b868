"""What the code cites is shipped: ``docs/`` pages and sections that exist, no outside documents.

A reader who follows a comment, docstring, error message or README to "docs/nn.md, section
'rope'" must find that page and that heading in this repository. Citations of documents the
project does not ship (numbered sections of a specification, design or style notes) are not
allowed anywhere in the shipped text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCANNED_DIRS = ("core", "plugins", "tests", "benchmarks")
SUFFIXES = frozenset({".py", ".md", ".txt", ".toml"})
IGNORED_DIRS = frozenset({"__pycache__", "build", "dist", "site-packages"})

#: ``docs/<page>.md``, optionally followed by ``, section '<heading text>'`` (may wrap lines).
CITATION = re.compile(r"docs/(?P<page>[\w-]+\.md)(?:,\s+section\s+'(?P<section>[^']+)')?")
HEADING = re.compile(r"^#+ (?P<title>.+)$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)

#: Ways of citing a document mlplug does not ship. Assembled from pieces so that this file does
#: not match itself.
UNSHIPPED = re.compile(
    "|".join(
        (
            r"\bDESIGN" + r"\.md\b",
            r"\bSTYLE" + r"(?:\.md\b| section)",
            r"\bthe " + r"seed\b(?! and its)",
            r"\bseed" + r"'s\b",
            r"\b[Ss]pec" + r"(?:'s)? \d",
            r"\bthe " + r"spec's\b",
            r"\bas the " + r"spec\b",
            "\u00a7",
            r"\brules? " + r"a-f\b",
            r"\bshared" + r"/spec",
        )
    )
)


def _generated(part: str) -> bool:
    """Whether a path part names a cache, build output or metadata folder rather than sources."""
    return part.startswith(".") or part.endswith(".egg-info") or part in IGNORED_DIRS


def shipped_files() -> list[Path]:
    """Return the text files a user of the repository reads: sources, tests, READMEs."""
    found = [ROOT / "README.md"]
    for top in SCANNED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if path.suffix in SUFFIXES and path.is_file() and not any(map(_generated, parts)):
                found.append(path)
    return found


def headings(page: Path) -> list[str]:
    """Return ``page``'s heading texts, lower case, backticks removed (code blocks skipped)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [m["title"].replace("`", "").strip().lower() for m in HEADING.finditer(text)]


def broken_citations(text: str) -> list[tuple[int, str]]:
    """Return ``(line, what is missing)`` for each citation of a missing page or section."""
    problems = []
    for m in CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        page = DOCS / m["page"]
        if not page.is_file():
            problems.append((line, f"docs/{m['page']} does not exist"))
        elif m["section"] is not None:
            section = " ".join(m["section"].replace("#:", " ").split()).lower()
            if not any(section in h for h in headings(page)):
                problems.append((line, f"docs/{m['page']} has no section {m['section']!r}"))
    return problems


def test_docs_citations_point_at_existing_pages_and_sections() -> None:
    """Every "docs/X.md" a file cites exists, and so does the section it names, if any."""
    problems = []
    cited = 0
    for path in shipped_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        cited += len(CITATION.findall(text))
        rel = path.relative_to(ROOT).as_posix()
        problems += [f"{rel}:{line}: {what}" for line, what in broken_citations(text)]
    assert problems == []
    assert cited >= 10  # the scan does find the citations the code makes


def test_broken_citations_are_reported() -> None:
    """A missing page and a missing section are reported; a section wrapped over lines is found."""
    text = (
        "see docs/nowhere.md\n"
        "(docs/nn.md, section 'No such heading')\n"
        "(docs/nn.md, section\n        'Pooling and\n        convolution')\n"
    )
    assert broken_citations(text) == [
        (1, "docs/nowhere.md does not exist"),
        (2, "docs/nn.md has no section 'No such heading'"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "as in the " + "seed",
        "DESIGN" + ".md's table",
        "(spec" + " 6.4 rules a-f)",
        "ops-compute " + "\u00a71.10",
        "the " + "spec's worked example",
    ],
)
def test_unshipped_pattern_recognises_citations(text: str) -> None:
    """The patterns catch the ways such citations were written."""
    assert UNSHIPPED.search(text)


@pytest.mark.parametrize(
    "text", ["draws its inputs from a seed", "the seed and its own id", "--gpu-layers SPEC"]
)
def test_unshipped_pattern_leaves_rng_seeds_and_flags_alone(text: str) -> None:
    """An RNG seed or a flag's value named SPEC is not a citation."""
    assert not UNSHIPPED.search(text)


#: Files being rewritten on other branches; their citations are fixed when those branches land.
PENDING: frozenset[str] = frozenset()


def test_no_citation_of_unshipped_documents() -> None:
    """No file cites a specification, design or style document the repository does not ship."""
    found = []
    for path in shipped_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in PENDING or path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.split("\n"), start=1):
            if UNSHIPPED.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == []

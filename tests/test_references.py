"""Every reference in the repository can be followed by someone who only has the repository.

No pointer to notes kept elsewhere, to issue numbers, or to paths of the machine the code was
written on, in any code, test, config, doc or build file; every ``docs/<page>.md`` a file names
exists; and docs/README.md lists every page of docs/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini", ".txt", ".json"}
PLAIN_NAMES = {"Makefile", "run", ".gitignore"}  # .ci/run
# What a reader outside cannot follow, by kind. (Written so that this file matches none.)
FORBIDDEN = {
    "a note kept outside the repository": re.compile(r"\bDESIGN\.md|\bSTACK[-_ ]?NOTES", re.I),
    "a section sign": re.compile("\u00a7"),
    "an issue number": re.compile(
        r"\bissues?[ \t]*[#-]?[ \t]*\d+|\(issue\b|(?<![\w/&#])#\d{1,4}\b", re.I
    ),
    "a path of the machine it was written on": re.compile(r"/work/"),
}
DOC_LINK = re.compile(r"\bdocs/([\w./-]+?\.md)\b")


def repository_files() -> Iterator[Path]:
    """Every text file of the repository (not the venv, run outputs or caches)."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in SUFFIXES or name in PLAIN_NAMES:
                yield path


def offences(text: str) -> list[str]:
    """One "<kind>: <matched text>" per forbidden reference in ``text``."""
    return [f"{kind}: {m.group(0)!r}" for kind, rx in FORBIDDEN.items() for m in rx.finditer(text)]


def test_no_reference_a_reader_cannot_follow():
    files = [p for p in repository_files() if p.resolve() != Path(__file__).resolve()]
    found = {}
    for path in files:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if hits := offences(line):
                found[f"{path.relative_to(ROOT)}:{n}"] = hits
    names = {p.relative_to(ROOT).as_posix() for p in files}
    assert {"README.md", "BENCHMARKS.md", "Makefile", "prefect.yaml", "flows/cli.py"} <= names
    assert not found, f"point to docs/ or say it in plain words instead: {found}"


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("see DESIGN.md for the format", True),
        ("what STACK-NOTES says", True),
        ("the layering (\u00a73)", True),
        ("fixed in issue 6", True),
        ("Issue 13 quality check", True),
        ("the issue-6 check", True),
        ("issues 14-18 build on it", True),
        ("as discussed (issue tracker)", True),
        ("closes #13", True),
        ("a path under /work/shared", True),
        ("colour #1f77b4, chunk ids 0-2, issue a clear error", False),
        ("see docs/pair-store.md and the design of the store", False),
    ],
)
def test_the_check_tells_references_from_plain_words(text, bad):
    assert bool(offences(text)) is bad, offences(text)


def test_every_docs_page_named_anywhere_exists():
    missing = {}
    for path in repository_files():
        for page in DOC_LINK.findall(path.read_text(errors="replace")):
            if not (DOCS / page).is_file():
                missing.setdefault(f"docs/{page}", []).append(str(path.relative_to(ROOT)))
    assert not missing, f"pages named but not in docs/: {missing}"


def test_docs_index_lists_every_page_and_only_pages_that_exist():
    index = (DOCS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w./-]+\.md)\)", index)) - {"../README.md"}
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} - {"README.md"}
    assert pages, "docs/ has no pages"
    assert pages <= linked, f"add a line for each to docs/README.md: {sorted(pages - linked)}"
    assert linked <= pages, f"docs/README.md links pages that do not exist: {linked - pages}"

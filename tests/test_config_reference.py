"""docs/configuration.md lists every field of every config section with its true default.

The sections are found by walking :class:`flows.config.PipelineConfig`'s fields: a field whose
type is a pydantic model is a section (``pairs``, ``pairs.solver``, ...). Each section's table
in the doc follows a ``<!-- config: <dotted path>[, <another path of the same model>] -->``
marker (``(top)`` for the top level). A field added to a model, renamed or given another default
fails here until its row says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from flows.config import MOVED, PipelineConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
TOP = "(top)"
MARKER = re.compile(r"<!-- config: (.+?) -->")


def sections(model: type[BaseModel] = PipelineConfig, path: str = TOP) -> Iterator[tuple]:
    """(dotted path, model class) of the top level and of every nested section."""
    yield path, model
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from sections(field.annotation, name if path == TOP else f"{path}.{name}")


def default_cell(field: Any) -> str:
    """How the doc writes a field's default: ``required``, or the YAML value in backticks
    (a section's default ``{}``: leave it out and its fields take their defaults)."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory else field.default
    if isinstance(value, BaseModel):
        return "`{}`"
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`"


def documented_tables(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{dotted path: {field: (default cell, meaning)}} of every marked table in ``text``."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        marker = MARKER.fullmatch(line.strip())
        if not marker:
            continue
        rows = {}
        for row in lines[i + 3 :]:  # after the header and separator rows
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = (cells[1], cells[2] if len(cells) > 2 else "")
        for path in marker.group(1).split(","):
            out[path.strip()] = rows
    return out


DOCUMENTED = documented_tables(DOC.read_text())
SECTIONS = list(sections())


def test_the_walk_finds_every_section():
    paths = [p for p, _ in SECTIONS]
    assert {TOP, "pairs", "pairs.solver", "reflow.train", "execution"} <= set(paths)
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize(("path", "model"), SECTIONS, ids=[p for p, _ in SECTIONS])
def test_every_field_has_a_row_with_its_default(path, model):
    assert path in DOCUMENTED, (
        f"docs/configuration.md has no table for `{path}` ({model.__name__}): add one after a "
        f"line <!-- config: {path} -->"
    )
    rows = DOCUMENTED[path]
    want = {name: default_cell(f) for name, f in model.model_fields.items()}
    missing = [f"| `{n}` | {d} | <what it does> |" for n, d in want.items() if n not in rows]
    assert not missing, f"`{path}` fields without a row; add:\n" + "\n".join(missing)
    stale = sorted(set(rows) - set(want))
    assert not stale, f"`{path}` rows for fields {model.__name__} does not have: {stale}"
    wrong = {n: (rows[n][0], d) for n, d in want.items() if rows[n][0] != d}
    assert not wrong, f"`{path}` defaults (doc, model) that differ: {wrong}"
    assert all(meaning for _, meaning in rows.values()), f"`{path}` rows without a meaning"


def test_no_table_for_a_section_that_does_not_exist():
    assert set(DOCUMENTED) <= {p for p, _ in SECTIONS}


def test_every_moved_setting_is_named():
    moved = DOC.read_text().split("## Settings that moved")[1]
    assert [old for old in MOVED if f"`{old}`" not in moved] == []


def test_the_parser_reads_a_table_as_written():
    text = "<!-- config: a, b -->\n| field | default | meaning |\n|---|---|---|\n| `x` | `1` | 1 |"
    assert documented_tables(text) == {"a": {"x": ("`1`", "1")}, "b": {"x": ("`1`", "1")}}

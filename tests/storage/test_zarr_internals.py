"""The zarr internals rectiflow relies on are all in storage.zarr_internals, and still work.

If a zarr upgrade renames, moves or changes one of them, these tests fail and say which.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from storage import zarr_internals
from storage.zarr_internals import ZarrInternalsError, chunk_key, gather, read_rows

ROOT = Path(__file__).resolve().parents[2]
# Private zarr names: using one anywhere but storage/zarr_internals.py spreads the risk again.
PRIVATE = {"_get_selection", "BasicIndexer", "NDBuffer", "default_buffer_prototype", "sync"}


def test_each_internal_has_the_name_and_parameters_used():
    zarr_internals.check_internals()
    assert set(zarr_internals.REQUIRED) == {
        "zarr.AsyncArray._get_selection",
        "zarr.core.indexing.BasicIndexer",
        "zarr.core.sync.sync",
        "NDBuffer.from_numpy_array",
        "ArrayV3Metadata.encode_chunk_key",
    }


def _array() -> tuple[zarr.Array, np.ndarray]:
    """A (10, 3) float32 array in memory, chunks of 4 rows, crc32c-checked like a pair store's."""
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    a = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(10, 3), chunks=(4, 3), dtype="float32",
        compressors=[Crc32cCodec()],
    )  # fmt: skip
    a[:] = values
    return a, values


@pytest.mark.parametrize(("start", "stop"), [(4, 8), (2, 7), (8, 10)])
def test_rows_read_into_a_buffer_are_the_array_values(start, stop):
    a, values = _array()
    out = np.full((stop - start, 3), np.nan, np.float32)
    result = gather(read_rows(a, start, stop, out))
    assert len(result) == 1
    assert out.tobytes() == values[start:stop].tobytes()


def test_chunk_keys_name_the_objects_zarr_wrote():
    a, _ = _array()
    assert chunk_key(a, (1, 0)) == "c/1/0"
    assert gather(a.store.exists(chunk_key(a, (2, 0))), a.store.exists("c/3/0")) == [True, False]


def test_gather_returns_failures_when_asked_and_raises_otherwise():
    async def fail():
        raise OSError("boom")

    async def one():
        return 1

    got = gather(one(), fail(), settled=True)
    assert got[0] == 1 and isinstance(got[1], OSError)
    with pytest.raises(OSError, match="boom"):
        gather(one(), fail())


def test_a_missing_or_changed_internal_is_named_with_the_zarr_version(monkeypatch):
    monkeypatch.setitem(zarr_internals.REQUIRED, "gone", (zarr.AsyncArray, "_no_such", {"x"}))
    with pytest.raises(
        ZarrInternalsError, match=rf"zarr {zarr.__version__} changed .*gone is gone"
    ):
        zarr_internals.check_internals()
    changed = (zarr.AsyncArray, "_get_selection", {"indexer", "selection_v2"})
    monkeypatch.setitem(zarr_internals.REQUIRED, "gone", changed)
    with pytest.raises(ZarrInternalsError, match=r"lacks parameters \['selection_v2'\]"):
        zarr_internals.check_internals()


def test_an_internal_gone_in_an_upgrade_fails_the_import_naming_it():
    # What an upgrade that drops BasicIndexer looks like to rectiflow (simulated in a child).
    code = "import zarr.core.indexing as ix; del ix.BasicIndexer\nimport storage.zarr_internals\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert f"zarr {zarr.__version__} changed an internal rectiflow uses" in proc.stderr
    assert "BasicIndexer" in proc.stderr and "zarr==3.1.6" in proc.stderr


def _private_uses(path: Path) -> set[str]:
    """zarr.core imports and private zarr names used in one source file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zarr.core"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zarr.core")}
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE | {"metadata"}:
            found.add(node.attr)
    return found


def test_no_other_module_uses_zarr_internals():
    files = [
        f for p in ("storage", "tasks", "flows", "benchmarks") for f in (ROOT / p).rglob("*.py")
    ]
    used = {str(f.relative_to(ROOT)): _private_uses(f) for f in files}
    assert used["storage/zarr_internals.py"]  # the check sees them where they are
    del used["storage/zarr_internals.py"]
    assert not {f: u for f, u in used.items() if u}

"""The layering of docs/architecture.md, checked on the source with ast (no imports executed).

flows -> tasks -> storage -> rf_core: rf_core never imports prefect, mlflow or zarr; storage never
imports prefect, tasks or flows; tasks never import flows. Only the storage.tracking package
imports mlflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "rf_core": {"prefect", "mlflow", "zarr", "tasks", "flows", "storage"},
    "storage": {"prefect", "tasks", "flows"},
    "tasks": {"flows"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in a file (relative imports resolve to its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(path.parent.name if node.level else (node.module or "").split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_the_layering(package):
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "rf_core":
        assert files, "rf_core has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files
    }
    assert not {f: b for f, b in bad.items() if b}, f"{package} breaks the layering: {bad}"


def test_only_the_tracking_package_imports_mlflow():
    files = [
        f
        for package in ("rf_core", "storage", "tasks", "flows")
        for f in (ROOT / package).rglob("*.py")
    ]
    tracking = ROOT / "storage" / "tracking"
    importers = {f.relative_to(ROOT) for f in files if "mlflow" in imported_packages(f)}
    assert importers, "nothing imports mlflow: the check would pass vacuously"
    outside = sorted(str(f) for f in importers if tracking not in (ROOT / f).parents)
    assert not outside, f"only storage/tracking/ may import mlflow, not {outside}"


def test_the_checker_sees_nested_and_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import mlflow.pytorch\n    from zarr.codecs import X\n")
    assert imported_packages(src) == {"mlflow", "zarr"}

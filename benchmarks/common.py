"""Helpers shared by the benchmarks: machine description, memory, timing, markdown sections.

Timings on a shared machine are noisy, so the benchmarks compare settings measured in the same
process, interleaved (A, B, A, B, ...) and summarised by the median.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
# The `make run` pipeline config: the benchmarks measure its model and its pair solver.
PIPELINE_CONFIG = ROOT / "configs" / "mnist5k.yaml"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: str | torch.device) -> str:
    """A human name for ``device``: the GPU model for CUDA, the CPU model otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def machine_line(device: str | torch.device = "cpu") -> str:
    """One line describing where a table was measured (nproc, CPU/GPU model, torch, threads)."""
    return (
        f"nproc={os.cpu_count()}, device={torch.device(device).type} ({device_name(device)}), "
        f"torch {torch.__version__}, torch threads={torch.get_num_threads()}, "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are real (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[float, Any]:
    """Run ``fn()`` once; return (seconds, result), synchronising the device around it."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interleave(
    fns: dict[str, Callable[[], Any]], rounds: int, device: str | torch.device = "cpu"
) -> dict[str, list[float]]:
    """Time every ``fns[name]()`` ``rounds`` times in the order A, B, A, B, ...

    Interleaving spreads slow phases of a shared machine over all settings alike.

    Returns:
        name -> list of seconds, one per round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[0])
    return times


def median(xs: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(xs))


def fmt(v: Any) -> str:
    """Format a table cell: 3 significant digits for floats, '—' for None."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
            return f"{v:.2e}"
        return f"{v:.3g}"
    return str(v)


def markdown_table(rows: Sequence[Any], columns: Sequence[str] | None = None) -> str:
    """Render dataclasses or dicts as a markdown table (columns default to the first row's keys)."""
    dicts = [asdict(r) if is_dataclass(r) else dict(r) for r in rows]
    if columns is None:
        columns = [f.name for f in fields(rows[0])] if is_dataclass(rows[0]) else list(dicts[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(d.get(c)) for c in columns) + " |" for d in dicts]
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``.

    A missing section is appended at the end, so other sections are never touched.

    Raises:
        ValueError: the markers are unbalanced (a start without an end, or twice).
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    n_start, n_end = text.count(start), text.count(end)
    block = f"{start}\n{body.strip()}\n{end}"
    if n_start == n_end == 0:
        return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
    if n_start != 1 or n_end != 1 or text.index(start) > text.index(end):
        raise ValueError(
            f"BENCHMARKS.md: section {name!r} needs exactly one {start} before one {end}; "
            f"found {n_start} start and {n_end} end markers — fix the file by hand"
        )
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    return pattern.sub(lambda _: block, text, count=1)


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Rewrite one marked section of ``path`` in place (creating the file when absent)."""
    text = path.read_text() if path.exists() else "# rectiflow benchmarks\n"
    path.write_text(replace_section(text, name, body))


def publish(
    name: str, body: str, write: bool, path: str | Path = BENCHMARKS_MD, notes: str | None = None
) -> str:
    """Print a benchmark's section (with the hand-written ``notes`` file appended, if any) and
    rewrite it in ``path`` when ``write``; returns the body."""
    if notes:
        body += "\n\n" + Path(notes).read_text().strip()
    print(body)
    if write:
        write_section(name, body, Path(path))
    return body


# The NFE columns of the MNIST recipe and ablation tables.
NFES = (1, 2, 4, 8)


def mean_spread(values: list[float]) -> str:
    """``"mean ± half-range"`` of replicate values (the mean alone for one value)."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {(max(values) - min(values)) / 2:.2g}"

"""Real generation processes: killed with SIGKILL and resumed, and several writing at once.

Every process is ``python -m storage.generate_cli`` on a real store on disk; each chunk is real
work (rk4, 120 steps: 480 model evaluations), so a kill lands inside a solve or a write.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rf_core.training import checkpoint_sha256
from storage.pairstore import PairStore, PairStoreError
from tests.storage.storekit import REPO, assert_same_store, read_all, run_py, tree_hash

RECIPE = [
    "--n",
    "192",
    "--chunk",
    "16",
    "--seed",
    "5",
    "--method",
    "rk4",
    "--steps",
    "120",
    "--dataset",
    "toy",
]
N_CHUNKS = 12


def gen_args(store: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["-m", "storage.generate_cli", str(store), "--checkpoint", str(ckpt), *RECIPE, *extra]


def start(store: Path, ckpt: Path, *extra: str) -> subprocess.Popen:
    return spawn(gen_args(store, ckpt, *extra))


def spawn(python_args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, *python_args]
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def done_count(store: Path) -> int:
    try:
        return int(PairStore.open(str(store)).done_mask().sum())
    except PairStoreError:  # not created yet, or attrs not written yet
        return 0


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ckpt) -> Path:
    """The store one uninterrupted process writes."""
    ref = tmp_path_factory.mktemp("ref") / "ref.zarr"
    proc = run_py(*gen_args(ref, ckpt, "--finalize"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "finalized: digest" in proc.stdout
    return ref


@pytest.mark.slow
def test_kill_9_three_times_then_resume_is_bit_identical(tmp_path, ckpt, reference):
    store = tmp_path / "killed.zarr"
    rng = random.Random()
    kills = []
    while len(kills) < 3:
        before = done_count(store)
        proc = start(store, ckpt)
        deadline = time.monotonic() + 120
        # Wait for at least one new done marker, then kill at a random point of later work.
        while done_count(store) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.25))
        assert proc.poll() is None, "generation finished before it could be killed"
        proc.kill()  # SIGKILL: no cleanup, no atexit, writes cut wherever they are
        proc.wait()
        kills.append(done_count(store))
    assert kills[0] < kills[1] < kills[2] < N_CHUNKS, kills  # progress kept across kills
    out = finish(start(store, ckpt, "--finalize"))
    assert f"skipped {kills[-1]}" in out and "finalized: digest" in out
    assert_same_store(reference, store)
    # No chunk missing or duplicated: every sample's noise appears exactly once, in place.
    arrays = read_all(store)
    assert arrays["done"].all() and len({bytes(r) for r in arrays["x0"]}) == 192


@pytest.mark.slow
def test_two_processes_on_disjoint_and_on_the_same_chunks(tmp_path, ckpt, reference):
    disjoint, racing = tmp_path / "disjoint.zarr", tmp_path / "racing.zarr"
    # Four writers at once: two split the chunks of one store, two race over all chunks of
    # another (both racers also race to create their store).
    procs = [
        start(disjoint, ckpt, "--chunks", "0-5"),
        start(disjoint, ckpt, "--chunks", "6-11"),
        start(racing, ckpt),
        start(racing, ckpt),
    ]
    outs = [finish(p) for p in procs]
    assert "generated 6 chunks" in outs[0] and "generated 6 chunks" in outs[1]
    done = [int(o.split("generated ")[1].split()[0]) for o in outs[2:]]
    assert sum(done) >= N_CHUNKS  # racers may both do a chunk; both results are identical
    for store in (disjoint, racing):
        PairStore.open(str(store), mode="r+").finalize()  # the coordinator
        assert_same_store(reference, store)


@pytest.mark.slow
def test_resume_with_another_checkpoint_is_refused(tmp_path, ckpt, other_ckpt):
    store = tmp_path / "p.zarr"
    proc = run_py(*gen_args(store, ckpt, "--chunks", "0"))
    assert proc.returncode == 0, proc.stderr
    before = tree_hash(store)
    proc = run_py(*gen_args(store, other_ckpt))
    assert proc.returncode == 1 and "cannot resume" in proc.stderr
    for sha in (checkpoint_sha256(ckpt), checkpoint_sha256(other_ckpt)):  # both sides named
        assert sha in proc.stderr
    assert tree_hash(store) == before


AUTO_FLAGS = ["--method", "auto", "--tolerance", "1e-3", "--probe", "16"]


def auto_args(store: Path, ckpt: Path, *extra: str) -> list[str]:
    """The worker CLI with RECIPE's store, its solver left to a screen."""
    args = gen_args(store, ckpt, *extra)
    at = args.index("--method")
    return [*args[:at], *args[at + 4 :], *AUTO_FLAGS]


@pytest.mark.slow
def test_writers_of_an_auto_store_read_its_choice_and_never_screen(tmp_path, ckpt):
    store = tmp_path / "auto.zarr"
    creator = run_py(*auto_args(store, ckpt, "--chunks", "0"), timeout=300)
    assert creator.returncode == 0, creator.stdout + creator.stderr
    assert creator.stdout.count("screening pair solvers") == 1
    writers = [spawn(auto_args(store, ckpt, "--chunks", c)) for c in ("1-5", "6-11")]
    outs = [finish(w) for w in writers]
    assert "generated 5 chunks" in outs[0] and "generated 6 chunks" in outs[1]
    assert not any("screening" in out for out in outs), outs
    digest = PairStore.open(str(store), mode="r+").finalize()
    # The same store made in one process with the chosen recipe pinned: the same bytes.
    chosen = PairStore.open(str(store)).solver
    pinned = ["--method", chosen.method, "--steps", str(chosen.steps), "--grid", chosen.grid]
    pinned += ["--rho", str(chosen.rho)] if chosen.grid != "uniform" else []
    args = gen_args(tmp_path / "pinned.zarr", ckpt, "--finalize")
    at = args.index("--method")
    proc = run_py(*args[:at], *args[at + 4 :], *pinned, timeout=300)
    assert proc.returncode == 0 and f"finalized: digest {digest}" in proc.stdout, proc.stdout
    assert_same_store(tmp_path / "pinned.zarr", store)

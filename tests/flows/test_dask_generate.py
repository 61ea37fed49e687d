"""generate_pairs on Dask (execution.task_runner: dask): real LocalClusters of worker processes,
real Zarr stores, the real Prefect engine. The thread runner's store is the reference."""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from pathlib import Path

import dask
import mlflow
import numpy as np
import psutil
import pytest
import zarr
from distributed import Client, LocalCluster

from flows.config import load_config
from flows.dask_runner import local_cluster, plan_dask
from flows.generate import generate_pairs, open_store
from flows.inputs import generate_inputs
from storage.generate import generate_chunks
from storage.pairstore import PairStore
from tasks.generate import load_source_model
from tests.helpers import make_runs_dir, tiny_config_dict
from tests.procs import free_port

ARRAYS = ("x0", "x1", "y", "done", "nfe")


def _cfg(runs: Path, **overrides):
    return load_config(tiny_config_dict(runs, **{"execution.task_runner": "dask", **overrides}))


def _children() -> set[int]:
    """Our child processes, less multiprocessing's resource tracker (it lives as long as we do)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:  # exited meanwhile (or a zombie about to be reaped)
            pass
    return out


def _files(uri: str) -> dict[str, bytes]:
    """Every stored object of the chunk arrays (compressed chunks + array metadata), by path.

    ``*.partial`` files are left out: a write interrupted by SIGKILL may leave its temp file
    (Zarr writes temp + rename); Zarr never reads them.
    """
    root = Path(uri)
    return {
        str(f.relative_to(root)): f.read_bytes()
        for name in ARRAYS
        for f in sorted((root / name).rglob("*"))
        if f.is_file() and not f.name.endswith(".partial")
    }


def _assert_same_store(uri: str, ref_uri: str, ref_digest: str) -> None:
    store = PairStore.open(uri)
    assert store.is_finalized and store.attrs["digest"] == ref_digest
    assert store.missing_chunks() == []
    got, want = _files(uri), _files(ref_uri)
    assert sorted(got) == sorted(want)  # no chunk missing or extra
    assert [k for k in want if got[k] != want[k]] == []  # byte for byte
    a, b = zarr.open_group(uri, mode="r"), zarr.open_group(ref_uri, mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(a[name][:], b[name][:])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from rf_core.config import ModelConfig
    from rf_core.models import build_model
    from rf_core.training import save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, extra={"k": 1})


@pytest.fixture(scope="module")
def reference(prefect_api, mlflow_template, tmp_path_factory, checkpoint) -> dict:
    """The store the default thread runner builds (one shard per device, here one CPU)."""
    runs = make_runs_dir(tmp_path_factory.mktemp("ref"), mlflow_template)
    cfg = load_config(tiny_config_dict(runs))
    return generate_pairs(cfg, model=str(checkpoint), store=str(runs / "ref.zarr"))


@pytest.fixture
def cluster() -> tuple[LocalCluster, Client]:
    """A cluster the test controls: 2 worker processes with 1 thread each."""
    before = _children()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0",
        ) as c,
        Client(c, set_as_default=False) as client,
    ):  # fmt: skip
        # Import the shard task's modules everywhere first: on a loaded machine the imports
        # would otherwise start the two workers' shards many seconds apart.
        client.run(importlib.import_module, "tasks.generate")
        yield c, client
    _wait_gone(before)


def _wait_gone(before: set[int], timeout: float = 60.0) -> None:
    """Worker processes exit asynchronously after close: wait for them, then check none is left."""
    deadline = time.monotonic() + timeout
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _children() - before == set(), "processes left behind"


def test_dask_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"execution\.dask_address: String should match"):
        _cfg(tmp_path, **{"execution.dask_address": "10.0.0.5"})
    with pytest.raises(ValueError, match=r"execution: .*dask_address is set but task_runner"):
        load_config(tiny_config_dict(tmp_path, **{"execution.dask_address": "tcp://h:8786"}))
    with pytest.raises(ValueError, match=r"execution\.task_runner: Input should be 'thread' or"):
        _cfg(tmp_path, **{"execution.task_runner": "ray"})
    cfg = _cfg(tmp_path, **{"execution.dask_address": "tcp://[::1]:8786"})
    assert (cfg.execution.dask_workers, cfg.execution.dask_shards_per_worker) == (2, 4)


def test_local_gpu_plan_pins_one_gpu_per_worker(tmp_path):
    """The GPU wiring without a GPU: one worker per CUDA device, each seeing only its own and
    advertising GPU=1; GPU-annotated work runs there, and an existing cluster of such workers
    is recognised as a GPU cluster through its address."""
    gpu_cfg = _cfg(tmp_path, **{"execution.devices": ["cuda:0", "cuda:1"]})
    plan = plan_dask(gpu_cfg)
    assert (plan.n_workers, plan.device, plan.resources) == (2, "cuda", {"GPU": 1})
    assert plan.runner.cluster_kwargs == {"n_workers": 2, "gpus": ["0", "1"]}
    cpu = plan_dask(_cfg(tmp_path, **{"execution.dask_workers": 3}))
    assert (cpu.n_workers, cpu.device, cpu.resources) == (3, "cpu", {})
    before = _children()
    with local_cluster(2, ["0", "1"]) as c, Client(c, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
        assert set(client.run(os.getenv, "CUDA_VISIBLE_DEVICES").values()) == {"0", "1"}
        with dask.annotate(resources={"GPU": 1}):
            futs = [client.submit(os.getenv, "CUDA_VISIBLE_DEVICES", pure=False) for _ in "abcd"]
        assert set(client.gather(futs)) <= {"0", "1"}
        remote = plan_dask(_cfg(tmp_path, **{"execution.dask_address": c.scheduler_address}))
        assert (remote.n_workers, remote.device, remote.resources) == (2, "cuda", {"GPU": 1})
        assert remote.local
    _wait_gone(before)


def test_unreachable_address_fails_fast_and_writes_nothing(prefect_api, runs_dir, checkpoint):
    # A store with 2 of 8 chunks done, as a crashed run leaves it.
    uri = str(runs_dir / "partial.zarr")
    cfg = _cfg(runs_dir, **{"execution.dask_address": f"tcp://127.0.0.1:{free_port()}",
                            "execution.dask_timeout_s": 2})  # fmt: skip
    store = open_store(cfg, generate_inputs(cfg, str(checkpoint), uri))
    generate_chunks(
        load_source_model(store, str(checkpoint), "cpu"), PairStore.open(uri, "r+"), [0, 5]
    )
    before = {p: p.stat().st_mtime_ns for p in Path(uri).rglob("*")}
    unreachable = (
        r"(?s)^execution\.dask_address: no Dask scheduler answered at tcp://127\.0\.0\.1:\d+ "
        r"within 2 s .*Nothing was written"
    )
    with pytest.raises(ValueError, match=unreachable):
        generate_pairs(cfg, model=str(checkpoint), store=uri)
    assert {p: p.stat().st_mtime_ns for p in Path(uri).rglob("*")} == before
    assert PairStore.open(uri).missing_chunks() == [1, 2, 3, 4, 6, 7]
    db = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    assert [e.name for e in db.search_experiments()] == ["Default"]  # no MLflow run either


def test_scheduler_without_workers_is_refused(tmp_path):
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0") as c:
        cfg = _cfg(tmp_path, **{"execution.dask_address": c.scheduler_address})
        with pytest.raises(ValueError, match=r"^execution\.dask_address: .* has no workers"):
            plan_dask(cfg)


def test_wrong_checkpoint_on_a_worker_is_refused(tmp_path, checkpoint):
    cfg = _cfg(tmp_path)
    store = open_store(cfg, generate_inputs(cfg, str(checkpoint), str(tmp_path / "s.zarr")))
    other = tmp_path / "other.pt"
    other.write_bytes(checkpoint.read_bytes() + b"x")
    with pytest.raises(ValueError, match=r"on host .* is not the store's source model"):
        load_source_model(store, str(other), "cpu")
    with pytest.raises(FileNotFoundError, match=r"does not exist on host .*shared filesystem"):
        load_source_model(store, str(tmp_path / "missing.pt"), "cpu")


@pytest.mark.slow
def test_local_cluster_store_is_bit_identical_to_threads(
    prefect_api, runs_dir, checkpoint, reference
):
    before = _children()
    res = generate_pairs(_cfg(runs_dir), model=str(checkpoint), store=str(runs_dir / "d.zarr"))
    _assert_same_store(res.uri, reference.uri, reference.digest)
    # 2 workers x 4 shards each over 8 chunks: one chunk per shard, run in 2 worker processes.
    assert [s.state for s in res.shards] == ["Completed"] * 8
    pids = {s.result.pid for s in res.shards}
    assert len(pids) == 2 and os.getpid() not in pids
    _wait_gone(before)  # the flow's LocalCluster is closed with its sub-flow


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_killed_worker_shards_are_redone(prefect_api, runs_dir, checkpoint, reference, cluster):
    c, client = cluster
    uri = str(runs_dir / "k.zarr")
    # One shard per worker: shard 0 = even chunks, shard 1 = odd chunks, 1.5 s per chunk.
    cfg = _cfg(runs_dir, **{
        "execution.dask_address": c.scheduler_address, "execution.dask_shards_per_worker": 1,
        "execution.progress_every": 1, "testing.chunk_delay_s": 1.5,
    })  # fmt: skip
    killed: dict = {}
    finished = threading.Event()

    def done_mask() -> np.ndarray:
        try:
            return PairStore.open(uri).done_mask()
        except Exception:  # not created yet
            return np.zeros(8, dtype=bool)

    def kill_a_busy_worker() -> None:
        # Once both shards have written a chunk, SIGKILL a worker in the middle of its shard.
        while not killed and not finished.is_set():
            busy = [w for w, keys in client.processing().items() if keys]
            done = done_mask()
            if len(busy) == 2 and done[0::2].any() and done[1::2].any() and not done.all():
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                killed.update(pid=pid, done=int(done.sum()))
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    try:
        res = generate_pairs(cfg, model=str(checkpoint), store=uri)
    finally:
        finished.set()
        killer.join(timeout=30)
    assert killed and 2 <= killed["done"] < 8, "no worker was killed mid-shard"
    assert _dead(killed["pid"])
    assert [s.state for s in res.shards] == ["Completed"] * 2
    rows = [s.result for s in res.shards]
    assert killed["pid"] not in {r.pid for r in rows}  # its shard was finished elsewhere
    # The redone shard skipped the chunks the killed attempt had marked done, and generated the
    # rest: every chunk is accounted for exactly once.
    assert sum(r.skipped for r in rows) >= 1
    assert sum(r.generated + r.skipped for r in rows) == 8
    _assert_same_store(uri, reference.uri, reference.digest)

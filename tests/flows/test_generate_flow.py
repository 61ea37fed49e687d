"""generate_pairs on the real Prefect engine: shard retries, failures naming the shard, resume."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from flows.config import load_config
from flows.generate import generate_pairs
from storage import tracking
from storage.pairstore import PairStore
from tests.helpers import tiny_config_dict


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """Two real checkpoints of the tiny config's MLP (different weights); no training needed."""
    import torch

    from rf_core.config import ModelConfig
    from rf_core.models import build_model
    from rf_core.training import save_checkpoint

    folder = tmp_path_factory.mktemp("ckpts")
    cfg = ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(folder / f"m{seed}.pt", build_model(cfg), extra={"k": 1}))
    return paths[0], paths[1]


def _cfg(runs: Path, **overrides):
    return load_config(tiny_config_dict(runs, **overrides))


def _gen_runs(experiment: str = "tiny") -> list:
    exp = mlflow.get_experiment_by_name(experiment)
    runs = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{tracking.TAG_STAGE}` = 'generate_pairs'",
        output_format="list",
    )
    return sorted(runs, key=lambda r: r.info.start_time)


def test_transient_shard_failure_is_retried(prefect_api, runs_dir, checkpoints):
    # Two shards; shard 1 fails on its first attempt after writing one chunk group.
    cfg = _cfg(runs_dir, **{"execution.devices": ["cpu", "cpu"], "testing.fail_shards": {1: 1}})
    res = generate_pairs(cfg, model=str(checkpoints[0]), store=str(runs_dir / "a.zarr"))
    store = PairStore.open(res.uri)
    assert store.is_finalized and store.attrs["digest"] == res.digest
    shard0, shard1 = (s.result for s in res.shards)
    assert (shard0.attempt, shard0.generated) == (1, 4)
    # The retry skipped the group (progress_every=2 chunks) written before the failure.
    assert (shard1.attempt, shard1.generated, shard1.skipped) == (2, 2, 2)
    (run,) = _gen_runs()
    assert run.info.status == "FINISHED"
    assert run.data.metrics["chunks_generated"] == 6


def test_permanent_shard_failure_fails_flow_then_rerun_completes(
    prefect_api, runs_dir, checkpoints
):
    uri = str(runs_dir / "b.zarr")
    faulty = _cfg(
        runs_dir,
        **{
            "execution.devices": ["cpu", "cpu"],
            "testing.fail_shards": {0: 5},
            "execution.retries": 1,
        },
    )
    with pytest.raises(RuntimeError, match=r"shard 0 \(chunks 0, 2, 4, 6\).*InjectedFailure"):
        generate_pairs(faulty, model=str(checkpoints[0]), store=uri)
    store = PairStore.open(uri)
    done_before = set(range(store.n_chunks)) - set(store.missing_chunks())
    # Shard 1 finished; shard 0 kept the group it wrote before failing on each attempt.
    assert {1, 3, 5, 7} <= done_before and len(done_before) < store.n_chunks
    assert not store.is_finalized
    assert _gen_runs()[-1].info.status == "FAILED"

    res = generate_pairs(_cfg(runs_dir), model=str(checkpoints[0]), store=uri)
    assert res.generated == store.n_chunks - len(done_before)
    assert PairStore.open(uri).is_finalized
    # Same model, solver and seed: the resumed store equals one generated in one go.
    ref = generate_pairs(_cfg(runs_dir), model=str(checkpoints[0]), store=str(runs_dir / "c.zarr"))
    assert ref.digest == res.digest


def test_store_from_another_model_is_refused_before_work(prefect_api, runs_dir, checkpoints):
    uri = str(runs_dir / "d.zarr")
    generate_pairs(_cfg(runs_dir), model=str(checkpoints[0]), store=uri)
    before = {p: p.stat().st_mtime_ns for p in Path(uri).rglob("*") if p.is_file()}
    n_runs = len(_gen_runs())
    with pytest.raises(ValueError, match=r"^store: .*generated from model .*not from model"):
        generate_pairs(_cfg(runs_dir), model=str(checkpoints[1]), store=uri)
    after = {p: p.stat().st_mtime_ns for p in Path(uri).rglob("*") if p.is_file()}
    assert after == before
    assert len(_gen_runs()) == n_runs  # no MLflow run started


def test_other_solver_on_existing_store_is_refused(prefect_api, runs_dir, checkpoints):
    uri = str(runs_dir / "e.zarr")
    generate_pairs(_cfg(runs_dir), model=str(checkpoints[0]), store=uri)
    other = _cfg(runs_dir, **{"pairs.solver": {"method": "euler", "steps": 4}})
    with pytest.raises(ValueError, match=r"^store: cannot resume .*solver"):
        generate_pairs(other, model=str(checkpoints[0]), store=uri)


@pytest.mark.parametrize(
    "model",
    ["models:/m-0123456789abcdef", "models:/tiny-1rf/7", "m-nope", "missing/ckpt.pt"],
)
def test_unknown_model_fails_naming_field(prefect_api, runs_dir, model):
    with pytest.raises(ValueError, match=r"^model: "):
        generate_pairs(_cfg(runs_dir), model=model, store=str(runs_dir / "f.zarr"))
    assert not (runs_dir / "f.zarr").exists()


@pytest.mark.slow  # compiles the MLP (tens of seconds on a busy 2-core machine)
def test_compiled_solver_through_the_flow_matches_eager(prefect_api, runs_dir, checkpoints):
    rk4 = {"method": "rk4", "steps": 8}
    eager = _cfg(runs_dir, **{"pairs.solver": rk4})
    compiled = _cfg(runs_dir, **{"pairs.solver": {**rk4, "compile": True}})
    a = generate_pairs(eager, model=str(checkpoints[0]), store=str(runs_dir / "eager.zarr"))
    b = generate_pairs(compiled, model=str(checkpoints[0]), store=str(runs_dir / "comp.zarr"))
    sa, sb = PairStore.open(a.uri), PairStore.open(b.uri)
    assert sb.is_finalized and sb.solver.compile is True and sa.solver.compile is False
    for i in range(sa.n_chunks):
        (x0a, x1a, ya), (x0b, x1b, yb) = sa.read_chunk(i), sb.read_chunk(i)
        assert (x0a == x0b).all() and (ya == yb).all()
        np.testing.assert_allclose(x1b, x1a, rtol=1e-4, atol=1e-5)
    # The compiled store resumes only as compiled (its digest covers the solver).
    with pytest.raises(ValueError, match=r"^store: cannot resume .*'compile': True"):
        generate_pairs(eager, model=str(checkpoints[0]), store=b.uri)

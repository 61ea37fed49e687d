"""End-to-end: the real pipeline flow on a tiny toy config, then MLflow lineage queried back."""

from __future__ import annotations

import mlflow
import pytest
import torch
from prefect.client.orchestration import get_client

from flows.config import load_config
from flows.pipeline import pipeline
from storage import tracking
from storage.pairstore import PairStore
from tests.helpers import make_runs_dir, tiny_config_dict


def _stage_runs(experiment_id: str) -> dict[str, list]:
    runs = mlflow.search_runs([experiment_id], output_format="list")
    out: dict[str, list] = {}
    for r in (mlflow.get_run(r.info.run_id) for r in runs):  # with model inputs
        out.setdefault(r.data.tags.get(tracking.TAG_STAGE), []).append(r)
    return out


def _inputs(run, context: str):
    return [
        d
        for d in run.inputs.dataset_inputs
        if any(t.key == "mlflow.data.context" and t.value == context for t in d.tags)
    ]


@pytest.fixture(scope="module")
def pipeline_result(prefect_api, mlflow_template, tmp_path_factory):
    runs = make_runs_dir(tmp_path_factory.mktemp("pipeline"), mlflow_template)
    cfg = load_config(tiny_config_dict(runs))
    return cfg, pipeline(cfg)


def test_pipeline_records_lineage_in_mlflow(pipeline_result):
    cfg, result = pipeline_result
    runs_dir = cfg.runs
    base, reflow = result.models
    assert (base.k, reflow.k) == (1, 2)
    assert base.registered == "tiny-1rf/1" and reflow.registered == "tiny-2rf/1"
    (pairs,) = result.stores
    store = PairStore.open(pairs.uri)
    assert store.is_finalized and store.attrs["digest"] == pairs.digest
    # The store names its producing model and run; its checkpoint path is loadable.
    base_lm = mlflow.get_logged_model(base.model_id)
    assert store.source["model_id"] == base.model_id
    assert store.source["run_id"] == base_lm.source_run_id
    assert store.source["model_uri"] == tracking.checkpoint_path(base.model_id)

    stages = _stage_runs(result.experiment_id)
    (parent,) = stages["pipeline"]
    for name in ("train_base", "generate_pairs", "train_reflow", "evaluate"):
        (run,) = stages[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags[tracking.TAG_FLOW_RUN]  # links back to the Prefect flow run
        assert run.info.status == "FINISHED"

    gen = stages["generate_pairs"][0]
    assert [m.model_id for m in gen.inputs.model_inputs] == [base.model_id]
    (generated,) = _inputs(gen, "generated")
    assert generated.dataset.digest == pairs.digest[:32]
    assert {t.key: t.value for t in generated.tags}["rectiflow.digest"] == pairs.digest
    assert pairs.uri in generated.dataset.source

    rf = stages["train_reflow"][0]
    (training,) = _inputs(rf, "training")
    assert training.dataset.digest == generated.dataset.digest
    assert [m.model_id for m in rf.inputs.model_inputs] == [base.model_id]
    assert [m.model_id for m in rf.outputs.model_outputs] == [reflow.model_id]

    # Evaluation metrics are attached to each model, and per model they differ.
    m2 = tracking.model_metrics(reflow.model_id)
    m1 = tracking.model_metrics(base.model_id)
    assert {"swd/euler_1", "swd/euler_2", "straightness"} <= set(m2)
    assert m1["straightness"] != m2["straightness"]
    ev = stages["evaluate"][0]
    assert {m.model_id for m in ev.inputs.model_inputs} == {base.model_id, reflow.model_id}

    # Query helpers answer both directions.
    assert [p.digest for p in tracking.pair_sets_from_model(base.model_id)] == [
        generated.dataset.digest
    ]
    assert tracking.models_trained_on(pairs.digest) == [reflow.model_id]
    assert tracking.pair_set_source(pairs.digest) == base.model_id

    # Artifacts land under the runs folder with absolute paths, never ./mlruns.
    exp = mlflow.get_experiment(result.experiment_id)
    assert exp.artifact_location == (runs_dir / "mlartifacts" / "tiny").as_uri()
    assert tracking.checkpoint_path(reflow.model_id).startswith(str(runs_dir))


async def _artifacts_of(flow_run_id: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        return await client.read_artifacts(artifact_filter=flt)


def test_pipeline_reports_progress_artifacts(pipeline_result):
    import asyncio

    _, result = pipeline_result
    gen = _stage_runs(result.experiment_id)["generate_pairs"][0]
    artifacts = asyncio.run(_artifacts_of(gen.data.tags[tracking.TAG_FLOW_RUN]))
    by_key = {a.key: a for a in artifacts}
    assert by_key["generate-tiny"].type == "progress"
    assert by_key["generate-tiny"].data == pytest.approx(100.0)
    assert gen.info.run_id in by_key["mlflow-generate-pairs"].data  # link to the MLflow run
    table = by_key["shards-tiny"]
    assert table.type == "table" and '"state": "Completed"' in table.data


def test_second_run_reuses_finished_stages(pipeline_result):
    cfg, first = pipeline_result
    again = pipeline(cfg)
    assert [m.model_id for m in again.models] == [m.model_id for m in first.models]
    assert again.stores[0].digest == first.stores[0].digest
    assert again.stores[0].generated == 0
    stages = _stage_runs(first.experiment_id)
    assert len(stages["train_base"]) == 1 and len(stages["train_reflow"]) == 1
    assert len(stages["pipeline"]) == 2


def test_other_execution_settings_reuse_every_stage(pipeline_result):
    """Where and how work runs is not what it produces: nothing is retrained or regenerated."""
    cfg, first = pipeline_result
    data = cfg.model_dump(mode="json")
    data["execution"] |= {"devices": ["cpu", "cpu"], "retries": 0, "progress_every": 1}
    again = pipeline(load_config(data))
    assert [m.model_id for m in again.models] == [m.model_id for m in first.models]
    assert (again.stores[0].uri, again.stores[0].generated) == (first.stores[0].uri, 0)
    stages = _stage_runs(first.experiment_id)
    assert len(stages["train_base"]) == 1 and len(stages["train_reflow"]) == 1


def test_lineage_command_prints_the_chain(pipeline_result):
    from typer.testing import CliRunner

    from flows.cli import app

    cfg, result = pipeline_result
    base, reflow = (m.model_id for m in result.models)
    store = result.stores[0].uri
    runner = CliRunner()
    for target in (reflow, "models:/tiny-1rf/1", store):
        out = runner.invoke(
            app, ["lineage", target, "--runs-dir", str(cfg.runs)], terminal_width=400
        )
        assert out.exit_code == 0, out.output
        text = out.output
        # root 1-RF, then its pair set, then the 2-RF trained on it, with evaluation metrics
        assert text.index(base) < text.index(store) < text.index(reflow)
        assert "swd/euler_1=" in text and "▶" in text
    bad = runner.invoke(
        app, ["lineage", str(cfg.runs / "nothing.zarr"), "--runs-dir", str(cfg.runs)]
    )
    assert bad.exit_code == 2 and "MODEL_OR_STORE" in bad.output


def _table_cells(text: str, model_id: str) -> dict[str, str]:
    """{column header: cell} of the compare table row of ``model_id``."""
    lines = [ln.replace("┃", "│") for ln in text.splitlines() if "│" in ln or "┃" in ln]
    header = [c.strip() for c in lines[0].strip("│ ").split("│")]
    (row,) = [ln for ln in lines if model_id in ln]
    return dict(zip(header, (c.strip() for c in row.strip("│ ").split("│")), strict=True))


def test_compare_prints_the_logged_metrics_of_each_model(pipeline_result):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.cli_tables import format_metric

    cfg, result = pipeline_result
    runner = CliRunner()
    args = ["compare", result.run_id, "--runs-dir", str(cfg.runs)]
    out = runner.invoke(app, args, terminal_width=300)
    assert out.exit_code == 0, out.output
    # The pipeline run expands to both of its models; cells are the numbers the flow returned.
    for m in result.models:
        cells = _table_cells(out.output, m.model_id)
        assert cells["model"] == f"{m.k}rf"
        rows = [r for r in result.rows if r.model == f"{m.k}rf"]
        assert {r.steps for r in rows} == {1, 2}
        for r in rows:
            assert cells[f"swd/euler_{r.steps}"] == format_metric(r.swd)
            assert cells["straightness"] == format_metric(r.straightness)
    # A model reference gives that model's row alone.
    one = runner.invoke(app, [*args[:1], "models:/tiny-2rf/1", *args[2:]], terminal_width=300)
    assert one.exit_code == 0, one.output
    assert result.models[1].model_id in one.output
    assert result.models[0].model_id not in one.output


@pytest.mark.parametrize("target", ["0123456789abcdef", "m-doesnotexist", "models:/tiny-9rf/1"])
def test_compare_unknown_target_exits_2(pipeline_result, target):
    from typer.testing import CliRunner

    from flows.cli import app

    cfg, _ = pipeline_result
    out = CliRunner().invoke(app, ["compare", target, "--runs-dir", str(cfg.runs)])
    assert out.exit_code == 2
    assert "RUN_OR_MODEL" in out.output and target in out.output


def test_distill_stage_is_registered_with_lineage_and_evaluated(pipeline_result):
    from typer.testing import CliRunner

    from flows.cli import app
    from rf_core.training import load_checkpoint

    cfg, first = pipeline_result
    settings = {"distill.enabled": True, "distill.steps": 60, "distill.batch_size": 128}
    dcfg = load_config(tiny_config_dict(cfg.runs, **settings, **{"distill.log_every": 20}))
    result = pipeline(dcfg)
    base, reflow, student = result.models
    # 1-RF, the pairs and 2-RF are reused: only the student is new.
    assert [base.model_id, reflow.model_id] == [m.model_id for m in first.models]
    assert (student.name, student.k, student.distilled) == ("2rf-distill", 2, True)
    assert student.registered == "tiny-2rf-distill/1"
    ref = tracking.resolve_model("models:/tiny-2rf-distill/1")
    assert ref.model_id == student.model_id and ref.distilled
    teacher, _ = load_checkpoint(tracking.checkpoint_path(reflow.model_id))
    distilled, payload = load_checkpoint(ref.checkpoint)
    assert payload["extra"]["distilled"] and payload["train_config"]["ema_decay"] == 0.99
    assert any(
        not torch.equal(a, b)
        for a, b in zip(teacher.state_dict().values(), distilled.state_dict().values(), strict=True)
    )

    # Lineage like reflow: the last pair set as training data, the k-RF model as input.
    stages = _stage_runs(result.experiment_id)
    (run,) = stages["distill"]
    assert run.data.tags["mlflow.parentRunId"] == result.run_id
    (training,) = _inputs(run, "training")
    assert training.dataset.digest == result.stores[-1].digest[:32]
    assert [m.model_id for m in run.inputs.model_inputs] == [reflow.model_id]
    assert [m.model_id for m in run.outputs.model_outputs] == [student.model_id]
    assert student.model_id in tracking.models_trained_on(result.stores[-1].digest)

    # Evaluated beside the others, in the same sweep, metrics on its model page.
    assert {r.model for r in result.rows} == {"1rf", "2rf", "2rf-distill"}
    metrics = tracking.model_metrics(student.model_id)
    assert {"swd/euler_1", "swd/euler_2", "straightness"} <= set(metrics)
    row = next(r for r in result.rows if r.model == "2rf-distill" and r.steps == 1)
    assert metrics["swd/euler_1"] == pytest.approx(row.swd)
    out = CliRunner().invoke(
        app, ["compare", result.run_id, "--runs-dir", str(cfg.runs)], terminal_width=300
    )
    assert out.exit_code == 0, out.output
    assert all(m.model_id in out.output for m in result.models)


def test_evaluation_figures_are_in_mlflow(pipeline_result):
    """The quality-vs-NFE plot, the sample panels and (toys) the trajectory picture per run."""
    _, result = pipeline_result
    (ev,) = [
        r
        for r in _stage_runs(result.experiment_id)["evaluate"]
        if r.data.tags["mlflow.parentRunId"] == result.run_id
    ]  # this pipeline's evaluation (another test of the module adds a second)
    names = {
        a.path.split("/")[-1]
        for a in mlflow.MlflowClient().list_artifacts(ev.info.run_id, "figures")
    }
    assert {"quality_vs_nfe.png", "samples_1rf.png", "samples_2rf.png"} <= names
    assert "trajectories.png" in names

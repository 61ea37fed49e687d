"""MLflow tracking and lineage: the only package that imports mlflow.

The lineage model is described in docs/lineage.md. One experiment per pipeline config, a parent
run per pipeline run and a nested run per stage (tagged with the Prefect flow-run id). Every
trained model is a LoggedModel registered as ``<experiment>-<k>rf`` with a plain checkpoint
stored beside it. Pair sets are metadata-only datasets carrying the store digest. Callers use
this facade (``from storage import tracking; tracking.stage_run(...)``); the modules split it by
concept:

- :mod:`.connect`: tracking URI (runs-folder SQLite or a server), experiments, artifact downloads;
- :mod:`.runs`: stage runs, metrics, reuse by stage key;
- :mod:`.models`: LoggedModels, their checkpoints, model references;
- :mod:`.pairsets`: pair sets as datasets and the lineage queries;
- :mod:`.evaluations`: evaluation metrics per model or run;
- :mod:`.classifier`: the registered Fréchet classifier of a dataset;
- :mod:`.tags`: tag keys shared by all of them.
"""

from storage.tracking.classifier import (
    ClassifierRef,
    classifier_name,
    find_classifier,
    log_classifier,
    tag_classifier,
)
from storage.tracking.connect import (
    ENV_URI,
    PROBE_TIMEOUT_S,
    TrackingServerError,
    artifact_file,
    check_server,
    configure,
    ensure_experiment,
    is_server,
    run_url,
    tracking_uri,
    ui_command,
)
from storage.tracking.evaluations import Evaluation, evaluations
from storage.tracking.models import (
    ModelRef,
    checkpoint_path,
    log_model_input,
    log_model_metrics,
    log_trained_model,
    model_metrics,
    model_name,
    model_ref,
    resolve_model,
    run_output_model,
)
from storage.tracking.pairsets import (
    PairSetRef,
    dataset_digest,
    log_pair_set,
    models_trained_on,
    pair_set_source,
    pair_sets_from_model,
    training_inputs,
)
from storage.tracking.runs import (
    find_finished_stage,
    log_artifact,
    log_figure,
    log_metrics,
    log_table,
    log_text,
    mark_unfinished,
    stage_run,
)
from storage.tracking.tags import (
    CHECKPOINT_NAME,
    CLASSIFIER_NAME,
    CONTEXT_GENERATED,
    CONTEXT_TRAINING,
    DIGEST_CHARS,
    TAG_CLF_DATA,
    TAG_CLF_KEY,
    TAG_CLF_MODEL,
    TAG_CLF_VERSION,
    TAG_CONFIG,
    TAG_DIGEST,
    TAG_DISTILLED,
    TAG_FLOW_RUN,
    TAG_K,
    TAG_KEY,
    TAG_MODELS,
    TAG_SHA,
    TAG_SOURCE,
    TAG_STAGE,
    TAG_STORE,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CLASSIFIER_NAME",
    "CONTEXT_GENERATED",
    "CONTEXT_TRAINING",
    "DIGEST_CHARS",
    "ENV_URI",
    "PROBE_TIMEOUT_S",
    "TAG_CLF_DATA",
    "TAG_CLF_KEY",
    "TAG_CLF_MODEL",
    "TAG_CLF_VERSION",
    "TAG_CONFIG",
    "TAG_DIGEST",
    "TAG_DISTILLED",
    "TAG_FLOW_RUN",
    "TAG_K",
    "TAG_KEY",
    "TAG_MODELS",
    "TAG_SHA",
    "TAG_SOURCE",
    "TAG_STAGE",
    "TAG_STORE",
    "ClassifierRef",
    "Evaluation",
    "ModelRef",
    "PairSetRef",
    "TrackingServerError",
    "artifact_file",
    "check_server",
    "checkpoint_path",
    "classifier_name",
    "configure",
    "dataset_digest",
    "ensure_experiment",
    "evaluations",
    "find_classifier",
    "find_finished_stage",
    "is_server",
    "log_artifact",
    "log_classifier",
    "log_figure",
    "log_metrics",
    "log_model_input",
    "log_model_metrics",
    "log_pair_set",
    "log_table",
    "log_text",
    "log_trained_model",
    "mark_unfinished",
    "model_metrics",
    "model_name",
    "model_ref",
    "models_trained_on",
    "pair_set_source",
    "pair_sets_from_model",
    "resolve_model",
    "run_output_model",
    "run_url",
    "stage_run",
    "tag_classifier",
    "tracking_uri",
    "training_inputs",
    "ui_command",
]

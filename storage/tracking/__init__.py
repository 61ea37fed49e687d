"""MLflow tracking and lineage: the only package that imports mlflow.

The lineage model is described in docs/lineage.md. One experiment per pipeline config, a parent
run per pipeline run and a nested run per stage (tagged with the Prefect flow-run id). Every
trained model is a LoggedModel registered as ``<experiment>-<k>rf`` with a plain checkpoint
stored beside it. Pair sets are metadata-only datasets carrying the store digest, and so are
training sets read from disk (docs/datasets.md). Callers use this facade (``from storage import
tracking; tracking.stage_run(...)``); the modules split it by concept:

- :mod:`.connect`: tracking URI (runs-folder SQLite or a server), experiments, artifact downloads;
- :mod:`.runs`: stage runs, metrics, reuse by stage key;
- :mod:`.models`: LoggedModels, their checkpoints, model references;
- :mod:`.pairsets`: pair sets as datasets and the lineage queries;
- :mod:`.datasets`: on-disk training sets (image folders, npz files) as datasets;
- :mod:`.evaluations`: evaluation metrics per model or run;
- :mod:`.classifier`: the registered Fréchet classifier of a dataset;
- :mod:`.sampler`: what a logged model holds (the velocity field and a servable sampler);
- :mod:`.registry`: the registry aliases ``latest`` and ``champion``;
- :mod:`.notes`: descriptions of runs and models, and links between their pages;
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
    KIND,
    KIND_TAG,
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
from storage.tracking.datasets import TrainingData, log_training_data, training_data
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
from storage.tracking.notes import NOTE, describe_model, describe_run, model_link, run_link
from storage.tracking.pairsets import (
    PairSetRef,
    dataset_digest,
    log_pair_set,
    models_trained_on,
    pair_set_key,
    pair_set_name,
    pair_set_run,
    pair_set_source,
    pair_sets_from_model,
    training_inputs,
)
from storage.tracking.registry import CHAMPION, LATEST, crown_champion, set_alias
from storage.tracking.runs import (
    find_finished_stage,
    log_artifact,
    log_figure,
    log_metrics,
    log_table,
    log_text,
    mark_unfinished,
    stage_run,
    tag_run,
)
from storage.tracking.tags import (
    CHECKPOINT_NAME,
    CLASSIFIER_NAME,
    CONTEXT_GENERATED,
    CONTEXT_TRAINING,
    DIGEST_CHARS,
    TAG_CKPT,
    TAG_CLASSES,
    TAG_CLF_DATA,
    TAG_CLF_KEY,
    TAG_CLF_MODEL,
    TAG_CLF_VERSION,
    TAG_CONFIG,
    TAG_DATA_KIND,
    TAG_DIGEST,
    TAG_DISTILLED,
    TAG_FLOW_RUN,
    TAG_K,
    TAG_KEY,
    TAG_MODELS,
    TAG_PAIR_SEED,
    TAG_REGISTERED,
    TAG_RESUMED_BY,
    TAG_RESUMED_FROM,
    TAG_RESUMED_STEP,
    TAG_SHA,
    TAG_SOURCE,
    TAG_STAGE,
    TAG_STORE,
)

__all__ = [
    "CHAMPION",
    "CHECKPOINT_NAME",
    "CLASSIFIER_NAME",
    "CONTEXT_GENERATED",
    "CONTEXT_TRAINING",
    "DIGEST_CHARS",
    "ENV_URI",
    "KIND",
    "KIND_TAG",
    "LATEST",
    "NOTE",
    "PROBE_TIMEOUT_S",
    "TAG_CKPT",
    "TAG_CLASSES",
    "TAG_CLF_DATA",
    "TAG_CLF_KEY",
    "TAG_CLF_MODEL",
    "TAG_CLF_VERSION",
    "TAG_CONFIG",
    "TAG_DATA_KIND",
    "TAG_DIGEST",
    "TAG_DISTILLED",
    "TAG_FLOW_RUN",
    "TAG_K",
    "TAG_KEY",
    "TAG_MODELS",
    "TAG_PAIR_SEED",
    "TAG_REGISTERED",
    "TAG_RESUMED_BY",
    "TAG_RESUMED_FROM",
    "TAG_RESUMED_STEP",
    "TAG_SHA",
    "TAG_SOURCE",
    "TAG_STAGE",
    "TAG_STORE",
    "ClassifierRef",
    "Evaluation",
    "ModelRef",
    "PairSetRef",
    "TrackingServerError",
    "TrainingData",
    "artifact_file",
    "check_server",
    "checkpoint_path",
    "classifier_name",
    "configure",
    "crown_champion",
    "dataset_digest",
    "describe_model",
    "describe_run",
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
    "log_training_data",
    "mark_unfinished",
    "model_link",
    "model_metrics",
    "model_name",
    "model_ref",
    "models_trained_on",
    "pair_set_key",
    "pair_set_name",
    "pair_set_run",
    "pair_set_source",
    "pair_sets_from_model",
    "resolve_model",
    "run_link",
    "run_output_model",
    "run_url",
    "set_alias",
    "stage_run",
    "tag_classifier",
    "tag_run",
    "tracking_uri",
    "training_data",
    "training_inputs",
    "ui_command",
]

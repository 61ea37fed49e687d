"""Tag keys and names shared by the tracking modules (no mlflow import: plain constants)."""

from __future__ import annotations

CHECKPOINT_NAME = "checkpoint.pt"
# Where a model's checkpoint is inside it, and the registered name it was logged under.
TAG_CKPT, TAG_REGISTERED = "rectiflow.checkpoint_artifact", "rectiflow.registered_name"
TAG_STAGE, TAG_FLOW_RUN, TAG_KEY = "rectiflow.stage", "prefect.flow_run_id", "rectiflow.stage_key"
TAG_K, TAG_SHA = "rectiflow.k", "rectiflow.checkpoint_sha256"
CONTEXT_GENERATED, CONTEXT_TRAINING = "generated", "training"
TAG_DIGEST, DIGEST_CHARS = "rectiflow.digest", 32
TAG_STORE, TAG_SOURCE = "rectiflow.store", "rectiflow.source_model"
TAG_PAIR_SEED = "rectiflow.pair_seed"  # the noise seed of a generation run's pairs
TAG_DISTILLED = "rectiflow.distilled"
# A training run that continued from a state: the run that wrote it, its step; and back.
TAG_RESUMED_FROM, TAG_RESUMED_STEP = "rectiflow.resumed_from", "rectiflow.resumed_at_step"
TAG_RESUMED_BY = "rectiflow.resumed_by"
TAG_MODELS, TAG_CONFIG = "rectiflow.models", "rectiflow.config"  # evaluated models, config name
TAG_DATA_KIND, TAG_CLASSES = "rectiflow.data_kind", "rectiflow.classes"  # on-disk training sets
TAG_CLF_KEY, TAG_CLF_DATA = "rectiflow.classifier_key", "rectiflow.classifier_data_digest"
TAG_CLF_MODEL, TAG_CLF_VERSION = "rectiflow.classifier", "rectiflow.classifier_version"
CLASSIFIER_NAME = "classifier.pt"

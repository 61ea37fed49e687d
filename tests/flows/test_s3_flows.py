"""Stage flows on s3:// stores: ``pairs.store_root`` + ``execution.storage_options`` in the config.

Only the config knows the endpoint and keys here (the AWS_* variables are removed), so this shows
that the options reach every place a store is opened: the coordinator, the shard tasks, the
reflow stream.
"""

from __future__ import annotations

import os

import pytest
import s3fs

from flows.config import load_config
from flows.generate import generate_pairs
from flows.train import train_reflow
from storage import tracking
from storage.pairstore import PairStore
from tests.helpers import tiny_config_dict
from tests.storage.s3server import start_moto, stop_moto, storage_options_undone

BUCKET = "rf-flows"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    proc, url = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield url
    finally:
        stop_moto(proc)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real (untrained) checkpoint of the tiny config's MLP."""
    import torch

    from rf_core.config import ModelConfig
    from rf_core.models import build_model
    from rf_core.training import save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, extra={"k": 1})


@pytest.fixture
def only_config_knows(endpoint, monkeypatch):
    """No AWS_* / FSSPEC_* in the environment; fsspec's config restored afterwards."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    with storage_options_undone(monkeypatch):  # the flows export FSSPEC_S3 for their children
        s3fs.S3FileSystem.clear_instance_cache()
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        s3fs.S3FileSystem(**options).mkdir(BUCKET)
        yield {"s3": options}


@pytest.mark.slow
def test_generate_and_reflow_on_s3_from_config_options(
    prefect_api,
    runs_dir,
    checkpoint,
    only_config_knows,
):
    cfg = load_config(
        tiny_config_dict(
            runs_dir,
            **{
                "pairs.store_root": f"s3://{BUCKET}/stores",
                "execution.storage_options": only_config_knows,
                "pairs.n": 512,
            },
        )
    )
    res = generate_pairs(cfg, model=str(checkpoint))
    assert res.uri.startswith(f"s3://{BUCKET}/stores/tiny-1rf-")
    store = PairStore.open(res.uri)
    assert store.is_finalized and store.attrs["digest"] == res.digest
    assert not (runs_dir / "stores").exists()  # nothing went to the local default
    # Lineage names the s3 URL; reflow streams the store from s3 and records it as training data.
    ref = train_reflow(cfg, store=res.uri, init_model=str(checkpoint))
    assert ref.k == 2
    assert tracking.models_trained_on(res.digest) == [ref.model_id]


def test_bad_storage_options_are_named_before_any_work(runs_dir):
    with pytest.raises(ValueError, match=r"execution\.storage_options"):
        load_config(tiny_config_dict(runs_dir, **{"execution.storage_options": {"s3://": {}}}))
    with pytest.raises(ValueError, match=r"execution\.storage_options"):
        load_config(tiny_config_dict(runs_dir, **{"execution.storage_options": {"s3": "x"}}))

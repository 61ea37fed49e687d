"""fit (determinism, EMA, init_from, batch sources) and weights-only checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

from rf_core.config import ModelConfig, TrainConfig
from rf_core.models import build_model
from rf_core.training import (
    checkpoint_sha256,
    fit,
    independent_batches,
    independent_coupling,
    load_checkpoint,
    minibatches,
    save_checkpoint,
)

MLP = ModelConfig(kind="mlp", data_shape=(2,), num_classes=3, hidden=16, depth=2)
UNET = ModelConfig(kind="unet", data_shape=(1, 8, 8), num_classes=10, base_channels=8)


def seeded_model(cfg: ModelConfig = MLP, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg)


def toy_batches(seed: int = 0, n: int = 256):
    """1-RF batches: data = label-dependent blobs, noise independent."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x1 = torch.randn(n, 2, generator=g) * 0.1 + torch.stack([y.float(), -y.float()], dim=1)
    return independent_batches(x1, y, 32, g)


def train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 30, "batch_size": 32, "ema_decay": 0.9, "log_every": 10, **kw})


def test_fit_is_deterministic_for_a_seed_and_learns():
    a = fit(seeded_model(), toy_batches(), train_cfg())
    b = fit(seeded_model(), toy_batches(), train_cfg())
    c = fit(seeded_model(), toy_batches(), train_cfg(seed=1))
    assert a.losses == b.losses and len(a.losses) == a.steps == 30
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.losses != c.losses  # the seed drives the time sampling
    long = fit(seeded_model(), toy_batches(), train_cfg(steps=120, lr=1e-2))
    assert sum(long.losses[-20:]) < 0.7 * sum(long.losses[:20])


def test_ema_model_differs_from_raw_and_is_returned_in_eval_mode():
    res = fit(seeded_model(), toy_batches(), train_cfg())
    assert not res.model.training and res.model.config == MLP
    assert not torch.equal(res.model.out.weight, res.raw_model.out.weight)
    plain = fit(seeded_model(), toy_batches(), train_cfg(ema_decay=0.0))
    assert plain.model is plain.raw_model


def test_callback_gets_mean_losses_every_log_every_steps():
    seen = []
    res = fit(
        seeded_model(),
        toy_batches(),
        train_cfg(steps=25),
        callback=lambda s, v: seen.append((s, v)),
    )
    assert [s for s, _ in seen] == [10, 20, 25]
    assert seen[0][1] == pytest.approx(sum(res.losses[:10]) / 10, rel=1e-5)


def test_batch_sources_list_restarts_iterator_exhausts_callable_gets_step():
    g = torch.Generator().manual_seed(0)
    batches = [independent_coupling(torch.randn(8, 2), torch.zeros(8, dtype=torch.long), g)] * 3
    assert fit(seeded_model(), batches, train_cfg(steps=7)).steps == 7  # list re-iterated
    with pytest.raises(ValueError, match="ran out after 3 steps"):
        fit(seeded_model(), iter(batches), train_cfg(steps=7))
    steps_seen = []

    def source(step):
        steps_seen.append(step)
        return batches[0]

    fit(seeded_model(), source, train_cfg(steps=4))
    assert steps_seen == [0, 1, 2, 3]


def test_nan_loss_fails_loudly():
    g = torch.Generator().manual_seed(0)
    bad = independent_coupling(
        torch.full((8, 2), float("nan")), torch.zeros(8, dtype=torch.long), g
    )
    with pytest.raises(FloatingPointError, match="at step 10"):
        fit(seeded_model(), [bad], train_cfg(steps=20))


def test_init_from_checkpoint_equals_training_a_copy(tmp_path):
    source = fit(seeded_model(seed=5), toy_batches(), train_cfg()).model
    path = save_checkpoint(tmp_path / "src.pt", source)
    from_file = fit(seeded_model(seed=9), toy_batches(1), train_cfg(), init_from=path)
    from_copy = fit(copy.deepcopy(source).train(), toy_batches(1), train_cfg())
    assert from_file.losses == from_copy.losses
    with pytest.raises(ValueError, match="another architecture"):
        fit(
            seeded_model(ModelConfig(kind="mlp", data_shape=(2,))),
            toy_batches(),
            train_cfg(),
            init_from=path,
        )


def test_minibatches_cover_an_epoch_and_check_sizes():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    it = minibatches((x, y), 5, torch.Generator().manual_seed(0))
    first, second = next(it), next(it)
    assert sorted(torch.cat([first[1], second[1]]).tolist()) == list(range(10))
    assert torch.equal(first[0][:, 0].long(), first[1])  # rows stay aligned
    with pytest.raises(ValueError, match=r"batch_size must be in 1\.\.10"):
        next(minibatches((x, y), 11, torch.Generator()))
    with pytest.raises(ValueError, match="disagree on length"):
        next(minibatches((x, y[:9]), 2, torch.Generator()))


@pytest.mark.parametrize("cfg", [MLP, UNET])
def test_checkpoint_round_trip_is_exact(tmp_path, cfg):
    model = seeded_model(cfg, seed=3)
    tc = train_cfg()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, tc, extra={"k": 2, "store": "a.zarr"})
    loaded, payload = load_checkpoint(path, expected_config=cfg)
    assert loaded.config == cfg and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.randn(4, *cfg.data_shape)
    t, y = torch.rand(4), torch.tensor([0, 1, -1, 2])
    assert torch.equal(model.eval()(x, t, y), loaded(x, t, y))
    assert TrainConfig.model_validate(payload["train_config"]) == tc
    assert payload["extra"] == {"k": 2, "store": "a.zarr"}
    assert len(checkpoint_sha256(path)) == 64


def test_sha256_tracks_the_bytes(tmp_path):
    a = save_checkpoint(tmp_path / "a.pt", seeded_model(seed=0))
    b = save_checkpoint(tmp_path / "b.pt", seeded_model(seed=0))
    c = save_checkpoint(tmp_path / "c.pt", seeded_model(seed=1))
    assert checkpoint_sha256(a) == checkpoint_sha256(b) != checkpoint_sha256(c)


def test_save_refuses_to_overwrite_and_non_json_extra(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", seeded_model())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(path, seeded_model(seed=1))
    assert path.read_bytes() == before
    save_checkpoint(path, seeded_model(seed=1), overwrite=True)
    assert path.read_bytes() != before
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "x.pt", seeded_model(), extra={"p": tmp_path})
    assert not (tmp_path / "x.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp files left


def test_truncated_checkpoint_is_a_value_error_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", seeded_model())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.pt is unreadable"):
        load_checkpoint(cut)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"garbage\.pt is unreadable"):
        load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_other_architecture_names_file_and_both_configs(tmp_path):
    path = save_checkpoint(tmp_path / "unet.pt", seeded_model(UNET))
    with pytest.raises(ValueError, match=r"unet\.pt holds another architecture") as err:
        load_checkpoint(path, expected_config=MLP)
    assert "kind='unet'" in str(err.value) and "kind='mlp'" in str(err.value)
    wider = MLP.model_copy(update={"hidden": 32})
    with pytest.raises(ValueError, match="another architecture"):
        load_checkpoint(save_checkpoint(tmp_path / "mlp.pt", seeded_model()), expected_config=wider)


def test_foreign_or_inconsistent_payloads_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match=r"plain\.pt is not a rectiflow-ckpt/1 file"):
        load_checkpoint(plain)
    path = save_checkpoint(tmp_path / "m.pt", seeded_model())
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("out.bias")
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(ValueError, match=r"broken\.pt: state_dict does not match"):
        load_checkpoint(broken)
    payload["model_config"]["kind"] = "transformer"
    torch.save(payload, broken)
    with pytest.raises(ValueError, match=r"broken\.pt has an invalid model_config"):
        load_checkpoint(broken)

"""Model configs and velocity networks: shapes, conditioning, input validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from rf_core.config import ModelConfig, TrainConfig
from rf_core.models import (
    AttnBlock,
    MLPVelocity,
    UNetVelocity,
    build_model,
    check_inputs,
    timestep_embedding,
)
from rf_core.training import load_checkpoint

SMALL_UNET = {"kind": "unet", "base_channels": 8, "time_emb_dim": 16}


@pytest.mark.parametrize(
    ("cfg", "cls"),
    [
        (ModelConfig(kind="mlp", data_shape=(2,), hidden=16), MLPVelocity),
        (ModelConfig(kind="mlp", data_shape=(5,), num_classes=3, depth=1), MLPVelocity),
        (ModelConfig(**SMALL_UNET, data_shape=(1, 28, 28), num_classes=10), UNetVelocity),
        (ModelConfig(**SMALL_UNET, data_shape=(3, 32, 32), channel_mult=(1, 2, 2)), UNetVelocity),
        (ModelConfig(**SMALL_UNET, data_shape=(1, 28, 28), patch_size=2), UNetVelocity),
    ],
)
def test_output_shape_equals_input_shape_and_gradients_flow(cfg, cls):
    model = build_model(cfg)
    assert isinstance(model, cls) and model.config is cfg
    x = torch.randn(3, *cfg.data_shape, requires_grad=True)
    y = torch.full((3,), -1) if cfg.num_classes == 0 else torch.tensor([0, cfg.num_classes - 1, -1])
    v = model(x, torch.rand(3), y)
    assert v.shape == x.shape
    v.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_scalar_time_and_missing_labels_broadcast():
    model = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=8))
    x = torch.randn(4, 2)
    full = model(x, torch.full((4,), 0.3), torch.full((4,), -1))
    torch.testing.assert_close(model(x, torch.tensor(0.3)), full)


def test_labels_and_time_change_the_output():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL_UNET, data_shape=(1, 8, 8), num_classes=4))
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    base = model(x, t, torch.tensor([0, 0]))
    assert not torch.allclose(base, model(x, t, torch.tensor([1, 1])))
    assert not torch.allclose(base, model(x, t, torch.tensor([-1, -1])))  # null row is its own
    assert not torch.allclose(base, model(x, t + 0.1, torch.tensor([0, 0])))


def test_timestep_embedding_shape_and_distinct_times():
    emb = timestep_embedding(torch.tensor([0.0, 0.5, 1.0]), 7)
    assert emb.shape == (3, 7)
    assert not torch.allclose(emb[0], emb[1]) and not torch.allclose(emb[1], emb[2])


def test_timestep_embedding_in_double_is_the_same_function_with_less_rounding():
    t = torch.linspace(0.0, 1.0, 9)
    e32, e64 = timestep_embedding(t, 64), timestep_embedding(t, 64, dtype=torch.float64)
    assert e32.dtype == torch.float32 and e64.dtype == torch.float64
    # The same frequencies: float32 rounds 1000 t f (up to ~1e3 rad) at ~6e-5, double does not.
    assert 1e-7 < (e64 - e32.double()).abs().max() < 1e-3
    assert torch.equal(timestep_embedding(t.double(), 64), e32)  # the dtype argument decides


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_a_double_model_runs_in_double_and_agrees_with_float32(kind):
    torch.manual_seed(0)
    shape = (2,) if kind == "mlp" else (1, 8, 8)
    extra = {"kind": "mlp"} if kind == "mlp" else SMALL_UNET
    model = build_model(ModelConfig(data_shape=shape, num_classes=3, **extra)).eval()
    m64 = copy.deepcopy(model).double()
    x, t, y = torch.randn(4, *shape), torch.rand(4), torch.tensor([0, 1, 2, -1])
    with torch.no_grad():
        v32, v64 = model(x, t, y), m64(x.double(), t.double(), y)
    assert v64.dtype == torch.float64
    torch.testing.assert_close(v64.float(), v32, atol=1e-4, rtol=1e-4)


def test_check_inputs_names_the_argument():
    cfg = ModelConfig(kind="mlp", data_shape=(2,), num_classes=3)
    x = torch.zeros(4, 2)
    check_inputs(cfg, x, torch.rand(4), torch.tensor([-1, 0, 1, 2]))  # fine
    with pytest.raises(ValueError, match=r"x has shape \(4, 3\); expected \(B, 2\)"):
        check_inputs(cfg, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"t has shape \(4, 1\); expected \(4,\)"):
        check_inputs(cfg, x, t=torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        check_inputs(cfg, x, t=torch.tensor([0.0, 0.5, 1.0, 1.2]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        check_inputs(cfg, x, t=torch.tensor([-0.1, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\]; allowed: -1\.\.2"):
        check_inputs(cfg, x, y=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer tensor"):
        check_inputs(cfg, x, y=torch.zeros(4))
    uncond = ModelConfig(kind="mlp", data_shape=(2,))
    with pytest.raises(ValueError, match=r"allowed: only -1"):
        check_inputs(uncond, x, y=torch.tensor([-1, -1, 0, -1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "mlp", "data_shape": (1, 28, 28)}, "kind='mlp' needs data_shape=\\(D,\\)"),
        ({"kind": "unet", "data_shape": (784,)}, "kind='unet' needs data_shape=\\(C, H, W\\)"),
        ({"kind": "unet", "data_shape": (1, 28, 28), "patch_size": 3}, "divisible by patch_size"),
        ({"kind": "unet", "data_shape": (1, 8, 8), "base_channels": 12}, "multiple of 8"),
        ({"kind": "unet", "data_shape": (1, 8, 8), "channel_mult": ()}, "channel_mult"),
        ({"kind": "mlp", "data_shape": (0,)}, "positive"),
        ({"kind": "conv", "data_shape": (2,)}, "kind"),
        ({"kind": "mlp", "data_shape": (2,), "num_classes": -1}, "num_classes"),
        ({"kind": "mlp", "data_shape": (2,), "widht": 3}, "widht"),
    ],
)
def test_bad_model_configs_are_refused(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**kwargs)


def test_configs_are_frozen_and_round_trip_json():
    cfg = ModelConfig(kind="unet", data_shape=(1, 28, 28), num_classes=10)
    assert ModelConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValidationError):
        cfg.hidden = 3
    tc = TrainConfig(steps=10, batch_size=4, loss="pseudo_huber", t_sampler="u_shaped")
    assert TrainConfig.model_validate(tc.model_dump(mode="json")) == tc
    for bad in ({"steps": 0}, {"loss": "l1"}, {"t_sampler": "beta"}, {"ema_decay": 1.0}):
        with pytest.raises(ValidationError):
            TrainConfig(**{"steps": 10, "batch_size": 4, **bad})


# ---------------------------------------------------------------------------------------------
# U-Net options: num_res_blocks, attention_resolutions, dropout

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def test_checkpoint_saved_by_the_one_block_unet_loads_and_gives_the_same_outputs():
    # unet_main.pt was written by save_checkpoint before these options existed (commit 3c719f3),
    # with its state_dict keys and the outputs on a fixed batch beside it.
    io = torch.load(FIXTURES / "unet_main_io.pt", weights_only=True)
    model, payload = load_checkpoint(FIXTURES / "unet_main.pt")
    assert list(model.state_dict()) == io["keys"]  # strict load: no key added or renamed
    with torch.no_grad():  # float tolerance only: kernels differ by thread count and CPU
        torch.testing.assert_close(model(io["x"], io["t"], io["y"]), io["v"], rtol=1e-5, atol=1e-6)
    # The config dumps and prints exactly as then: stage keys and MLflow params do not change.
    assert model.config.model_dump(mode="json") == payload["model_config"]
    assert "num_res_blocks" not in str(model.config) and "dropout" not in repr(model.config)
    rebuilt = build_model(model.config)
    assert list(rebuilt.state_dict()) == io["keys"]


def test_cifar10_config_unet_has_the_stated_size_and_shape():
    model_cfg = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())["model"]
    cfg = ModelConfig(**model_cfg)
    assert (cfg.num_res_blocks, cfg.attention_resolutions, cfg.dropout) == (4, (16,), 0.1)
    torch.manual_seed(0)
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 49_356_803  # the figure the config's comment states
    assert sum(isinstance(m, AttnBlock) for m in model.modules()) == 4 + 4  # 16x16, down and up
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x, torch.rand(2), torch.tensor([0, -1])).shape == (2, 3, 32, 32)


def test_more_blocks_attention_and_dropout_all_train_and_change_the_network():
    base = dict(SMALL_UNET, data_shape=(3, 16, 16), num_classes=2, channel_mult=(1, 2))
    cfg = ModelConfig(**base, num_res_blocks=2, attention_resolutions=(8, 4), dropout=0.5)
    torch.manual_seed(0)
    model = build_model(cfg)
    plain = build_model(ModelConfig(**base))
    assert len(model.down) == 4 and len(model.up) == 4 and len(plain.down) == 2
    assert isinstance(model.mid_attn, AttnBlock) and isinstance(plain.mid_attn, nn.Identity)
    assert sum(isinstance(m, AttnBlock) for m in model.down_attn) == 2  # the 8x8 level only
    x, t, y = torch.randn(3, 3, 16, 16), torch.rand(3), torch.tensor([0, 1, -1])
    model.train()
    torch.manual_seed(1)
    a = model(x, t, y)
    b = model(x, t, y)
    assert not torch.equal(a, b)  # dropout draws a new mask in training
    a.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert torch.equal(model(x, t, y), model(x, t, y))  # and none in evaluation


def test_attention_block_starts_as_the_identity():
    block = AttnBlock(16)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(block(x), x)


def test_attention_at_a_missing_resolution_names_the_field_and_the_heights():
    with pytest.raises(ValidationError) as err:
        ModelConfig(
            kind="unet", data_shape=(3, 32, 32), channel_mult=(1, 2), attention_resolutions=(16, 64)
        )
    msg = str(err.value)
    assert "model.attention_resolutions [16, 64]" in msg and "height 64" in msg
    assert "[32, 16, 8]" in msg  # what the data does have
    # patch folding changes the heights: 28 / 2 = 14 -> 7 -> 4
    ModelConfig(kind="unet", data_shape=(1, 28, 28), patch_size=2, attention_resolutions=(7, 4))
    with pytest.raises(ValidationError, match="height 28"):
        ModelConfig(kind="unet", data_shape=(1, 28, 28), patch_size=2, attention_resolutions=(28,))


def test_unet_settings_on_an_mlp_are_refused():
    with pytest.raises(ValidationError, match="attention_resolutions, dropout: U-Net settings"):
        ModelConfig(kind="mlp", data_shape=(2,), dropout=0.1, attention_resolutions=(1,))
    with pytest.raises(ValidationError, match="dropout"):
        ModelConfig(kind="unet", data_shape=(1, 8, 8), dropout=1.0)

"""The training benchmark on a few steps: every table row is measured, and a section is written."""

from __future__ import annotations

from benchmarks import training


def test_checkpoint_and_ddp_rows_are_measured_against_their_baselines():
    ckpt = training.checkpoint_rows(steps=120, rounds=1)
    assert ckpt[0].setting == "no training states"
    assert ckpt[0].ratio == 1.0 and all(r.seconds > 0 for r in ckpt)
    assert "states every 100 steps" in {r.setting for r in ckpt}
    ddp = training.ddp_rows(steps=60, rounds=1)
    assert [r.setting for r in ddp] == ["1 process", "2 processes"]
    assert ddp[0].ratio == 1.0 and ddp[1].seconds > 0 and "steps/s" in ddp[1].note

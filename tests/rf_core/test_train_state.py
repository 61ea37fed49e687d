"""Training state files: atomic writes, manifests, pruning, damaged states skipped by name."""

from __future__ import annotations

import pytest
import torch

from rf_core.train_state import StateMismatchError, TrainStates, check_fingerprint

FINGERPRINT = {"train": {"lr": 1e-3, "steps": 10}, "processes": 1}


def write(states: TrainStates, *steps: int) -> None:
    for s in steps:
        states.save(s, {"w": torch.full((64,), float(s))}, {"fingerprint": FINGERPRINT})


def test_states_are_kept_last_and_read_back(tmp_path):
    states = TrainStates(tmp_path / "st", keep_last=2)
    assert states.latest().state is None and states.steps() == []
    write(states, 5, 10, 15)
    assert states.steps() == [15, 10]
    names = sorted(p.name for p in states.folder.iterdir())  # no temp files left
    assert names == ["state-10.json", "state-10.pt", "state-15.json", "state-15.pt"]
    latest = states.latest()
    assert latest.skipped == () and latest.state.step == 15
    assert torch.equal(latest.state.load()["w"], torch.full((64,), 15.0))
    assert latest.state.load()["step"] == 15 and latest.state.manifest["fingerprint"] == FINGERPRINT
    states.clear()
    assert not states.folder.exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        (lambda p: p.write_bytes(_flip(p.read_bytes())), "damaged: its crc32c"),
        (lambda p: p.with_suffix(".json").unlink(), "no manifest"),
        (lambda p: p.with_suffix(".json").write_text("{"), "manifest state-3.json is unreadable"),
    ],
)
def test_a_damaged_newest_state_is_skipped_by_name(tmp_path, damage, reason):
    states = TrainStates(tmp_path, keep_last=3)
    write(states, 2, 3)
    damage(states.path(3))
    latest = states.latest()
    assert latest.state.step == 2
    assert [(p.name, reason in why) for p, why in latest.skipped] == [("state-3.pt", True)]
    assert states.path(3).exists()  # reported, never deleted


def _flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


def test_a_state_of_another_configuration_names_what_differs(tmp_path):
    states = TrainStates(tmp_path)
    write(states, 4)
    state = states.latest().state
    check_fingerprint(state, FINGERPRINT)
    other = {"train": {"lr": 5e-4, "steps": 10}, "processes": 2}
    with pytest.raises(StateMismatchError) as err:
        check_fingerprint(state, other)
    assert err.value.fields == ["processes", "train.lr"]
    assert "train.lr: 0.001 in the state, 0.0005 now" in str(err.value)
    assert "state-4.pt" in str(err.value)
    with pytest.raises(ValueError, match="keep_last must be a positive int"):
        TrainStates(tmp_path, keep_last=0)

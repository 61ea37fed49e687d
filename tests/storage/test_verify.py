"""Corruption on disk is found by chunk index, never read silently, and repaired bit for bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from flows.cli_pairs import pairs_app
from rf_core.training import load_checkpoint
from storage.generate import generate_chunks
from storage.pairstore import ChunkCorruptError, PairStore
from storage.verify import repair, verify
from tests.storage.storekit import (
    assert_same_store,
    run_py,
    source_for,
    store_kwargs,
    tree_hash,
)


@pytest.fixture
def finished(tmp_path, ckpt):
    """A finalized store generated from ``ckpt``, plus a pristine copy of its directory."""
    uri = tmp_path / "p.zarr"
    store = PairStore.create(str(uri), **store_kwargs(n=40, chunk=8, source=source_for(ckpt)))
    generate_chunks(load_checkpoint(ckpt)[0], store)
    store.finalize()
    shutil.copytree(uri, tmp_path / "pristine.zarr")
    return uri


def flip_bytes(path, offset=20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    data[offset + 1] ^= 0x5A
    path.write_bytes(bytes(data))


def chunk_file(uri, name, i):
    return uri / PairStore.open(str(uri)).chunk_key(name, i)


def test_flipped_bytes_are_named_refused_and_repaired(finished, ckpt):
    flip_bytes(chunk_file(finished, "x1", 2))
    chunk_file(finished, "y", 4).unlink()  # marker set but data gone
    store = PairStore.open(str(finished), mode="r+")
    report = verify(store)
    assert report.bad_chunks == [2, 4] and not report.ok and report.checked == 3
    assert "x1 unreadable" in report.bad[0].reason and "checksum" in report.bad[0].reason
    assert "y data is missing" in report.bad[1].reason
    with pytest.raises(ChunkCorruptError, match="chunk 2 is corrupt") as err:
        store.read_chunk(2)
    assert err.value.index == 2
    with pytest.raises(ChunkCorruptError, match="chunk 4 is corrupt: y data is missing"):
        store.read_chunk(4)
    result = repair(store, load_checkpoint(ckpt)[0])
    assert result.regenerated == [2, 4] and result.stats.chunks_done == 2
    assert result.digest == result.previous_digest
    assert verify(PairStore.open(str(finished))).ok
    assert_same_store(finished, finished.parent / "pristine.zarr")


def test_non_finite_data_and_bad_markers_are_reported(finished):
    g = zarr.open_group(str(finished), mode="r+")
    g["x1"][9, 0] = np.nan  # valid checksum, invalid numbers (chunk 1)
    flip_bytes(chunk_file(finished, "done", 3), offset=0)
    report = verify(PairStore.open(str(finished)))
    assert report.bad_chunks == [1, 3]
    assert "NaN or Inf" in report.bad[0].reason and "done marker unreadable" in report.bad[1].reason


def test_digest_mismatch_on_intact_chunks_is_reported_not_hidden(finished, ckpt):
    g = zarr.open_group(str(finished), mode="r+")
    g["y"][0] = (g["y"][0] + 1) % 3  # rewritten with a valid checksum after finalize
    store = PairStore.open(str(finished), mode="r+")
    report = verify(store)
    assert report.bad == [] and report.digest_ok is False and not report.ok
    result = repair(store, load_checkpoint(ckpt)[0])
    assert result.regenerated == [] and result.digest is None
    assert verify(store).digest_ok is False


def test_cli_status_reports_progress_and_source(tmp_path, ckpt):
    uri = tmp_path / "p.zarr"
    store = PairStore.create(str(uri), **store_kwargs(n=40, chunk=8, source=source_for(ckpt)))
    generate_chunks(load_checkpoint(ckpt)[0], store, [0, 1, 4])
    out = CliRunner().invoke(pairs_app, ["status", str(uri)])
    assert out.exit_code == 0, out.output
    assert "3/5 chunks, 24/40 pairs (60.0%)" in out.output
    # rk4 with 40 steps: 160 model evaluations per chunk (one solve of 8 samples).
    assert "missing:   2-3" in out.output and "nfe spent: 480" in out.output
    assert store.source["checkpoint_sha256"] in out.output and "complete:  False" in out.output
    bad = CliRunner().invoke(pairs_app, ["status", str(tmp_path / "nope.zarr")])
    assert bad.exit_code == 2 and "no pair store at" in bad.output


def test_cli_verify_exit_codes_and_repair_from_source_uri(finished):
    runner = CliRunner()
    ok = runner.invoke(pairs_app, ["verify", str(finished)])
    assert ok.exit_code == 0 and "0 bad (none)" in ok.output
    flip_bytes(chunk_file(finished, "x0", 3))
    bad = runner.invoke(pairs_app, ["verify", str(finished)])
    assert bad.exit_code == 1 and "BAD chunk 3:" in bad.output and "1 bad (3)" in bad.output
    # The model comes from the store's source.model_uri (a local checkpoint file).
    fixed = runner.invoke(pairs_app, ["verify", "--repair", str(finished)])
    assert fixed.exit_code == 0, fixed.output
    assert "regenerated chunks 3" in fixed.output and "finalized: digest" in fixed.output
    assert_same_store(finished, finished.parent / "pristine.zarr")


def test_cli_repair_refuses_a_different_checkpoint(finished, other_ckpt, tmp_path):
    flip_bytes(chunk_file(finished, "x1", 0))
    before = tree_hash(finished)
    out = CliRunner().invoke(
        pairs_app, ["verify", "--repair", str(finished), "--checkpoint", str(other_ckpt)]
    )
    assert out.exit_code == 2 and "the store was generated by" in out.output
    assert tree_hash(finished) == before
    store = PairStore.open(str(finished))
    src = dict(store.source)
    # A store whose source is not a local file needs --checkpoint.
    g = zarr.open_group(str(finished), mode="r+")
    g.attrs["source"] = {**src, "model_uri": "models:/m-123"}
    out = CliRunner().invoke(pairs_app, ["verify", "--repair", str(finished)])
    assert out.exit_code == 2 and "pass --checkpoint PATH" in out.output


def test_cli_verify_in_a_real_subprocess(finished):
    flip_bytes(chunk_file(finished, "x1", 1))
    proc = run_py("-m", "flows.cli_pairs", "verify", finished)
    assert proc.returncode == 1, proc.stderr
    assert "BAD chunk 1:" in proc.stdout and "checksum" in proc.stdout
    proc = run_py("-m", "flows.cli_pairs", "verify", "--repair", finished)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_store(finished, finished.parent / "pristine.zarr")

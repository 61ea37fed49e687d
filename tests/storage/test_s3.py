"""Pair stores on ``s3://`` against a real S3 API (a moto server on loopback, through s3fs).

The same guarantees as local stores: a generation process killed with SIGKILL resumes to the bytes
of an uninterrupted local run, verify finds a corrupted object and repair restores it, and the
stream yields every pair once per epoch. Endpoint and credentials reach every process the way a
user sets them: ``AWS_*`` environment variables, or :func:`storage.location.set_storage_options`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import fsspec
import numpy as np
import pytest
import s3fs
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from flows.cli_pairs import pairs_app
from rf_core.training import load_checkpoint
from storage.generate import generate_chunks
from storage.generate_cli import source_from_checkpoint
from storage.layout import StoreExistsError
from storage.location import exists, set_storage_options
from storage.pairstore import PairStore, PairStoreError
from storage.stream import PairStream
from storage.verify import verify
from tests.storage.s3server import CREDENTIALS, start_moto, stop_moto, storage_options_undone
from tests.storage.storekit import REPO, fill_with_index, run_py, source_for, store_kwargs

BUCKET = "rf-pairs"
# 8 chunks of 16 pairs; rk4 with 120 steps makes each chunk real work, so a kill lands mid-run.
# 16 chunks: after the first done marker is seen there must be work left to kill, even when a
# loaded machine makes each S3 listing of the markers slower than a chunk (8 were too few).
N_CHUNKS, CHUNK = 16, 16
RECIPE = ["--n", str(N_CHUNKS * CHUNK), "--chunk", str(CHUNK), "--seed", "7", "--method", "rk4"]
RECIPE += ["--steps", "120"]


def _reset_fsspec() -> None:
    # fsspec caches filesystem instances by their arguments, not by the environment they read.
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server with bucket ``rf-pairs``; endpoint and keys in os.environ (inherited)."""
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint}.items():
                mp.setenv(key, value)
            for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
                mp.delenv(key, raising=False)
            _reset_fsspec()
            s3fs.S3FileSystem().mkdir(BUCKET)
            yield endpoint
    finally:
        _reset_fsspec()
        stop_moto(proc)


@pytest.fixture
def fs(s3) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(use_listings_cache=False)


@pytest.fixture
def fresh_conf(monkeypatch):
    """Undo set_storage_options: fsspec's config and the FSSPEC_* variables it exports."""
    with storage_options_undone(monkeypatch):
        yield


def new_uri(name: str) -> str:
    return f"s3://{BUCKET}/{name}-{random.getrandbits(32):08x}.zarr"


def gen_args(store: str, ckpt, *extra: str) -> list[str]:
    return ["-m", "storage.generate_cli", store, "--checkpoint", str(ckpt), *RECIPE, *extra]


def start(store: str, ckpt, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *gen_args(store, ckpt, *extra)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def done_count(uri: str) -> int:
    try:
        return int(PairStore.open(uri).done_mask().sum())
    except PairStoreError:  # not created yet, or attrs not written yet
        return 0


def snapshot(fs: s3fs.S3FileSystem, prefix: str) -> dict[str, bytes]:
    return {p: fs.cat_file(p) for p in fs.find(prefix)}


def all_pairs(store: PairStore) -> list[np.ndarray]:
    chunks = [store.read_chunk(i) for i in range(store.n_chunks)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(3)]


@pytest.mark.slow
def test_kill_9_on_s3_then_resume_equals_an_uninterrupted_local_store(s3, tmp_path, ckpt):
    # The uninterrupted local store, generated here with generate_cli's arguments.
    local, (model, meta) = str(tmp_path / "local.zarr"), load_checkpoint(ckpt)
    solver = {"method": "rk4", "steps": 120, "rtol": None, "atol": None, "batch_size": None}
    ref = PairStore.create(
        local, n=N_CHUNKS * CHUNK, chunk=CHUNK, sample_shape=tuple(model.config.data_shape), seed=7,
        source=source_from_checkpoint(str(ckpt), meta.get("extra") or {}), solver=solver,
        dataset="unknown", num_classes=model.config.num_classes,
    )  # fmt: skip
    generate_chunks(model, ref)
    ref.finalize()
    uri = new_uri("killed")
    assert not exists(uri)
    proc = start(uri, ckpt)
    deadline = time.monotonic() + 120
    # Wait for a first done marker, then kill at a random point of later work. (test_processes
    # kills local runs repeatedly; the resume logic is the same, so once is enough here.)
    while done_count(uri) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.25))
    if proc.poll() is not None:
        raise AssertionError(f"generation ended before it could be killed:\n{proc.stderr.read()}")
    proc.kill()  # SIGKILL: uploads cut wherever they are
    proc.wait()
    done = done_count(uri)
    assert exists(uri) and 0 < done < N_CHUNKS, done
    # A handle kept open while another process writes must see its markers (no stale listing).
    watch = PairStore.open(uri)
    out, err = start(uri, ckpt, "--finalize").communicate(timeout=300)
    assert f"skipped {done}" in out and "finalized: digest" in out, out + err
    ref, got = PairStore.open(local), PairStore.open(uri)
    assert got.attrs["digest"] == ref.attrs["digest"] is not None
    for a, b in zip(all_pairs(ref), all_pairs(got), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert (got.nfe() == ref.nfe()).all()
    assert watch.done_mask().all() and watch.chunk_exists("x1", N_CHUNKS - 1)


@pytest.fixture
def generated(s3, ckpt) -> str:
    """A finalized 4-chunk store on s3 generated in-process by the checkpoint's model."""
    uri = new_uri("gen")
    model, _ = load_checkpoint(ckpt)
    store = PairStore.create(uri, **store_kwargs(n=64, chunk=16, source=source_for(ckpt)))
    generate_chunks(model, store)
    store.finalize()
    return uri


def test_verify_flags_a_flipped_object_and_repair_restores_it(generated, fs):
    key = f"{generated[5:]}/{PairStore.open(generated).chunk_key('x1', 2)}"
    original = fs.cat_file(key)
    digest = PairStore.open(generated).attrs["digest"]
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    fs.pipe_file(key, bytes(damaged))
    report = verify(PairStore.open(generated))
    assert report.bad_chunks == [2] and "checksum do not match" in report.bad[0].reason
    cli = CliRunner()
    result = cli.invoke(pairs_app, ["verify", generated])
    assert result.exit_code == 1 and "BAD chunk 2" in result.output, result.output
    result = cli.invoke(pairs_app, ["verify", "--repair", generated])
    assert result.exit_code == 0, result.output
    assert "regenerated chunks 2" in result.output
    assert f"finalized: digest {digest}" in result.output
    assert fs.cat_file(key) == original
    # A data object deleted under a done marker is named too.
    fs.rm_file(f"{generated[5:]}/{PairStore.open(generated).chunk_key('y', 1)}")
    report = verify(PairStore.open(generated))
    assert report.bad_chunks == [1] and "y data is missing" in report.bad[0].reason


def test_stream_from_s3_yields_every_pair_once_per_epoch(s3):
    uri = new_uri("stream")
    store = PairStore.create(uri, **store_kwargs(n=100, chunk=16))
    fill_with_index(store)
    store.finalize()
    stream = PairStream(uri, batch_size=12, buffer_chunks=2)
    orders = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        seen = np.concatenate([x0[:, 0].numpy() for x0, _, _ in stream])
        assert sorted(seen.tolist()) == list(range(100))
        orders.append(seen.tolist())
    assert orders[0] != orders[1]  # reshuffled per epoch
    # Two DataLoader workers split the chunks between them and reopen the store themselves.
    stream.set_epoch(0)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    seen = np.concatenate([x0[:, 0].numpy() for x0, _, _ in loader])
    assert sorted(seen.tolist()) == list(range(100))


def test_a_round_trip_on_s3_closes_every_client_session(s3):
    # In a child process: its stderr shows what a user sees, exit included.
    uri = new_uri("sessions")
    proc = run_py("-W", "always::ResourceWarning", "-m", "tests.storage.s3_roundtrip", uri)
    assert proc.returncode == 0 and "round trip ok" in proc.stdout, proc.stdout + proc.stderr
    assert "Unclosed" not in proc.stderr, proc.stderr  # aiohttp's "Unclosed client session"
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_missing_bucket_is_named_with_what_to_do(s3):
    uri = "s3://no-such-bucket/p.zarr"
    for attempt in (
        lambda: PairStore.create(uri, **store_kwargs()),
        lambda: PairStore.open(uri),
        lambda: PairStore.open_or_create(uri, **store_kwargs()),
    ):
        with pytest.raises(PairStoreError, match="bucket 'no-such-bucket' does not exist") as e:
            attempt()
        assert uri in str(e.value) and "Create it first" in str(e.value)
    result = CliRunner().invoke(pairs_app, ["status", uri])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_wrong_credentials_are_named_with_what_to_do(s3, fresh_conf, tmp_path):
    proc, endpoint = start_moto(tmp_path, auth=True)  # knows no keys: every key is wrong
    try:
        set_storage_options("s3", {"endpoint_url": endpoint})
        uri = f"s3://{BUCKET}/p.zarr"
        for attempt in (
            lambda: PairStore.create(uri, **store_kwargs()),
            lambda: PairStore.open(uri),
        ):
            with pytest.raises(PairStoreError, match="permission denied") as e:
                attempt()
            assert uri in str(e.value) and "AWS_ACCESS_KEY_ID" in str(e.value)
    finally:
        stop_moto(proc)


def test_something_else_at_the_url_is_refused_and_left_alone(s3, fs):
    uri = new_uri("other")
    fs.pipe_file(f"{uri[5:]}/notes.txt", b"not a pair store")
    fs.pipe_file(f"{uri[5:]}/data/part-0.parquet", b"PAR1...")
    before = snapshot(fs, uri[5:])
    with pytest.raises(StoreExistsError, match="already exists"):
        PairStore.create(uri, **store_kwargs())
    with pytest.raises(PairStoreError, match=f"no pair store at {uri}: GroupNotFoundError"):
        PairStore.open(uri, mode="r+")
    with pytest.raises(PairStoreError, match=f"no pair store at {uri}"):
        PairStore.open_or_create(uri, **store_kwargs())
    assert snapshot(fs, uri[5:]) == before


@pytest.mark.slow
def test_storage_options_reach_child_processes(s3, fresh_conf, monkeypatch, ckpt):
    # Only the config path knows the endpoint now: no AWS_ENDPOINT_URL_S3 for anyone.
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    _reset_fsspec()
    set_storage_options("s3", {"endpoint_url": s3})
    assert "endpoint_url" in os.environ["FSSPEC_S3"]
    uri = new_uri("opts")
    proc = run_py(*gen_args(uri, ckpt, "--chunks", "0-1"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert PairStore.open(uri).missing_chunks() == list(range(2, N_CHUNKS))


def test_set_storage_options_rejects_bad_input(fresh_conf):
    with pytest.raises(PairStoreError, match="protocol must be"):
        set_storage_options("s3://", {})
    with pytest.raises(PairStoreError, match="storage_options for 's3' must be") as e:
        set_storage_options("s3", {"secret": "s3cr3t", "client_kwargs": object()})
    assert "client_kwargs" in str(e.value) and "s3cr3t" not in str(e.value)  # keys, not values
    assert "s3" not in fsspec.config.conf and "FSSPEC_S3" not in os.environ

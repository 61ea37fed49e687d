"""Pair-store size and throughput on s3:// (a moto server on loopback) vs a local directory.

    .venv/bin/python -m benchmarks.s3_store [--n 16384] [--chunks 256,1024,4096] [--repeat 2]

MNIST-shaped pairs (x0, x1: 1x28x28 float32, y int64) written with PairStore.write_chunk and read
back with read_chunk(out=...), one chunk at a time (what generation and streaming do). Results
are for README "Scaling out"; moto is not real S3: compare chunk sizes, not absolute MB/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from storage.pairstore import PairStore

SHAPE = (1, 28, 28)
# Credentials moto accepts; the config files point nowhere so that ~/.aws cannot leak in.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/rectiflow-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/rectiflow-aws-credentials",
}


@contextmanager
def moto_server(log: Path, timeout: float = 120.0) -> Iterator[str]:
    """A real S3 API on loopback: ``moto_server`` (moto[server], a dev dependency) in its own
    process on a free port, stopped on exit. Yields its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    endpoint, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    try:
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # an error page still means it is serving
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def kwargs(n: int, chunk: int) -> dict:
    return dict(
        n=n,
        chunk=chunk,
        sample_shape=SHAPE,
        seed=0,
        source={"checkpoint_sha256": "0" * 64},
        solver={"method": "euler", "steps": 4},
        dataset="mnist",
        num_classes=10,
    )


def one(uri: str, n: int, chunk: int, fs, root: str, rng) -> dict:
    store = PairStore.create(uri, **kwargs(n, chunk))
    x0 = rng.standard_normal((chunk, *SHAPE), dtype=np.float32)
    x1 = np.tanh(rng.standard_normal((chunk, *SHAPE), dtype=np.float32))
    y = rng.integers(0, 10, chunk).astype(np.int64)
    t = time.perf_counter()
    for i in range(store.n_chunks):
        store.write_chunk(i, x0, x1, y, nfe=4 * chunk)
    t_write = time.perf_counter() - t
    out = [np.empty_like(x0), np.empty_like(x1), np.empty_like(y)]
    store = PairStore.open(uri)
    t = time.perf_counter()
    for i in range(store.n_chunks):
        store.read_chunk(i, out=out)
    t_read = time.perf_counter() - t
    files = [p for p in fs.find(root) if not p.endswith("zarr.json")]
    size = sum(fs.info(p)["size"] for p in files)
    raw = n * (2 * 4 * int(np.prod(SHAPE)) + 8)
    return dict(
        chunk=chunk,
        n_chunks=store.n_chunks,
        bytes_per_pair=size / n,
        objects_per_chunk=len(files) / store.n_chunks,
        x_object_mib=fs.info(f"{root}/x0/c/0/0/0/0")["size"] / 2**20,
        write_mb_s=raw / t_write / 1e6,
        read_mb_s=raw / t_read / 1e6,
        write_ms_chunk=1e3 * t_write / store.n_chunks,
        read_ms_chunk=1e3 * t_read / store.n_chunks,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--chunks", default="256,1024,4096")
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        with moto_server(tmp / "moto.log") as endpoint:
            os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL_S3=endpoint)
            measure(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"loadavg after: {os.getloadavg()}")


def measure(a: argparse.Namespace, tmp: Path) -> None:
    """Print one row per (chunk size, s3 | local): the best of ``a.repeat`` write/read runs."""
    import fsspec
    import s3fs

    s3 = s3fs.S3FileSystem(use_listings_cache=False)
    s3.mkdir("bench")
    local = fsspec.filesystem("file")
    rng = np.random.default_rng(0)
    print(f"loadavg before: {os.getloadavg()}")
    cols = ("objects/chunk", "bytes/pair", "x-object-MiB", "write-MB/s", "read-MB/s")
    print("where  chunk " + " ".join(cols) + " write-ms/chunk read-ms/chunk")
    for chunk in map(int, a.chunks.split(",")):
        for where in ("s3", "local"):
            best = None
            for r in range(a.repeat):
                name = f"c{chunk}-r{r}.zarr"
                if where == "s3":
                    res = one(f"s3://bench/{name}", a.n, chunk, s3, f"bench/{name}", rng)
                    s3.rm(f"bench/{name}", recursive=True)
                else:
                    res = one(str(tmp / name), a.n, chunk, local, str(tmp / name), rng)
                if (
                    best is None
                    or res["read_mb_s"] + res["write_mb_s"] > best["read_mb_s"] + best["write_mb_s"]
                ):
                    best = res
            b = best
            print(
                f"{where:6s} {chunk:5d} {b['objects_per_chunk']:6.1f} "
                f"{b['bytes_per_pair']:10.1f} {b['x_object_mib']:8.2f} {b['write_mb_s']:9.1f} "
                f"{b['read_mb_s']:9.1f} {b['write_ms_chunk']:9.1f} {b['read_ms_chunk']:9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

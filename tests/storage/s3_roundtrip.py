"""A whole pair-store round trip on one ``s3://`` URL, run as a child process by test_s3.py.

Create, write, finalize, verify, stream through two forked DataLoader workers, then drop fsspec's
filesystem instances the way the test suite does between modules, and exit with a stream still
open. Every aiohttp session it opened must be closed by then: the test reads this process's
stderr for aiohttp's "Unclosed client session".

    python -W always::ResourceWarning -m tests.storage.s3_roundtrip s3://bucket/p.zarr
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import s3fs
from torch.utils.data import DataLoader

from storage.pairstore import PairStore
from storage.stream import PairStream
from storage.verify import verify
from tests.storage.storekit import fill_with_index, store_kwargs


def main(uri: str) -> None:
    store = PairStore.create(uri, **store_kwargs(n=40, chunk=8))
    fill_with_index(store)
    store.finalize()
    assert verify(PairStore.open(uri)).ok
    stream = PairStream(uri, batch_size=8, buffer_chunks=2)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    seen = np.concatenate([x0[:, 0].numpy() for x0, _, _ in loader])
    assert sorted(seen.tolist()) == list(range(40)), seen
    del store, loader
    s3fs.S3FileSystem.clear_instance_cache()
    gc.collect()
    assert sorted(float(x) for x, _ in PairStore.open(uri).read_chunk(1)[0]) == list(range(8, 16))
    print("round trip ok", flush=True)  # `stream` stays open until the interpreter exits


if __name__ == "__main__":
    main(sys.argv[1])

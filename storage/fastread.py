"""Whole-chunk reads of uncompressed local chunk objects straight into a caller's buffer.

Why this exists: zarr reads a chunk object into freshly allocated bytes, checks the crc32c,
then copies the values into the caller's array. On machines where fresh memory costs a page
fault per 4 KiB (measured ~1 GB/s here, against ~9 GB/s for a copy into memory already in use),
that allocation is most of a read. When the object on disk is exactly the chunk's bytes followed
by their crc32c (codecs ``[bytes (little-endian), crc32c]``, the store's default for x0, x1 and
y), reading it with ``readinto`` into the caller's (reused) array and checking the crc32c there
is one pass into warm memory and returns the same numbers zarr would. Anything else -- other
codecs, object storage, a partial last chunk -- is read by zarr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec


def is_plain(array: zarr.Array) -> bool:
    """True when ``array``'s chunk objects are its raw little-endian bytes + a crc32c."""
    codecs = array.metadata.codecs
    return (
        sys.byteorder == "little"
        and len(codecs) == 2
        and isinstance(codecs[0], BytesCodec)
        and (codecs[0].endian is None or codecs[0].endian.value == "little")
        and isinstance(codecs[1], Crc32cCodec)
    )


def read_plain_chunk(path: str | Path, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous, the whole chunk's shape and dtype) from one chunk object.

    Raises:
        ValueError: the object has the wrong size or its crc32c does not match (``out`` then
            holds garbage: the caller must not use it).
    """
    view = memoryview(out).cast("B")
    with open(path, "rb", buffering=0) as f:
        n = 0
        while n < view.nbytes:  # a read may return short; loop until the chunk is in
            got = f.readinto(view[n:])
            if not got:
                break
            n += got
        tail = f.read(5)
    if n != view.nbytes or len(tail) != 4:
        size, want = n + len(tail), view.nbytes + 4
        raise ValueError(f"chunk object {path} is {size} bytes, expected {want}")
    if google_crc32c.value(out.reshape(-1).view(np.uint8)) != int.from_bytes(tail, "little"):
        raise ValueError(f"checksum mismatch: the stored and computed crc32c of {path} differ")

"""Whole-chunk reads of local chunk objects straight into a caller's buffer, without zarr.

Why this exists: zarr reads a chunk object into freshly allocated bytes, checks the crc32c,
then copies the values into the caller's array, all through its asyncio loop (~1 ms a call, a
thread hop for zstd). On machines where fresh memory costs a page fault per 4 KiB (measured
~1 GB/s here, against ~9 GB/s for a copy into memory already in use), that allocation is most of
a read. When the object on disk is exactly the chunk's bytes followed by their crc32c (codecs
``[bytes (little-endian), crc32c]``, the store's default for x0 and x1), reading it with
``readinto`` into the caller's (reused) array and checking the crc32c there is one pass into warm
memory and returns the same numbers zarr would. Objects compressed with zstd in between (the
default for y) are checked and decoded here in one call (zarr takes ~1 ms for 8 KiB of labels).

For a reader that only needs to look at a chunk (the training stream), :func:`map_plain_chunk`
goes one step further: it maps the object's pages from the page cache instead of copying them
(a kernel copy into a large buffer measured ~2.4 GB/s here, mapping plus checking ~8 GB/s), checks
the crc32c over the mapping and hands back a read-only view. Safe against concurrent writers
because zarr's local store replaces an object by renaming a new file over it: a mapping keeps the
old file's pages, which nobody writes in place. (A file truncated in place while mapped would
raise SIGBUS on access; nothing in rectiflow or zarr does that.)

Checksums use the ``crc32c`` package, which releases the GIL while it runs (google_crc32c, which
zarr uses, does not): a stream's background reader then never stalls the training thread.

Anything else -- other codecs, object storage, a partial last chunk -- is read by zarr.
"""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import crc32c
import numpy as np
import zarr
from numcodecs import zstd
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec


def direct_kind(array: zarr.Array) -> str | None:
    """How ``array``'s chunk objects can be read straight from their files, if at all.

    Returns:
        "plain" for raw little-endian bytes + crc32c, "zstd" for the same bytes zstd-compressed
        + crc32c, None for anything else (read by zarr).
    """
    serializer, compressors = array.serializer, array.compressors
    little = isinstance(serializer, BytesCodec) and (
        serializer.endian is None or serializer.endian.value == "little"
    )
    if sys.byteorder != "little" or not little or array.filters or not compressors:
        return None
    middle, last = compressors[:-1], compressors[-1]
    if not isinstance(last, Crc32cCodec):
        return None
    if not middle:
        return "plain"
    if len(middle) == 1 and isinstance(middle[0], ZstdCodec):
        return "zstd"
    return None


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
    _check_crc(path, out.reshape(-1).view(np.uint8), tail)


def map_plain_chunk(path: str | Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only view of one plain chunk object's values, mapped from the page cache.

    The crc32c is checked over the mapping before it is returned; the mapping lives as long as
    the returned array (or any view of it) does.

    Raises:
        ValueError: the object has the wrong size or its crc32c does not match.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size != nbytes + 4:
            raise ValueError(f"chunk object {path} is {size} bytes, expected {nbytes + 4}")
        if hasattr(mmap, "MAP_POPULATE"):  # Linux: map every page now, in one system call
            flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
            raw = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
        else:
            raw = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    data = np.frombuffer(raw, np.uint8)
    _check_crc(path, data[:-4], data[-4:].tobytes())
    return data[:-4].view(dtype).reshape(shape)


def read_zstd_chunk(path: str | Path, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous, the whole chunk) from a zstd-compressed chunk object.

    Raises:
        ValueError: the crc32c does not match, or the bytes do not decode to exactly ``out``'s.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"chunk object {path} is {len(raw)} bytes, too short for a crc32c")
    payload = np.frombuffer(raw, np.uint8)[:-4]  # a view: no copy
    _check_crc(path, payload, raw[-4:])
    try:
        data = zstd.decompress(payload)
    except RuntimeError as e:
        raise ValueError(f"chunk object {path} does not decode as zstd ({e})") from e
    if len(data) != out.nbytes:
        raise ValueError(f"chunk object {path} decodes to {len(data)} bytes, expected {out.nbytes}")
    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)


def _check_crc(path: str | Path, data: np.ndarray, tail: bytes) -> None:
    """Raise ValueError unless ``tail`` (4 bytes, little-endian) is the crc32c of ``data``."""
    if crc32c.crc32c(data) != int.from_bytes(tail, "little"):
        raise ValueError(f"checksum mismatch: the stored and computed crc32c of {path} differ")

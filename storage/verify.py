"""Check a pair store chunk by chunk, and regenerate the chunks that fail.

A chunk is bad when its done marker is set but the data cannot be trusted: a crc32c checksum
mismatch or undecodable object (Zarr raises), data objects missing, NaN/Inf in x1, or an unreadable
marker. Because chunk i's inputs depend on (seed, i) only, regenerating a bad chunk with the store's
source model gives back exactly the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from storage.generate import GenStats, generate_chunks
from storage.layout import ChunkCorruptError, PairStoreError, format_ranges
from storage.pairstore import PairStore


@dataclass(frozen=True)
class ChunkProblem:
    """One bad chunk: its index and what is wrong."""

    index: int
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify`.

    Attributes:
        uri: the store.
        n_chunks: chunks in the store.
        checked: done chunks whose data was read and checked.
        missing: chunks not generated yet (marker unset) -- not an error, but not complete either.
        bad: chunks marked done whose data is corrupt, missing or non-finite.
        digest_ok: for a finalized store, whether the recomputed digest matches the stored one
            (None when the store is not finalized or has bad chunks).
    """

    uri: str
    n_chunks: int
    checked: int
    missing: list[int] = field(default_factory=list)
    bad: list[ChunkProblem] = field(default_factory=list)
    digest_ok: bool | None = None

    @property
    def ok(self) -> bool:
        """No bad chunk and no digest mismatch (missing chunks are allowed)."""
        return not self.bad and self.digest_ok is not False

    @property
    def bad_chunks(self) -> list[int]:
        return [p.index for p in self.bad]


def verify(store: PairStore) -> VerifyReport:
    """Read every done chunk once: checksums, presence of data, finite x1, and the digest.

    Args:
        store: an open store (any mode).

    Returns:
        A VerifyReport naming every bad chunk by index.
    """
    missing, bad, digests = [], [], []
    for i in range(store.n_chunks):
        try:
            if not store.is_done(i):
                missing.append(i)
                continue
            digests.append(store.chunk_digest(i))
        except ChunkCorruptError as e:
            bad.append(ChunkProblem(i, str(e)))
    digest_ok = None
    if store.is_finalized and not bad and not missing:
        digest_ok = store.compute_digest(digests) == store.attrs["digest"]
    return VerifyReport(store.uri, store.n_chunks, len(digests), missing, bad, digest_ok)


@dataclass(frozen=True)
class RepairResult:
    """Result of :func:`repair`.

    Attributes:
        before: the report that chose what to regenerate.
        regenerated: chunk ids regenerated.
        stats: generation stats of the regeneration.
        digest: new digest when the store could be finalized (no chunk missing), else None.
        previous_digest: the digest stored before the repair (None if it was not finalized).
    """

    before: VerifyReport
    regenerated: list[int]
    stats: GenStats | None
    digest: str | None
    previous_digest: str | None


def repair(store: PairStore, model: nn.Module, device: str | torch.device = "cpu") -> RepairResult:
    """Regenerate every bad chunk with ``model``, then finalize if no chunk is missing.

    A digest mismatch on intact chunks is not repaired (no chunk to blame); it stays in the report.

    ``model`` must be the store's source model (the caller checks the checkpoint hash, see
    ``rectiflow pairs verify --repair``); then the regenerated chunks equal the originals and the
    digest comes back unchanged. Coordinator only: it rewrites the ``complete``/``digest`` attrs.

    Args:
        store: a store opened with mode "r+".
        model: the store's source model (may be None when nothing turns out bad).
        device: where to solve.

    Returns:
        RepairResult.
    """
    store.require_writable()
    before = verify(store)
    previous = store.attrs.get("digest")
    stats = None
    if before.bad:
        if model is None:
            raise PairStoreError(
                f"pair store {store.uri}: chunks {format_ranges(before.bad_chunks)} are bad and "
                "no model was given to regenerate them"
            )
        store.set_completion(False, None)  # readers must not trust it while it is repaired
        for i in before.bad_chunks:
            store.clear_marker(i)
        stats = generate_chunks(model, store, before.bad_chunks, device=device)
    # A digest mismatch with every chunk intact cannot be pinned to a chunk: leave it reported.
    digest = None
    if not store.missing_chunks() and before.digest_ok is not False:
        digest = store.attrs["digest"] if store.is_finalized else store.finalize()
    return RepairResult(before, before.bad_chunks, stats, digest, previous)

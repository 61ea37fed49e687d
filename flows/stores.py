"""The pair store a command or flow argument names, looked at (never written) and checked.

Kept apart from flows/inputs.py so that ``rectiflow pairs`` needs no MLflow import.
"""

from __future__ import annotations

from pathlib import Path

from flows.errors import InputError, bad_input
from storage.location import exists, is_local
from storage.pairstore import PairStore, PairStoreError


def existing_store(uri: str, field: str = "store", mode: str = "r") -> PairStore | None:
    """The pair store at ``uri`` (opened with ``mode``); None when nothing is there; an
    InputError naming ``field`` when something else is."""
    with bad_input(field):
        if not exists(uri):  # a missing bucket or no access is reported here, naming the URL
            if is_local(uri) and Path(uri).expanduser().is_dir():
                raise ValueError(f"{uri} is an empty folder, not a pair store: remove it first")
            return None
    try:
        return PairStore.open(uri, mode=mode)
    except PairStoreError as e:
        if not str(e).startswith("no pair store at"):  # another schema, no access: as said
            raise InputError(f"{field}: {e}") from e
        # Something is there, but no Zarr group at all (zarr's error names its internals).
        raise InputError(
            f"{field}: {uri} holds something that is not a pair store (nothing was changed)"
        ) from e


def store_arg(uri: str, field: str = "store", mode: str = "r") -> PairStore:
    """The existing pair store at ``uri``, or an InputError naming ``field``."""
    store = existing_store(uri, field, mode)
    if store is None:
        raise InputError(f"{field}: no pair store at {uri}: nothing exists there")
    return store

"""Where pair stores live: local paths and fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...).

Local paths and ``file://`` URLs use zarr's LocalStore; any other scheme goes through fsspec (zarr's
FsspecStore needs an async filesystem, which s3fs is). Options of remote filesystems (endpoint,
credentials, ...) come from fsspec's config: :func:`set_storage_options`, the ``FSSPEC_<PROTOCOL>``
environment variables, or the filesystem's own environment (``AWS_*`` for s3fs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
import zarr
from fsspec.core import split_protocol
from zarr.storage import FsspecStore, LocalStore

from storage.layout import (
    DATA_ARRAYS,
    MARKER_ARRAYS,
    SCHEMA,
    PairStoreError,
    StoreExistsError,
    create_arrays,
)
from storage.sessions import close_with

LOCAL_PROTOCOLS = (None, "file", "local")
# Other processes add objects and markers all the time; a cached directory listing (s3fs keeps one
# per filesystem instance) would hide them, so remote filesystems are opened without one.
REMOTE_DEFAULTS: dict[str, Any] = {"use_listings_cache": False}


def set_storage_options(protocol: str, options: Mapping[str, Any]) -> None:
    """Default fsspec options for every store URL of ``protocol``, here and in child processes.

    One call with the pipeline's ``pairs.storage_options``, e.g.
    ``set_storage_options("s3", {"endpoint_url": "http://minio:9000"})``. The options are merged
    into ``fsspec.config.conf[protocol]`` (fsspec applies it to every filesystem it creates,
    zarr's included) and exported as the JSON variable ``FSSPEC_<PROTOCOL>``, which fsspec reads
    at import in every process started afterwards (generation workers, spawned DataLoader
    workers). Handles opened before the call keep their old options.

    Args:
        protocol: fsspec protocol, e.g. "s3", "gcs".
        options: JSON-serializable keyword arguments of that filesystem (for s3fs: endpoint_url,
            key, secret, profile, client_kwargs, ...).

    Raises:
        PairStoreError: a bad protocol name or options that are not a JSON object.
    """
    if not isinstance(protocol, str) or not protocol.isalnum():
        raise PairStoreError(f"storage options: protocol must be a name like 's3': {protocol!r}")
    try:
        merged = {**fsspec.config.conf.get(protocol, {}), **options}
        encoded = json.dumps(merged)
    except (TypeError, ValueError) as e:
        raise PairStoreError(
            # Name the keys only: values may be secrets.
            f"storage_options for {protocol!r} must be a dict of JSON values ({e}); keys given: "
            f"{sorted(options) if isinstance(options, Mapping) else type(options).__name__}"
        ) from e
    fsspec.config.conf[protocol] = merged
    os.environ[f"FSSPEC_{protocol.upper()}"] = encoded


def is_local(uri: str) -> bool:
    return split_protocol(uri)[0] in LOCAL_PROTOCOLS


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``uri`` (remote ones without a listings cache)."""
    return fsspec.core.url_to_fs(uri, **({} if is_local(uri) else REMOTE_DEFAULTS))


def zarr_store(uri: str, read_only: bool) -> zarr.abc.store.Store:
    """A local directory store for plain paths and file:// URLs, fsspec for any other scheme."""
    if is_local(uri):
        return LocalStore(split_protocol(uri)[1], read_only=read_only)
    store = FsspecStore.from_url(uri, storage_options=dict(REMOTE_DEFAULTS), read_only=read_only)
    close_with(store.fs)
    return store


def open_group(uri: str, mode: str) -> zarr.Group:
    """The zarr group of the ``rf-pairs/1`` store at ``uri``, opened with mode "r" or "r+".

    Raises:
        PairStoreError: bad mode, nothing at ``uri``, not a pair store, or no access.
    """
    if mode not in ("r", "r+"):
        raise PairStoreError(f"mode must be 'r' or 'r+', got {mode!r}")
    # Look before opening: a writable LocalStore would create the directory it opens.
    if not exists(uri):
        raise PairStoreError(f"no pair store at {uri}: nothing exists there")
    try:
        group = zarr.open_group(zarr_store(uri, read_only=mode == "r"), mode=mode)
    except PermissionError as e:
        raise access_error(uri, e) from e
    except (zarr.errors.GroupNotFoundError, OSError) as e:
        raise PairStoreError(f"no pair store at {uri}: {type(e).__name__}: {e}") from e
    schema = group.attrs.get("schema")
    missing = [a for a in (*DATA_ARRAYS, *MARKER_ARRAYS) if a not in group]
    if schema != SCHEMA or missing:
        raise PairStoreError(
            f"{uri} is not a {SCHEMA} pair store (schema={schema!r}, missing arrays={missing})"
        )
    return group


def create_group(uri: str, attrs: Mapping[str, Any], compressors: Mapping[str, list]) -> zarr.Group:
    """Create the group and arrays of a new store at ``uri``, attrs last.

    Raises:
        StoreExistsError: something is already there (perhaps a concurrent creator).
        PairStoreError: the location is not writable.
    """
    if exists(uri):
        raise StoreExistsError(
            f"cannot create pair store at {uri}: something already exists there. Open it with "
            "PairStore.open / open_or_create to resume, or choose a new URI."
        )
    try:
        claim_location(uri)
        group = zarr.open_group(zarr_store(uri, read_only=False), mode="w-", zarr_format=3)
        create_arrays(group, attrs, compressors)
        # Attrs last, in ONE write of zarr.json: a store without its schema attr is never
        # mistaken for a usable one. (zarr's ``attrs.update`` writes once per key, so a
        # concurrent opener could see the schema before the solver.)
        return group.update_attributes(attrs)
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as e:
        raise StoreExistsError(
            f"cannot create pair store at {uri}: it already exists (an empty folder counts: "
            "remove it or choose a new URI)"
        ) from e
    except PermissionError as e:
        raise access_error(uri, e) from e
    except OSError as e:
        raise PairStoreError(
            f"cannot create pair store at {uri}: location not writable ({e})"
        ) from e


def access_error(uri: str, e: OSError) -> PairStoreError:
    """A PairStoreError naming ``uri`` and what to check for an OSError raised while using it."""
    if isinstance(e, PermissionError):
        return PairStoreError(
            f"cannot access {uri}: permission denied ({e}). Check the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE for s3://, or the "
            "storage_options 'key'/'secret') and that they may list, read and write there."
        )
    return PairStoreError(f"cannot access {uri}: {type(e).__name__}: {e}")


def check_bucket(uri: str) -> None:
    """Raise a PairStoreError naming the bucket if the bucket of a remote URL does not exist."""
    if is_local(uri):
        return
    fs, root = filesystem(uri)
    bucket = root.split("/", 1)[0]
    try:
        found = not bucket or "/" not in root or fs.exists(bucket)
    except OSError as e:
        raise access_error(uri, e) from e
    if not found:
        protocol = split_protocol(uri)[0]
        raise PairStoreError(
            f"cannot use {uri}: bucket {bucket!r} does not exist (or these credentials cannot "
            f"see it). Create it first (e.g. `aws s3 mb {protocol}://{bucket}`, or in the MinIO "
            "console) or fix the URL; for a non-AWS endpoint set AWS_ENDPOINT_URL_S3 or "
            "storage_options endpoint_url."
        )


def exists(uri: str) -> bool:
    """True if anything (file, directory, object prefix) exists at ``uri``.

    Raises:
        PairStoreError: access denied, or the bucket of a remote URL does not exist.
    """
    fs, root = filesystem(uri)
    try:
        found = fs.exists(root) and (not fs.isdir(root) or bool(fs.ls(root)))
    except PermissionError as e:
        raise access_error(uri, e) from e
    except OSError:
        return True  # cannot even look: treat as existing so nothing gets overwritten
    if not found:
        check_bucket(uri)
    return found


def claim_location(uri: str) -> None:
    """Atomically claim a local store directory (mkdir fails if another creator got there first).

    Object stores have no atomic create: only check that the bucket is there.
    """
    protocol, path = split_protocol(uri)
    if protocol not in LOCAL_PROTOCOLS:
        check_bucket(uri)
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # the parent is a file, not a folder
        raise NotADirectoryError(f"{target.parent} is not a directory") from e
    target.mkdir()  # FileExistsError, even for an empty folder: it may be another creator's claim


def looks_like_partial_store(uri: str) -> bool:
    """True for a directory holding nothing but pair-store entries (a store being created)."""
    fs, root = filesystem(uri)
    try:
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    except (OSError, NotADirectoryError):
        return False
    return fs.isdir(root) and names <= {"zarr.json", *DATA_ARRAYS, *MARKER_ARRAYS}

"""Closing the client sessions of remote stores (s3fs's aiohttp sessions) instead of leaking them.

zarr opens a remote store through an *asynchronous* fsspec filesystem, one per set of options,
kept in fsspec's instance cache. s3fs closes the session of a synchronous filesystem when the
instance is garbage-collected, but leaves an asynchronous one's to its user: once the instance is
dropped (fsspec's cache cleared, or the process exiting) it is collected with its session open,
and aiohttp logs ``ERROR | asyncio - Unclosed client session``. :func:`close_with` closes it on
zarr's event loop, where it was opened: when the filesystem is collected, or at exit for the ones
still in use (before zarr stops its loop).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import weakref
from typing import Any

import fsspec

from storage import zarr_internals

_closers: dict[int, weakref.finalize] = {}  # id(filesystem) -> what closes its session
_orphans: list[Any] = []  # sessions of a parent process, kept from being collected in a child


def close_with(fs: fsspec.AbstractFileSystem) -> None:
    """Close ``fs``'s client session when ``fs`` is garbage-collected or the process exits.

    Only asynchronous filesystems with an awaitable ``set_session`` (s3fs) have one; any other
    filesystem is left as it is. Opens the session now, on zarr's event loop (the first request
    would open it there anyway).
    """
    connect = getattr(fs, "set_session", None)
    if not getattr(fs, "asynchronous", False) or not asyncio.iscoroutinefunction(connect):
        return
    known = _closers.get(id(fs))
    if known is not None and known.alive and known.peek()[0] is fs:
        return
    try:
        client, loop = zarr_internals.gather(_connect(fs))[0]
    except Exception:  # e.g. a malformed endpoint: the first request reports it, naming the URL
        return
    closer = weakref.finalize(fs, _close, client, loop, os.getpid())
    closer.atexit = False  # _close_all does it at exit, while zarr's loop still runs
    for key in [k for k, c in _closers.items() if not c.alive]:
        del _closers[key]
    _closers[id(fs)] = closer


async def _connect(fs: fsspec.AbstractFileSystem) -> tuple[Any, asyncio.AbstractEventLoop]:
    return await fs.set_session(), asyncio.get_running_loop()


def _close(client: Any, loop: asyncio.AbstractEventLoop, pid: int) -> None:
    """Close ``client`` (an aiobotocore client: its aiohttp session) on ``loop``."""
    if os.getpid() != pid:  # a forked child: the parent's loop has no thread here
        _orphans.append(client)  # collected here, it would report itself unclosed
        return
    if loop.is_closed() or not loop.is_running():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # collected on zarr's own thread: it cannot wait for itself
        loop.create_task(client.close())
        return
    with contextlib.suppress(Exception):  # a server gone away: nothing more to close
        asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)


@atexit.register  # registered after zarr's own exit hook (imported above), so it runs first
def _close_all() -> None:
    for closer in list(_closers.values()):
        closer()

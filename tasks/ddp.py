"""Data-parallel training processes: rank 0 is the training task's process; the others follow.

The other processes come from one of two places:

- ``torchrun --nproc_per_node N -m flows.cli train-reflow ...`` starts N copies of a command.
  Rank 0 runs the flow as usual; the CLI of every other rank starts no flow and calls
  :func:`follow` (``env://``: torchrun's rendezvous), which waits for rank 0's work.
- Without torchrun, a stage whose ``execution.train_devices`` is N > 1 starts N - 1 follower
  processes itself (``python -m tasks.ddp``), on 127.0.0.1, one per device.

Either way rank 0 sends every follower the :class:`~tasks.fitjob.Work` (or None when the stage
needs no training, e.g. it was reused), each process trains its share, and only rank 0 writes
states, MLflow metrics and Prefect artifacts. A follower exits when its parent dies; a follower
that dies makes rank 0's next collective fail, which fails the stage (its states are kept).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rf_core import distributed
from rf_core.distributed import World
from tasks.fitjob import Work, run_work

ROOT = Path(__file__).resolve().parents[1]
FOLLOWER_EXIT_S = 120.0  # how long rank 0 waits for followers to finish after its own training


def torchrun_world() -> World | None:
    """This process's place when torchrun started it (``RANK``/``WORLD_SIZE``), else None."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_followers(address: str, devices: tuple[str, ...]) -> list[subprocess.Popen]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env, n = {**os.environ, "PYTHONPATH": path}, len(devices)
    out = []
    for rank in range(1, n):
        args = [sys.executable, "-m", "tasks.ddp", address, str(rank), str(n), devices[rank]]
        out.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
    return out


@contextmanager
def group(devices: tuple[str, ...]) -> Iterator[World]:
    """Rank 0's process group of ``len(devices)`` processes (under torchrun: its processes;
    else followers started here, stopped if training fails). Yields rank 0's World."""
    outside = torchrun_world()
    followers: list[subprocess.Popen] = []
    if outside is not None:
        world, address = outside, "env://"
    else:
        world, address = World(0, len(devices)), f"tcp://127.0.0.1:{_free_port()}"
        followers = _start_followers(address, devices)
    ok = False
    try:
        distributed.init(address, world, devices[0])
        yield world
        ok = True
    finally:
        try:
            distributed.close(sync=ok)
        finally:
            _finish(followers, ok)


def _finish(followers: list[subprocess.Popen], ok: bool) -> None:
    """Wait for the followers after a success (a failed one fails the stage), else stop them."""
    failed = []
    for p in followers:
        if not ok:
            p.kill()
        try:
            p.wait(timeout=FOLLOWER_EXIT_S if ok else 30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if ok and p.returncode != 0:
            failed.append(f"pid {p.pid} exited {p.returncode}")
    if failed:
        raise RuntimeError(f"data-parallel follower processes failed: {', '.join(failed)}")


def follow(address: str, world: World, device: str) -> None:
    """A follower's whole life: join the group, take rank 0's work (or None), train, leave."""
    distributed.init(address, world, device)
    done = False
    try:
        work = distributed.broadcast(None, world)
        if work is not None:
            run_work(work, world, device=device)
        done = True
    finally:
        distributed.close(sync=done)


def release_followers(device: str) -> None:
    """Under torchrun, rank 0's last word when it trained nothing (a reused stage, an error
    before training): the followers get None and exit. ``device``: rank 0's training device
    (the backend must be the followers')."""
    world = torchrun_world()
    if world is None or world.rank != 0 or _SERVED.is_set():
        return
    distributed.init("env://", world, device)
    sent = False
    try:
        distributed.broadcast(None, world)
        sent = True
    finally:
        distributed.close(sync=sent)


_SERVED = threading.Event()  # rank 0 has sent its followers their work (under torchrun)


def share(work: Work, world: World) -> Work:
    """Rank 0 sends ``work`` to every follower (and notes it has)."""
    _SERVED.set()
    return distributed.broadcast(work, world)


def _exit_with_parent() -> None:
    """Exit when the process that started this one dies (its pid changes to a reaper's)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.ddp ADDRESS RANK WORLD DEVICE``: a follower started by :func:`group`."""
    p = argparse.ArgumentParser(prog="python -m tasks.ddp", description=__doc__)
    p.add_argument("address")
    p.add_argument("rank", type=int)
    p.add_argument("world", type=int)
    p.add_argument("device")
    a = p.parse_args(argv)
    _exit_with_parent()
    follow(a.address, World(a.rank, a.world), a.device)


if __name__ == "__main__":
    main()

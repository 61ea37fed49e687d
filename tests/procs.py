"""Small helpers for tests that start servers as subprocesses (no pytest or project imports)."""

from __future__ import annotations

import socket
import subprocess


def stop_process(proc) -> None:
    """Terminate a server subprocess, then kill it if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

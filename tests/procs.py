"""Small helpers for tests that start servers as subprocesses (no pytest or project imports)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request


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


def wait_healthy(url: str, proc, log, timeout_s: float = 240, path: str = "/health") -> None:
    """Poll ``url + path`` until it answers 200 (a loaded 2-core machine needs ~50-80 s for an
    MLflow server). Raises RuntimeError with the log's tail if the process exits or time runs
    out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def start_group(cmd: list[str], log, env: dict[str, str]):
    """Start ``cmd`` in its own process group (servers fork workers), output into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop_group(proc) -> None:
    """SIGTERM the process group of ``proc`` (from :func:`start_group`), SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def mlflow_server_cmd(bin_dir, backend: str, port: int, *extra: str) -> list[str]:
    """``mlflow server`` on 127.0.0.1 with one worker (``bin_dir``: the venv's bin folder)."""
    return [
        str(bin_dir / "mlflow"), "server", "--backend-store-uri", backend,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra,
    ]  # fmt: skip


# The job runner (GenAI scorers) of an MLflow server would start a dozen extra processes.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

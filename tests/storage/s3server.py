"""A real S3 API for tests: a moto server on 127.0.0.1, started as a subprocess and stopped after.

moto keeps the objects in the server's memory; every request goes over HTTP on loopback, through
s3fs/aiobotocore exactly as it would to AWS or MinIO.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.procs import free_port, stop_process

# What a user sets for a non-AWS endpoint; fixtures put these in os.environ, so every child
# process (generation workers, CLIs) inherits them. The config files point nowhere so that a
# developer's ~/.aws cannot leak in.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/rectiflow-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/rectiflow-aws-credentials",
}


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an error page (e.g. 403 with auth on) still means it is serving
    except OSError:
        return False
    return True


def start_moto(log_dir: Path, auth: bool = False, timeout: float = 120.0):
    """Start ``moto_server`` on a free port and wait until it answers HTTP.

    Args:
        log_dir: where its output goes (read it when a test fails).
        auth: check credentials on every request (then only keys created in moto's IAM are
            valid, so any key given here is rejected as unknown).
        timeout: seconds to wait for it to serve (generous: the machine may be loaded).

    Returns:
        (process, endpoint URL like "http://127.0.0.1:PORT").
    """
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else dict(os.environ)
    log = open(log_dir / f"moto-{port}.log", "wb")  # noqa: SIM115
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=log
    )
    log.close()  # the child holds its own copy
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not _answers(endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_moto(proc)
            text = (log_dir / f"moto-{port}.log").read_text(errors="replace")
            raise RuntimeError(f"moto_server on port {port} did not start:\n{text[-2000:]}")
        time.sleep(0.2)
    return proc, endpoint


def stop_moto(proc: subprocess.Popen) -> None:
    stop_process(proc)


@contextmanager
def storage_options_undone(monkeypatch) -> Iterator[None]:
    """Run with no FSSPEC_* variables, then undo what set_storage_options did: fsspec's config
    and the FSSPEC_* variables it exported (later tests' child processes would inherit them)."""
    import fsspec
    import s3fs

    saved = copy.deepcopy(fsspec.config.conf)
    for key in [k for k in os.environ if k.startswith("FSSPEC_")]:
        monkeypatch.delenv(key)
    try:
        yield
    finally:
        fsspec.config.conf.clear()
        fsspec.config.conf.update(saved)
        for key in [k for k in os.environ if k.startswith("FSSPEC_")]:
            del os.environ[key]
        # fsspec caches filesystem instances by their arguments, not by the config they read.
        s3fs.S3FileSystem.clear_instance_cache()

"""Where MLflow tracks: the runs folder's SQLite DB, or a tracking server over HTTP.

Precedence: ``tracking.uri`` of the config, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///<runs_dir>/mlflow.db``. With SQLite (or any database URI) experiments get an explicit
artifact root under the runs folder. With a server (``http(s)://``) they get the server's default
root: its ``--serve-artifacts`` proxy or ``--default-artifact-root``, so every worker writes to the
same place; artifacts we read back (checkpoints) are then downloaded through the client into
``<runs_dir>/mlflow-cache``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import requests
import urllib3
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

ENV_URI = "MLFLOW_TRACKING_URI"
# MLflow's UI opens an experiment of this kind on its runs (not on the GenAI trace overview).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# A dead server must fail in seconds: MLflow's own client retries 7 times with backoff (minutes).
PROBE_TIMEOUT_S = 15
_cache_root: Path | None = None  # set by configure(): where remote artifacts are downloaded


class TrackingServerError(ValueError):
    """The configured MLflow tracking server does not answer.

    A ValueError: like a bad argument, it is a settings problem found before any work starts.
    """


def is_server(uri: str) -> bool:
    """True for a tracking server reached over HTTP(S) (not a local file or database)."""
    return urlparse(uri).scheme in ("http", "https")


def tracking_uri(runs_dir: str | Path, uri: str | None = None) -> str:
    """``uri`` (the config's ``tracking.uri``) if given, else ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///<absolute runs_dir>/mlflow.db``."""
    return uri or os.environ.get(ENV_URI) or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def _setting(uri: str | None) -> str:
    """Which setting chose the tracking URI (for error messages)."""
    return "tracking.uri in the config" if uri else ENV_URI


def check_server(uri: str, setting: str = ENV_URI) -> None:
    """One API call without retries, bounded by :data:`PROBE_TIMEOUT_S`.

    Raises:
        TrackingServerError: naming ``setting`` and what to do when the server does not answer
            (or answers as something other than an MLflow server).
    """
    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=PROBE_TIMEOUT_S,
            params={"max_results": 1},
        )
        problem = None if response.status_code == 200 else _wrong_answer(response.status_code)
    except MlflowException as e:
        problem = f"did not answer: {_no_answer(e)}"
    if problem is not None:
        raise TrackingServerError(
            f"MLflow tracking server {uri} (from {setting}) {problem}. Start it (e.g. `mlflow "
            f"server --host 127.0.0.1 --port 5000`), fix {setting}, or unset it to track in the "
            "runs folder (SQLite)."
        )


def _no_answer(error: MlflowException) -> str:
    """Why a request got no answer, in a few words (MLflow's message quotes urllib3's)."""
    cause = error.__context__  # the requests exception MLflow's client caught
    if isinstance(cause, requests.exceptions.Timeout):
        return f"nothing came back within {PROBE_TIMEOUT_S} s"
    if not isinstance(cause, requests.exceptions.ConnectionError):
        return type(cause or error).__name__
    failure = getattr(cause.args[0], "reason", None) if cause.args else None
    if isinstance(failure, urllib3.exceptions.NameResolutionError):
        return "its host name does not resolve"
    if isinstance(getattr(failure, "__context__", None), ConnectionRefusedError):
        return "connection refused (nothing listens at that address)"
    if isinstance(cause, requests.exceptions.SSLError):
        return "the TLS handshake failed (is it an http:// server?)"
    return "the connection failed"


def _wrong_answer(status: int) -> str:
    """What an answer other than 200 to the probe means."""
    if status in (401, 403):
        return (
            f"refused the request (HTTP {status}): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for it"
        )
    return f"did not answer as an MLflow server does (HTTP {status} to an API request)"


def configure(runs_dir: str | Path, uri: str | None = None) -> str:
    """Point MLflow at the runs folder, ``uri`` or the env override; return the tracking URI.

    Args:
        runs_dir: the runs folder (SQLite DB and artifacts by default; the download cache always).
        uri: the config's ``tracking.uri`` (wins over ``MLFLOW_TRACKING_URI``).

    Raises:
        TrackingServerError: an http(s) tracking URI whose server does not answer.
    """
    global _cache_root
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    user_env = os.environ.get(ENV_URI)
    chosen = tracking_uri(runs_dir, uri)
    if is_server(chosen):
        check_server(chosen, _setting(uri))
    else:
        _create_database(chosen, runs_dir)
    mlflow.set_tracking_uri(chosen)
    # set_tracking_uri exports the URI to the environment; put the user's value back, or this
    # process (and its children) would take our last choice for a user override next time.
    if user_env is None:
        os.environ.pop(ENV_URI, None)
    else:
        os.environ[ENV_URI] = user_env
    _cache_root = Path(runs_dir).resolve() / "mlflow-cache"
    return chosen


def _create_database(uri: str, runs_dir: str | Path) -> None:
    """Create a new SQLite tracking database with its artifact root under ``runs_dir``.

    MLflow creates the Default experiment with the database; left to itself it would give it
    ``./mlruns`` of whatever directory the first command ran in.
    """
    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if path is None or path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, (Path(runs_dir).resolve() / "mlartifacts").as_uri())


def ensure_experiment(name: str, runs_dir: str | Path) -> str:
    """Id of experiment ``name``, a model-training experiment (:data:`KIND_TAG`); created with
    an absolute artifact root under ``runs_dir``, or with the server's default root when
    tracking through a server.

    An explicit location matters without a server: MLflow would otherwise put artifacts in ./mlruns
    of whatever directory the process happens to run in (a Prefect worker's, say).
    """
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore "
                f"--experiment-id {exp.experiment_id}`) or use another config name"
            )
        if KIND_TAG not in exp.tags:  # made before the tag was set
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    location = None
    if not is_server(mlflow.get_tracking_uri()):
        location = (Path(runs_dir).resolve() / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def artifact_file(artifact_location: str, path: str, cache_key: str) -> str:
    """Local path of one artifact file: in place for local artifacts, else downloaded once.

    Args:
        artifact_location: a run's or LoggedModel's artifact root (file://, mlflow-artifacts:/,
            s3://, ...).
        path: the file's path under that root, e.g. "extra_files/checkpoint.pt".
        cache_key: folder of the download cache it goes to (a model id), so the local path is
            stable: a pair store records it as its source's model_uri.
    """
    repo = get_artifact_repository(artifact_location)
    if urlparse(artifact_location).scheme in ("", "file"):
        return repo.download_artifacts(path)  # no copy: the absolute path of the file itself
    root = _cache_root or Path(tempfile.gettempdir()) / "rectiflow-mlflow-cache"
    target = root / cache_key / path
    if target.is_file():
        return str(target)
    staging = root / f".{cache_key}-{uuid.uuid4().hex}"  # same filesystem: the rename is atomic
    staging.mkdir(parents=True)
    try:
        fetched = Path(repo.download_artifacts(path, dst_path=str(staging)))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, target)  # concurrent downloads of one model both land whole
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def ui_command(runs_dir: str | Path, uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on this tracking store."""
    chosen = tracking_uri(runs_dir, uri)
    if is_server(chosen):
        return f"open {chosen}"
    # Artifacts of experiments made in the UI go under the runs folder too, not ./mlartifacts.
    artifacts = Path(runs_dir).resolve() / "mlartifacts"
    return f"mlflow ui --backend-store-uri {chosen} --artifacts-destination {artifacts} --port 5000"


def run_url(experiment_id: str, run_id: str) -> str:
    """Browser URL of a run (the server from :func:`ui_command`, or the tracking server)."""
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if is_server(uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

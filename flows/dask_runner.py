"""Dask for ``generate_pairs`` (``execution.task_runner: dask``): which cluster, how many shards.

Without ``execution.dask_address`` the run starts a cluster on this host for its own duration: one
single-threaded worker process per CUDA device, each seeing only its GPU and advertising a ``GPU``
resource, or ``execution.dask_workers`` CPU workers. With an address it uses the workers of an
existing cluster (``dask scheduler`` + one ``dask worker --resources GPU=1`` per GPU): shards
request a GPU when the workers advertise GPUs. The address is checked before the flow touches the
store, so an unreachable scheduler fails fast and writes nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from flows.common import devices
from flows.config import PipelineConfig
from flows.errors import InputError

log = logging.getLogger(__name__)
GPU = "GPU"  # the resource name workers advertise: `dask worker ... --resources GPU=1`
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", socket.gethostname()}


@dataclass(frozen=True)
class DaskPlan:
    """How the missing chunks go out to a Dask cluster.

    Attributes:
        runner: task runner of the shard sub-flow; starts or connects to the cluster when the first
            shard is submitted, and closes what it started when the sub-flow ends.
        n_workers: workers the shards are spread over (GPU workers when ``resources`` asks a GPU).
        device: device of each shard task on its worker ("cuda" = the one GPU the worker sees).
        resources: Dask resources every shard requests: {"GPU": 1} for GPU shards, else {}.
        local: every worker runs on this host (so it can reach a temporary Prefect API here).
    """

    runner: DaskTaskRunner
    n_workers: int
    device: str
    resources: dict[str, float] = field(default_factory=dict)
    local: bool = True


def local_cluster(n_workers: int, gpus: list[str]) -> SpecCluster:
    """Worker processes with one thread each on 127.0.0.1; with ``gpus``, worker i sees only
    CUDA device ``gpus[i]`` and advertises GPU=1 (what one `dask worker` per GPU does by hand)."""
    if not gpus:
        return LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0",
        )  # fmt: skip
    options = {"nthreads": 1, "host": "127.0.0.1", "resources": {GPU: 1}}
    workers = {
        f"gpu-{g}": {"cls": Nanny, "options": {**options, "env": {"CUDA_VISIBLE_DEVICES": g}}}
        for g in gpus
    }
    options = {"host": "127.0.0.1", "dashboard": False, "dashboard_address": ":0"}
    scheduler = {"cls": Scheduler, "options": options}
    return SpecCluster(workers=workers, scheduler=scheduler, name="rectiflow-gpus")


def probe(address: str, timeout_s: float) -> dict[str, dict[str, float]]:
    """Connect to the scheduler at ``address``; returns {worker address: its resources}.

    Raises:
        InputError: naming ``execution.dask_address`` when the scheduler does not answer within
            ``timeout_s`` or has no workers.
    """
    try:
        with Client(address, timeout=timeout_s, set_as_default=False) as client:
            info = client.scheduler_info(n_workers=-1)
    except Exception as e:  # OSError / TimeoutError / comm errors: all mean "not reachable"
        raise InputError(
            f"execution.dask_address: no Dask scheduler answered at {address} within "
            f"{timeout_s:g} s ({type(e).__name__}: {e}). Start one (`dask scheduler`), fix the "
            "address, or remove execution.dask_address to start a local cluster. Nothing was "
            "written."
        ) from None
    workers = {a: dict(w.get("resources") or {}) for a, w in info["workers"].items()}
    if not workers:
        raise InputError(
            f"execution.dask_address: the Dask scheduler at {address} has no workers. Start them, "
            f"e.g. one per GPU: `CUDA_VISIBLE_DEVICES=0 dask worker {address} --nworkers 1 "
            "--nthreads 1 --resources GPU=1`. Nothing was written."
        )
    return workers


def _cuda_index(device: str) -> str:
    return device.partition(":")[2] or "0"


def plan_dask(cfg: PipelineConfig) -> DaskPlan:
    """The cluster the shards go to (see the module docstring). Connects once if given an address.

    Raises:
        InputError: naming ``execution.dask_address`` if its scheduler is unreachable or has no
            workers.
    """
    p = cfg.execution
    if p.dask_address is None:
        gpus = [_cuda_index(d) for d in devices(cfg) if d.startswith("cuda")]
        runner = DaskTaskRunner(
            cluster_class=local_cluster,
            cluster_kwargs={"n_workers": p.dask_workers, "gpus": gpus},
        )
        if gpus:
            return DaskPlan(runner, len(gpus), "cuda", {GPU: 1})
        return DaskPlan(runner, p.dask_workers, devices(cfg)[0])
    workers = probe(p.dask_address, p.dask_timeout_s)
    gpu_workers = [a for a, res in workers.items() if res.get(GPU, 0) >= 1]
    runner = DaskTaskRunner(address=p.dask_address, client_kwargs={"timeout": p.dask_timeout_s})
    host = p.dask_address.split("://")[-1].rsplit(":", 1)[0]
    local = host in _LOCAL_HOSTS
    if gpu_workers:  # the workers say they have GPUs: one GPU shard at a time per worker
        return DaskPlan(runner, len(gpu_workers), "cuda", {GPU: 1}, local)
    return DaskPlan(runner, len(workers), "cpu", {}, local)


@contextmanager
def api_for_workers(local: bool) -> Iterator[None]:
    """Let Dask workers report their task runs to this flow's Prefect API.

    Each task ships the flow's Prefect settings to its worker. Without ``PREFECT_API_URL`` the flow
    talks to a temporary API server in this process, and every worker would start one of its own
    (slow, and its task runs land elsewhere): hand local workers this server's URL instead.
    """
    if PREFECT_API_URL.value():
        yield
        return
    if not local:
        log.warning(
            "workers of execution.dask_address on other hosts cannot reach this run's temporary "
            "Prefect API; set PREFECT_API_URL to a Prefect server they can reach"
        )
        yield
        return
    url = str(get_client(sync_client=True).api_url)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield

"""Where the runs of a sweep execute: a local process pool (default) or Ray tasks.

Both backends take :func:`dspseg.study.runner.payload` dicts and give back result rows, one at a
time as runs finish, through the same two calls the scheduler uses::

    handle = backend.submit(payload)
    handle, row = backend.wait_one(handles)

* :class:`LocalBackend` — ``workers`` spawned processes on this machine (each run in a clean
  interpreter; torch threads = cores / workers unless ``--set threads=N``). A worker that dies
  (killed, out of memory) fails only the runs it held; the pool is rebuilt.
* :class:`RayBackend` — each run is a Ray task: one GPU per task where the cluster has GPUs, else
  one CPU (``threads`` torch threads). ``address`` joins an existing cluster (``ray start --head``
  on the head node, then ``--address HEAD:6379`` or ``auto``); without it a local Ray instance
  with ``workers`` CPUs is started. On a cluster the sweep folder must be on a filesystem every node
  sees, and dspseg must be installed on every node. Ray is the optional extra ``dspseg[ray]``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Any

from dspseg.errors import UserError


def _failed(p: dict[str, Any], why: str) -> dict[str, Any]:
    from dspseg.study.runner import result_row

    return result_row(p, status="failed", error=why)


class LocalBackend:
    """A pool of ``workers`` spawned processes."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._payloads: dict[cf.Future, dict[str, Any]] = {}

    @property
    def slots(self) -> int:
        return self.workers

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, p: dict[str, Any]) -> cf.Future:
        from dspseg.study.runner import execute

        future = self._ensure_pool().submit(execute, p)
        self._payloads[future] = p
        return future

    def wait_one(self, handles: list[cf.Future]) -> tuple[cf.Future, dict[str, Any]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        future = next(iter(done))
        p = self._payloads.pop(future)
        try:
            return future, future.result()
        except cf.process.BrokenProcessPool:
            self._pool = None  # rebuilt for the next submission; the other in-flight runs fail the same way
            return future, _failed(p, "its worker process died (killed or out of memory); see the run's log")
        except Exception as e:  # pragma: no cover - execute() turns failures into rows itself
            return future, _failed(p, f"{type(e).__name__}: {e}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayBackend:
    """Runs as Ray tasks on a cluster (``address``) or a local Ray instance of ``workers`` CPUs."""

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None, threads: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("--backend ray needs Ray: pip install 'dspseg[ray]' (or pip install ray), "
                            "or use --backend local") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = max(1, int(workers))
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"cannot reach the Ray cluster at --address {address}: {str(e).splitlines()[0]}; "
                                "start it with `ray start --head` or leave --address out for a local instance") from None
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        self.threads = threads or (1 if not address else max(1, cpus // max(1, int(workers))))
        self.slots_ = self.gpus if self.gpus else max(1, cpus // self.threads)
        options = {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": self.threads}
        from dspseg.study.runner import execute

        self._remote = ray.remote(max_retries=0, **options)(execute)
        self._payloads: dict[Any, dict[str, Any]] = {}

    @property
    def slots(self) -> int:
        return self.slots_

    def submit(self, p: dict[str, Any]) -> Any:
        ref = self._remote.remote(p)
        self._payloads[ref] = p
        return ref

    def wait_one(self, handles: list[Any]) -> tuple[Any, dict[str, Any]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        ref = ready[0]
        p = self._payloads.pop(ref)
        try:
            return ref, self.ray.get(ref)
        except Exception as e:  # a task that crashed its worker (killed, out of memory, node lost)
            return ref, _failed(p, f"the Ray task failed: {type(e).__name__}: {str(e).splitlines()[0]}")

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_backend(name: str, workers: int = 1, address: str | None = None, threads: int | None = None):
    """``local`` or ``ray``; a UserError naming the choices otherwise."""
    if name == "local":
        if address:
            raise UserError("--address is for --backend ray; drop it or add --backend ray")
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(workers, address, threads)
    raise UserError(f"--backend must be local or ray, got '{name}'")

"""Where the runs of a sweep execute: a local process pool (default) or Ray tasks.

Both backends take :func:`dspseg.study.runner.payload` dicts and give back result rows, one at a
time as runs finish, through the same two calls the scheduler uses::

    handle = backend.submit(payload)
    handle, row = backend.wait_one(handles)

* :class:`LocalBackend` — ``workers`` spawned processes on this machine (each run in a clean
  interpreter; torch threads = cores / workers unless ``--set threads=N``). A worker that dies
  (killed, out of memory) fails only the runs it held; the pool is rebuilt. The sweep owns its
  workers: they ignore Ctrl-C (the sweep stops them), a SIGTERM or SIGHUP stops the run they hold at
  once (atomic writes: its last checkpoint stays, and the run resumes), and a worker whose sweep
  process died stops itself (Linux ``PR_SET_PDEATHSIG``, and a parent-pid watchdog elsewhere).
  :meth:`LocalBackend.close` with ``stop=True`` (an interrupted sweep) terminates them.
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
import signal
import sys
import threading
import time
from typing import Any

from dspseg.errors import UserError


class stop_on_signals:
    """Within the block, the first SIGTERM or SIGHUP raises KeyboardInterrupt in the main thread, like
    Ctrl-C (SIGINT) does, so the sweep stops its workers and exits with 130; later ones are ignored
    while it does. Outside the main thread (no handlers can be set there) it does nothing."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __enter__(self) -> stop_on_signals:
        self.before: dict[int, Any] = {}
        self.fired = False
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.before[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt(f"stopped by signal {signum}")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.before.items():
            signal.signal(sig, handler)


def _failed(p: dict[str, Any], why: str) -> dict[str, Any]:
    from dspseg.study.runner import result_row

    return result_row(p, status="failed", error=why)


#: seconds an interrupted sweep gives its workers to stop before killing them
STOP_GRACE_S = 20.0
_busy = False  # in a worker: whether it is running a run (a stop signal then interrupts it)


def _stop_worker(signum: int, frame: Any) -> None:
    """A worker's SIGTERM/SIGHUP: interrupt the run it holds (KeyboardInterrupt unwinds through the
    atomic writers and the run folder's lock), or exit at once when idle."""
    if _busy:
        raise KeyboardInterrupt(f"stopped by signal {signum}")
    os._exit(128 + signum)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _worker_init(parent: int) -> None:
    """Run once in each pool worker: tie its life to the sweep process ``parent``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the sweep decides
    signal.signal(signal.SIGTERM, _stop_worker)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _stop_worker)
    if sys.platform.startswith("linux"):
        import ctypes

        try:  # PR_SET_PDEATHSIG = 1: the kernel sends SIGTERM when the sweep process dies
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl (not Linux): the worker's parent-pid watch stops it instead
    if os.getppid() != parent:  # the sweep died before this worker was ready
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="dspseg-parent-watch").start()


def _run(p: dict[str, Any]) -> dict[str, Any]:
    """What a pool worker runs: :func:`dspseg.study.runner.execute`, marked busy for :func:`_stop_worker`."""
    global _busy
    from dspseg.study.runner import execute

    _busy = True
    try:
        return execute(p)
    finally:
        _busy = False


class LocalBackend:
    """A pool of ``workers`` spawned processes, owned by the sweep (see the module docstring)."""

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
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_worker_init, initargs=(os.getpid(),))
        return self._pool

    def submit(self, p: dict[str, Any]) -> cf.Future:
        future = self._ensure_pool().submit(_run, p)
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

    def close(self, stop: bool = False) -> None:
        """Shut the pool down: after the running runs finish, or with ``stop`` (an interrupted sweep) at
        once — SIGTERM to every worker (each run stops and stays resumable), SIGKILL after
        :data:`STOP_GRACE_S` seconds to any still there. No worker outlives this call."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        processes = list((getattr(pool, "_processes", None) or {}).values())
        if stop:
            for proc in processes:
                if proc.is_alive():
                    proc.terminate()
            deadline = time.monotonic() + STOP_GRACE_S
            for proc in processes:
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
        pool.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    """Runs as Ray tasks on a cluster (``address``) or a local Ray instance of ``workers`` CPUs."""

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None, threads: int | None = None) -> None:
        from dspseg.engine.ray_cluster import RayCluster
        from dspseg.study.runner import execute

        self.cluster = RayCluster(workers, address, threads)  # joins a cluster or starts a local instance
        self.ray, self.gpus, self.threads, self.slots_ = (self.cluster.ray, self.cluster.gpus, self.cluster.threads,
                                                          self.cluster.slots)
        self._remote = self.cluster.remote(execute)
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

    def close(self, stop: bool = False) -> None:
        """With ``stop`` (an interrupted sweep) cancel the runs in flight (their tasks' workers are
        killed; each run resumes from its last checkpoint); shut a local Ray instance down."""
        if stop:
            self.cluster.cancel(self._payloads)
            self._payloads.clear()
        self.cluster.close()


def make_backend(name: str, workers: int = 1, address: str | None = None, threads: int | None = None):
    """``local`` or ``ray``; a UserError naming the choices otherwise."""
    if name == "local":
        if address:
            raise UserError("--address is for --backend ray; drop it or add --backend ray")
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(workers, address, threads)
    raise UserError(f"--backend must be local or ray, got '{name}'")

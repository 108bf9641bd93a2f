"""The Ray cluster that distributed work runs on: join one or start a local instance, and let it go.

Used by the sweep's :class:`~dspseg.study.backends.RayBackend` (one training run per task) and by
``dspseg predict ... --backend ray`` (:mod:`dspseg.engine.predict_volume_ray`, one volume block
per task). ``address`` joins an existing cluster (``ray start --head`` on the head node, then
``HEAD:6379`` or ``auto``); without it a new local Ray instance with ``workers`` CPUs is started
(even where ``ray start`` left a cluster running on this machine), and :meth:`RayCluster.close` stops it. A task takes one GPU where the cluster has GPUs, else
``threads`` CPUs (torch threads of the task). Ray is the optional extra ``dspseg[ray]``.

    >>> cluster = RayCluster(workers=2)                     # doctest: +SKIP
    >>> square = cluster.remote(lambda x: x * x)            # doctest: +SKIP
    >>> cluster.ray.get(square.remote(3)); cluster.close()  # doctest: +SKIP
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from dspseg.errors import UserError


def _stop_handlers() -> dict[int, Any]:
    """The Python handlers of SIGTERM and SIGHUP now (main thread only), to put back after ``ray.init``:
    a command that stops cleanly on them (``stop_on_signals``) keeps doing so once Ray is up."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    handlers = {getattr(signal, n): signal.getsignal(getattr(signal, n)) for n in names}
    return {sig: h for sig, h in handlers.items() if h is not None}


class RayCluster:
    """A connection to a Ray cluster (``address``) or a local Ray instance of ``workers`` CPUs.

    Attributes: ``ray`` (the module), ``started_here`` (this object started Ray and stops it in
    :meth:`close`), ``gpus`` (GPUs of the cluster), ``threads`` (CPUs, and torch threads, of a CPU
    task), ``slots`` (tasks that run at once), ``options`` (the tasks' ``num_gpus``/``num_cpus``).
    """

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
            else:  # "local": a new instance, never a cluster `ray start` left running on this machine
                kwargs.update(address="local", num_cpus=max(1, int(workers)))
            saved = _stop_handlers()
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"cannot reach the Ray cluster at --address {address}: {str(e).splitlines()[0]}; "
                                "start it with `ray start --head` or leave --address out for a local instance") from None
            finally:
                for sig, handler in saved.items():  # Ray's core replaces them with a stack dump and abort
                    signal.signal(sig, handler)
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        self.threads = threads or (1 if not address else max(1, cpus // max(1, int(workers))))
        self.slots = self.gpus if self.gpus else max(1, cpus // self.threads)
        self.options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": self.threads}

    def remote(self, fn: Callable[..., Any]) -> Any:
        """``fn`` as a Ray remote function with this cluster's task resources, never retried (a task
        that failed is reported; the caller decides)."""
        return self.ray.remote(max_retries=0, **self.options)(fn)

    def cancel(self, refs: Iterable[Any]) -> None:
        """Stop the tasks ``refs`` (their workers are killed); finished ones and lost nodes are passed over."""
        for ref in list(refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or its node is gone: nothing to stop
                pass

    def close(self) -> None:
        """Disconnect; a local instance started here is stopped (its worker processes end)."""
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()

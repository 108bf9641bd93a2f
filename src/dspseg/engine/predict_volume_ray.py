"""``dspseg predict RUN VOLUME --out OUT.ome.zarr --backend ray``: the blocks of a volume as Ray tasks.

The driver (:func:`dspseg.engine.predict_volume.predict_volume`) checks the inputs and creates the
output as the local path does; here every unfinished block becomes one Ray task on the cluster of
:class:`~dspseg.engine.ray_cluster.RayCluster` (``--address``, or a local instance of ``--workers``
CPUs): one GPU per task where the cluster has GPUs, else ``threads`` CPUs and torch threads. A task
writes its block straight into the output (a block is whole chunks of every array, so no two tasks
write the same chunk) and then the block's marker, exactly as the local loop does, so the output
is the same voxel for voxel and a stopped job resumes the same way, on either backend. Level 0 is
written first; each pyramid level is handed out once the level below it is complete. The output,
the run and the volume must be on a filesystem every node sees (paths are made absolute).

A worker process keeps the model and the open volume of its last job (:data:`_WRITER`) across
tasks. The driver keeps at most two tasks per slot in flight and prints progress and the time left
as they finish; Ctrl-C (or an error) cancels the tasks in flight and stops a local instance. Blocks
a cancelled task left half-written have no marker and are redone by the next run.
"""

from __future__ import annotations

from collections.abc import Sequence

from dspseg.engine.predict_volume import BlockJob, BlockWriter, Progress
from dspseg.errors import UserError

#: in a Ray worker process: the job of its last task and the writer holding that job's model and volume
_WRITER: tuple[BlockJob, BlockWriter] | None = None


def _write_block(job: BlockJob, threads: int, level: int, lo: tuple[int, ...], hi: tuple[int, ...]) -> None:
    """One Ray task: write block ``[lo, hi)`` of ``level`` and its marker (a writer per job, per process)."""
    global _WRITER
    if _WRITER is None or _WRITER[0] != job:
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(threads)
        _WRITER = (job, BlockWriter(job))
    _WRITER[1].write(level, lo, hi)


def _failure(e: Exception, level: int, lo: Sequence[int]) -> Exception:
    """A failed task as one sentence: the task's own user error (e.g. the volume is not readable on a
    node), or what went wrong and how to go on."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
        return cause
    first = (str(cause if cause is not None else e).strip().splitlines() or [""])[0]
    name = type(cause if cause is not None else e).__name__
    return UserError(f"the Ray task writing block {'_'.join(map(str, lo))} of level s{level} failed ({name}: {first}); "
                     "finished blocks are kept: check that the run, the volume and --out are on a filesystem every "
                     "Ray node sees, then run the same command again to resume")


def write_on_ray(job: BlockJob, todo: Sequence[tuple[int, tuple[int, ...], tuple[int, ...]]], progress: Progress,
                 workers: int = 1, address: str | None = None, threads: int | None = None) -> None:
    """Write the blocks ``todo`` (``(level, lo, hi)``, level 0 first) as Ray tasks; ``progress`` counts each.

    Returns when every block is written; raises (after cancelling the tasks in flight and stopping a
    local Ray instance) on Ctrl-C or the first failed task.
    """
    from dspseg.engine.ray_cluster import RayCluster

    if not todo:
        return
    cluster = RayCluster(workers, address, threads)
    ray, in_flight = cluster.ray, {}
    try:
        task = cluster.remote(_write_block)
        for level in sorted({k for k, _, _ in todo}):
            queue = [(k, lo, hi) for k, lo, hi in todo if k == level]
            queue.reverse()  # pop() from the end hands the blocks out in C order
            while queue or in_flight:
                while queue and len(in_flight) < 2 * cluster.slots:
                    k, lo, hi = queue.pop()
                    in_flight[task.remote(job, cluster.threads, k, lo, hi)] = (k, lo)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                k, lo = in_flight.pop(ready[0])
                try:
                    ray.get(ready[0])
                except Exception as e:  # noqa: BLE001 - a task's error or a lost worker, as one sentence
                    raise _failure(e, k, lo) from None
                progress.block_done()
    finally:
        cluster.cancel(in_flight)
        cluster.close()

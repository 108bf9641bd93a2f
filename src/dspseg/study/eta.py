"""How long a sweep still needs: the running estimate ``dspseg sweep`` prints after every finished run.

Why a plain average misled. The runs of a sweep do not come in a random order: every ``basic`` run
comes first (the others start from its weights), so after the first quarter of the demo only
``basic`` runs had finished, and the estimate charged every ``fixmatch`` and ``dsp`` run the
seconds of a ``basic`` run — but those train two views per step (weak and strong) and take about
twice as long. And dividing the total by the number of slots ignores the end of a sweep, when
fewer runs are left than slots and the last run's children cannot start before it ends.

The estimate here:

1. **A run's seconds.** The mean seconds of the finished runs of its method. A method with none
   yet: the seconds per step its runs in flight have logged so far (``metrics.csv``'s ``step`` and
   ``elapsed_s``, :func:`run_progress`) times the run's steps; before any has logged a step, the
   finished runs' mean scaled by the ratio of network passes per step (:func:`passes`: 2 for a
   method whose ``views`` are weak + strong, else 1 — on the demo's runs the real ratio is nearer 3,
   which is why the logged rate is preferred).
2. **The schedule.** The remaining runs are dealt, in the sweep's own order, onto ``slots`` workers;
   a run starts when a worker is free and the run it starts from (``parent``) has finished; a run
   in flight keeps its worker for its logged steps still to do (else its expected seconds less
   those it has already run).

The answer is when the last run ends. ``tests/study/test_eta.py`` replays the durations recorded
in a real demo sweep and checks the estimate against what really happened.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def passes(method: str) -> float:
    """Network passes per training step of a method (a name or a label such as ``dsp:tau=0.5``): 2 for
    a method whose views are weak + strong, else 1 (``basic-matched`` is ``basic`` trained on)."""
    from dspseg.methods import METHODS
    from dspseg.methods.base import WEAK_STRONG

    cls = METHODS.get(method.split(":", 1)[0])
    return 2.0 if cls is not None and cls.views == WEAK_STRONG else 1.0


def run_progress(run_dir: Any) -> tuple[int, float, int] | None:
    """(steps done, their seconds, steps in all) of a run folder in flight, from its ``metrics.csv``
    and ``config.yaml``; None before its first logged step or for a run measured in epochs."""
    import yaml

    from dspseg.engine.runfolder import RunFolder

    folder = RunFolder(run_dir)
    try:
        header, *lines = folder.metrics.read_text(encoding="utf-8").splitlines()
        steps = (yaml.safe_load(folder.config.read_text(encoding="utf-8")) or {}).get("steps")
        last = dict(zip(header.split(","), lines[-1].split(","))) if lines else {}
        done, elapsed = int(last["step"]), float(last["elapsed_s"])
    except (OSError, ValueError, KeyError, AttributeError, yaml.YAMLError):
        return None
    return (done, elapsed, int(steps)) if done > 0 and isinstance(steps, int) and steps > 0 else None


def expected_seconds(run: Any, seconds: Mapping[str, Sequence[float]], cost: Callable[[str], float],
                     rates: Mapping[str, tuple[float, int]] | None = None) -> float:
    """Seconds ``run`` should take: its method's mean; else ``rates[method]`` (seconds per step logged
    by its runs in flight, steps in all) as their product; else the mean of every finished run scaled by
    ``cost(method) / mean cost of the finished runs``."""
    mine = seconds.get(run.method.label)
    if mine:
        return sum(mine) / len(mine)
    if rates and run.method.label in rates:
        per_step, steps = rates[run.method.label]
        return per_step * steps
    every = [(x, cost(label)) for label, xs in seconds.items() for x in xs]
    per_pass = sum(x for x, _ in every) / sum(c for _, c in every)
    return per_pass * cost(run.method.label)


def remaining_seconds(todo: Sequence[Any], seconds: Mapping[str, Sequence[float]], slots: int,
                      running: Mapping[str, float] | None = None, parent: Callable[[Any], Any] | None = None,
                      cost: Callable[[str], float] = passes,
                      progress: Mapping[str, tuple[int, float, int]] | None = None) -> float | None:
    """Wall seconds until the runs ``todo`` (``RunSpec``, in the sweep's order) have all finished.

    Args:
        seconds: method label → seconds of its finished runs.
        slots: runs at a time.
        running: run key → seconds it has run so far, for the runs of ``todo`` in flight.
        parent: run → the run it starts from (``StudySpec.init_parent``), or None.
        cost: a method label's relative cost per step (:func:`passes`).
        progress: run key → (steps done, their seconds, steps in all) of runs in flight (:func:`run_progress`).

    None when no run has finished yet (nothing to scale from).
    """
    if not any(seconds.values()):
        return None
    running, progress = dict(running or {}), dict(progress or {})
    keys = {r.key for r in todo}
    logged: dict[str, list[tuple[float, int]]] = {}
    for r in todo:
        if r.key in progress:
            done, elapsed, steps = progress[r.key]
            logged.setdefault(r.method.label, []).append((elapsed / done, steps))
    rates = {label: (sum(x for x, _ in xs) / len(xs), xs[0][1]) for label, xs in logged.items()}
    end: dict[str, float] = {}  # key → when it ends (runs in flight and runs placed so far)
    for r in todo:
        if r.key in progress:  # keeps its worker for the steps it has still to do
            done, elapsed, steps = progress[r.key]
            end[r.key] = max(0.0, (steps - done) * elapsed / done)
        elif r.key in running:  # ... or for its expected seconds less those it has run
            end[r.key] = max(0.0, expected_seconds(r, seconds, cost, rates) - running[r.key])
    free = list(end.values()) + [0.0] * max(0, slots - len(end))  # when each worker is next free
    heapq.heapify(free)
    waiting = [r for r in todo if r.key not in running]
    while waiting:
        t = heapq.heappop(free)
        for i, r in enumerate(waiting):
            p = parent(r) if parent is not None else None
            if p is None or p.key not in keys or (p.key in end and end[p.key] <= t):
                break
        else:  # every waiting run waits for a parent: the worker idles until the first one ends
            ready_at = [end[p.key] for r in waiting if (p := parent(r)) is not None and p.key in end]
            if not ready_at:
                raise ValueError("remaining_seconds: a run waits for a parent that is neither done nor to run")
            heapq.heappush(free, max(t, min(ready_at)))
            continue
        r = waiting.pop(i)
        end[r.key] = t + expected_seconds(r, seconds, cost, rates)
        heapq.heappush(free, end[r.key])
    return max(end.values(), default=0.0)


def duration_text(seconds: float) -> str:
    """``3725`` → ``"1 h 02 min"``, ``300`` → ``"5 min"``, ``20`` → ``"under a minute"``."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"

"""The scheduler of ``dspseg sweep`` and ``dspseg study loop``: tasks that start from other tasks, on a backend.

:func:`run_tasks` hands ``tasks`` (each with a ``key``) to a backend of :mod:`dspseg.study.backends`,
``backend.slots`` at a time, in their order:

* a task whose parent (the run it starts from, ``parent_of(task)``) is not done waits until it is;
* a failed task is tried once more, first in line; a task that fails twice is recorded as failed,
  and so is every task below it ("the run it starts from (KEY) failed"), without running them;
* a row with ``disk_full`` stops everything (:class:`~dspseg.errors.DiskFullError`): every other task
  would fail the same way;
* after every finished task the rows are written (``write``); a done task prints the caller's line
  (``done_line``: its score and the time still to go);
* the backend is closed at the end, and its workers stopped at once (``backend.close(stop=True)``)
  unless the tasks ran to the end: an interrupt or a full disk leaves no worker behind.

The caller holds the folder's lock and the signal handlers (:class:`~dspseg.study.backends.stop_on_signals`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from dspseg.errors import DiskFullError
from dspseg.study.runner import result_row


class Task(Protocol):
    @property
    def key(self) -> str: ...


T = TypeVar("T", bound=Task)
Rows = dict[str, dict[str, Any]]


@dataclass
class Progress(Generic[T]):
    """Where :func:`run_tasks` stands when a task is done (what ``done_line`` may report)."""

    finished: int  #: tasks finished in this call, the one just done included (failed ones count too)
    todo: int  #: tasks this call set out to run (those not done before it)
    t0: float  #: ``time.perf_counter()`` when the call began
    rows: Mapping[str, dict[str, Any]]  #: the rows so far: done before the call, or finished in it
    in_flight: list[T]  #: the tasks running now
    started: Mapping[str, float]  #: task key → ``time.perf_counter()`` when it was last submitted

    @property
    def elapsed_s(self) -> float:
        """Seconds since the call began."""
        return time.perf_counter() - self.t0

    def running_s(self) -> dict[str, float]:
        """Seconds each task in flight has been running (since its last submission)."""
        now = time.perf_counter()
        return {t.key: now - self.started[t.key] for t in self.in_flight}


def run_tasks(tasks: Sequence[T], done: Mapping[str, dict[str, Any]], *, parent_of: Callable[[T], T | None],
              payload: Callable[..., dict[str, Any]], backend: Any, console: Any,
              done_line: Callable[[T, dict[str, Any], Progress[T]], str], write: Callable[[Rows], Any],
              disk_full: str) -> Rows:
    """Run every task of ``tasks`` not in ``done``; return ``{task key: row}`` for ``done`` and the tasks run.

    ``done`` holds the rows of tasks already done (their ``result.json``). ``payload(task, threads=N)``
    is the runner payload of a task (:func:`dspseg.study.runner.execute`); ``payload(task)`` also
    makes the failed row of a task whose parent failed. ``done_line(task, row, progress)`` is the line
    printed when ``task`` is done (``progress.rows`` already holds its row, its children are queued).
    ``write(rows)`` writes the results after every finished task and at the end. ``disk_full`` is the
    sentence after the error of a run that found the disk full (what was kept, what to do).
    """
    rows: Rows = dict(done)
    children: dict[str, list[T]] = collections.defaultdict(list)
    ready: collections.deque[T] = collections.deque()
    for t in tasks:
        if t.key in rows:
            continue
        parent = parent_of(t)
        if parent is not None and parent.key not in rows:
            children[parent.key].append(t)
        else:
            ready.append(t)
    todo = len(tasks) - len(rows)
    console.print(f"{len(tasks)} runs: {len(rows)} already done, {todo} to run on the {backend.name} backend "
                  f"({backend.slots} at a time)", highlight=False)
    attempts: collections.Counter[str] = collections.Counter()
    in_flight: dict[Any, T] = {}
    started: dict[str, float] = {}
    progress = Progress(finished=0, todo=todo, t0=time.perf_counter(), rows=rows, in_flight=[], started=started)
    stopped = True  # until the tasks ran to the end: an interrupt or a full disk stops the workers at once
    try:
        while ready or in_flight:
            while ready and len(in_flight) < backend.slots:
                t = ready.popleft()
                attempts[t.key] += 1
                in_flight[backend.submit(payload(t, threads=backend.threads))] = t
                started[t.key] = time.perf_counter()
            handle, row = backend.wait_one(list(in_flight))
            t = in_flight.pop(handle)
            if row.get("disk_full"):
                raise DiskFullError(f"{row.get('error')}; {disk_full}")
            if row.get("status") != "done" and attempts[t.key] < 2:
                console.print(f"[yellow]failed[/] {t.key}: {row.get('error')} — trying once more", highlight=False)
                ready.appendleft(t)
                continue
            rows[t.key] = row
            progress.finished += 1
            if row.get("status") == "done":
                ready.extend(children.pop(t.key, []))
                progress.in_flight = list(in_flight.values())
                console.print(done_line(t, row, progress), highlight=False)
            else:
                console.print(f"[red]failed twice[/] {t.key}: {row.get('error')}", highlight=False)
                for child in _descendants(children, t.key):
                    rows[child.key] = result_row(payload(child), status="failed",
                                                 error=f"the run it starts from ({t.key}) failed")
                    progress.finished += 1
            write(rows)
        stopped = False
    finally:
        backend.close(stop=True) if stopped else backend.close()
    write(rows)
    return rows


def _descendants(children: dict[str, list[T]], key: str) -> list[T]:
    """The tasks below ``key`` (removed from ``children``), each before its own children, in task order."""
    out: list[T] = []
    stack = list(reversed(children.pop(key, [])))
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(reversed(children.pop(t.key, [])))
    return out

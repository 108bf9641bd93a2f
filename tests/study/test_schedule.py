"""The scheduler of the sweep and the loop (dspseg.study.schedule) with a scripted backend: no training."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rich.console import Console

from dspseg.errors import DiskFullError
from dspseg.study.schedule import run_tasks


@dataclass(frozen=True)
class Task:
    key: str
    parent: Task | None = None


A = Task("a")
B = Task("b", A)
C = Task("c", B)
D = Task("d")
TASKS = [A, B, C, D]


class Scripted:
    """Runs nothing: a task's n-th attempt ends as ``script[(key, n)]`` (default done)."""

    name, threads = "scripted", 1

    def __init__(self, script: dict[tuple[str, int], str], slots: int = 2):
        self.script, self.slots = script, slots
        self.submitted: list[str] = []
        self.closed: list[bool] = []

    def submit(self, p):
        self.submitted.append(p["key"])
        return len(self.submitted) - 1

    def wait_one(self, handles):
        key = self.submitted[handles[0]]
        outcome = self.script.get((key, self.submitted.count(key)), "done")
        return handles[0], {"key": key, "status": "done" if outcome == "done" else "failed", "seconds": 1.0,
                            "error": "" if outcome == "done" else f"{outcome} in {key}", "disk_full": outcome == "full"}

    def close(self, stop: bool = False):
        self.closed.append(stop)


def _payload(task: Task, threads: int | None = None) -> dict:
    return {"root": "/r", "key": task.key, "method": "m", "scenario": "s", "acr": 1, "split": 0,
            "out": f"/r/runs/{task.key}", "data": "/r/data", "threads": threads}


def _run(backend: Scripted, done: dict | None = None):
    lines, writes = [], []
    rows = run_tasks(TASKS, done or {}, parent_of=lambda t: t.parent, payload=_payload, backend=backend,
                     console=Console(quiet=True), write=lambda rows: writes.append(dict(rows)),
                     done_line=lambda t, row, p: lines.append((t.key, p.finished, p.todo)) or "",
                     disk_full="free some space")
    return rows, lines, writes


def test_a_child_waits_for_its_parent_a_failure_is_retried_once_then_fails_its_descendants():
    backend = Scripted({("a", 1): "transient", ("b", 1): "broken", ("b", 2): "broken"})
    rows, lines, writes = _run(backend)
    assert backend.submitted == ["a", "d", "a", "b", "b"]  # a retried first in line; b only once a is done
    assert {k: r["status"] for k, r in rows.items()} == {"a": "done", "b": "failed", "c": "failed", "d": "done"}
    assert rows["c"]["error"] == "the run it starts from (b) failed" and "c" not in backend.submitted
    assert lines == [("d", 1, 4), ("a", 2, 4)]  # done lines only; b and c count as finished, not done
    assert len(writes) == 4 and writes[-1] == rows and backend.closed == [False]


def test_done_tasks_are_skipped_and_a_full_disk_stops_the_workers_at_once():
    backend = Scripted({("b", 1): "full"})
    with pytest.raises(DiskFullError, match="full in b; free some space"):
        _run(backend, done={"a": {"status": "done"}})
    assert backend.submitted == ["b", "d"] and backend.closed == [True]

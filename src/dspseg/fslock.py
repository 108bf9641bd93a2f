"""One writer per folder: an advisory lock a command holds on its output folder from start to end.

Every folder dspseg writes — a run folder (:meth:`dspseg.engine.runfolder.RunFolder.lock`), a sweep
folder, ``predict --out``, ``report --out``, ``synth``/``simulate`` folders, and the folders built
whole by :func:`dspseg.fsutil.new_folder` (convert, import, export) — is written by one process at a
time. :func:`folder_lock` takes the lock; a second writer gets :class:`~dspseg.errors.FolderLockedError`
with one sentence naming the holder (pid, host, command, start time)::

    with folder_lock(out):
        write_into(out)

Files: ``FOLDER/.dspseg.lock`` (the lock) and ``FOLDER/.dspseg.lock.json`` (who holds it, written
once it is held and removed on release). A folder replaced by a rename (``new_folder``) is locked
through a hidden sibling, ``.NAME.dspseg.lock`` (:func:`sibling_lock_file`). Emptiness checks skip
these names (:func:`entries`).

Why ``filelock`` (its OS lock, ``flock`` on Unix) rather than a lock file of our own: the operating
system releases the lock when its process ends however it ends (SIGKILL, power cut, out of memory),
so a lock is never stale; only the holder's note can be left behind, and finding one when the lock
is free is how a stale lock is recognised and taken over, with a note on stderr. The holder's
identity lives in its own file because filelock may truncate or remove the lock file itself.

The lock is re-entrant within a process (a sweep worker holds its run folder, then the trainer
takes the same lock again); it is advisory: other programs are not stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dspseg.errors import FolderLockedError

#: the lock file inside a locked folder, and the note of who holds it
LOCK_NAME = ".dspseg.lock"
OWNER_SUFFIX = ".json"
LOCK_NAMES = frozenset({LOCK_NAME, LOCK_NAME + OWNER_SUFFIX})

_held: dict[str, list[Any]] = {}  # resolved lock file -> [FileLock, depth]
_guard = threading.Lock()


def sibling_lock_file(folder: str | Path) -> Path:
    """``PARENT/.NAME.dspseg.lock``: the lock of a folder that is replaced as a whole by a rename."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{LOCK_NAME}"


def entries(folder: str | Path) -> list[Path]:
    """The entries of ``folder`` other than its lock files ([] for a missing folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name not in LOCK_NAMES]


def _owner_file(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + OWNER_SUFFIX)


def this_process() -> dict[str, Any]:
    """Who is writing: pid, host, command line and the time the lock was taken."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    command = shlex.join(["dspseg" if "dspseg" in argv0 else Path(argv0).name, *sys.argv[1:]])
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command[:300],
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def describe(owner: dict[str, Any] | None) -> str:
    """``pid 4711 on node1 (`dspseg train ...`, started 2025-01-02 10:00:00)``, or, while the holder has not
    written its note yet, "another process (it has not recorded which yet)"."""
    if not owner:
        return "another process (it has not recorded which yet)"
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} (`{owner.get('command', '?')}`, "
            f"started {owner.get('started', '?')})")


def read_owner(lock_file: str | Path) -> dict[str, Any] | None:
    """The holder's note next to ``lock_file``, or None (none, or unreadable)."""
    try:
        owner = json.loads(_owner_file(Path(lock_file)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _refusal(folder: Path, lock_file: Path) -> FolderLockedError:
    owner = read_owner(lock_file)
    for _ in range(10):  # the holder writes its note right after taking the lock
        if owner is not None:
            break
        time.sleep(0.05)
        owner = read_owner(lock_file)
    return FolderLockedError(f"{folder} is being written by {describe(owner)}; one process writes a folder at a "
                             "time: wait for that one to finish (or stop it), or choose another folder")


@contextmanager
def folder_lock(folder: str | Path, lock_file: str | Path | None = None) -> Iterator[Path]:
    """Hold the lock of ``folder`` (creating the folder if needed) for the ``with`` block.

    ``lock_file`` defaults to ``FOLDER/.dspseg.lock``. Raises
    :class:`~dspseg.errors.FolderLockedError` at once when another process holds it. A note left by
    a holder that is gone is reported on stderr and replaced. A folder this call created and that is
    still empty at the end is removed again. Yields ``folder``.
    """
    folder = Path(folder)
    lock_file = Path(lock_file) if lock_file is not None else folder / LOCK_NAME
    created = not lock_file.parent.exists()
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock_file.resolve())
    with _guard:
        held = _held.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield folder
        finally:
            with _guard:
                held[1] -= 1
        return
    lock = _acquire(folder, lock_file)
    try:
        _take_over(folder, lock_file)
        with _guard:
            _held[key] = [lock, 1]
        try:
            yield folder
        finally:
            with _guard:
                _held.pop(key, None)
    finally:
        _owner_file(lock_file).unlink(missing_ok=True)
        if lock_file.parent != folder:
            # a sibling lock leaves no trace beside the folder: removed while still held; a process that
            # opened the old file meanwhile sees it is gone once it holds it and takes the new one (_acquire)
            lock_file.unlink(missing_ok=True)
        lock.release()
        if created and lock_file.parent == folder and not entries(folder):
            lock_file.unlink(missing_ok=True)  # left by filelock versions that keep the file
            try:
                folder.rmdir()
            except OSError:
                pass  # someone else's file appeared meanwhile: keep the folder


def check_free(folder: str | Path, lock_file: str | Path | None = None) -> None:
    """FolderLockedError (naming the holder) if another process holds ``folder``'s lock right now;
    for checks that read the folder before the command takes its lock (e.g. ``train --resume``)."""
    folder = Path(folder)
    lock_file = Path(lock_file) if lock_file is not None else folder / LOCK_NAME
    if not lock_file.is_file():
        return
    with _guard:
        if str(lock_file.resolve()) in _held:
            return
    _acquire(folder, lock_file).release()


def _acquire(folder: Path, lock_file: Path) -> Any:
    """The OS lock on ``lock_file``, held (a ``filelock.FileLock``); FolderLockedError at once if taken."""
    from filelock import FileLock, Timeout

    for _ in range(5):
        lock = FileLock(str(lock_file), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise _refusal(folder, lock_file) from None
        if _still_there(lock, lock_file):
            return lock
        lock.release()  # the file was removed by its last holder after this process opened it: open the new one
    raise _refusal(folder, lock_file)


def _still_there(lock: Any, lock_file: Path) -> bool:
    """Whether the file ``lock`` holds is still the one at ``lock_file`` (a holder of a sibling lock
    removes it on release). True where filelock does not expose its descriptor."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return True
    try:
        return os.fstat(fd).st_ino == os.stat(lock_file).st_ino
    except OSError:
        return False


def _take_over(folder: Path, lock_file: Path) -> None:
    """Note a holder that is gone (its note is still there although the lock was free); record this one."""
    from dspseg.fsutil import write_text_atomic

    gone = read_owner(lock_file)
    if gone is not None:
        sys.stderr.write(f"note: {folder} was left locked by {describe(gone)}, which is no longer running; "
                         "taking it over\n")
    try:
        write_text_atomic(_owner_file(lock_file), json.dumps(this_process(), indent=1) + "\n")
    except (OSError, ValueError):  # a full disk: the command's own writes will say so; the lock holds anyway
        _owner_file(lock_file).unlink(missing_ok=True)

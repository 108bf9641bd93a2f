"""Atomic file writes: a reader (or a crash, or a full disk) never sees a half-written file.

Every file dspseg writes that a later step reads — manifests, configs, checkpoints, plots — goes
through :func:`atomic_write`: the content goes to a temporary file in the same folder, which is
then renamed over the target. The temporary file gets the permissions an ordinary new file
would (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False,
                 durable: bool = False) -> Path:
    """Write ``path`` through ``write(file)`` on a temporary sibling and a rename.

    Args:
        write: called once with the open temporary file.
        binary: open the temporary file in binary mode.
        durable: ``fsync`` the file and its folder, so the rename survives a power cut (checkpoints).

    On any error (a full disk included) the temporary file is removed, the previous ``path`` is
    left as it was, and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems refuse to fsync a directory; the file itself is already synced
    finally:
        os.close(dir_fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text))


@contextmanager
def new_folder(out: str | Path, purpose: str = "new") -> Iterator[Path]:
    """Build a folder completely in a temporary sibling, then move it to ``out`` in one rename.

    ``out`` must be absent or an empty folder (callers check and say so). A failure or an interrupt
    leaves nothing behind: the temporary folder is removed and ``out`` is as it was. The folder gets
    ordinary permissions (``0o777`` less the umask), not ``mkdtemp``'s private ``0o700``.

        with new_folder(out) as tmp:
            write_everything_into(tmp)
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{purpose}."))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if out.exists():
            out.rmdir()  # empty, checked by the caller; replaced by the finished folder
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Atomic file writes: a reader (or a crash, or a full disk) never sees a half-written file.

Every file dspseg writes that a later step reads — manifests, configs, checkpoints, metrics, plots,
predictions, sweep results — goes through :func:`atomic_write`: the content goes to a temporary file
in the same folder, which is then renamed over the target. A folder built as a whole (convert,
import, export) goes through :func:`new_folder`. The temporary file gets the permissions an ordinary
new file would (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.

**A full disk is one sentence.** Libraries report a full disk in their own ways — ``OSError``
ENOSPC from Python, ``RuntimeError: [enforce fail at inline_container.cc...] ... unexpected pos``
from ``torch.save``, ``ValueError``/``struct.error`` from others — so both helpers decide by
:func:`is_disk_full` (an ENOSPC/EDQUOT anywhere in the exception chain, or a filesystem with less
than :data:`FULL_BYTES` left at the moment of the failure, measured before the temporary file is
removed) and raise :class:`~dspseg.errors.DiskFullError` naming the file and what was kept.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dspseg.errors import DiskFullError, OutputFolderError, UserError

#: a write that fails while the filesystem has less than this many bytes left failed for lack of space
FULL_BYTES = 1 << 20
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_bytes(folder: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``folder`` (None: unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # a folder that is gone; no statvfs on Windows
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(error: BaseException, folder: str | Path) -> bool:
    """Whether ``error``, raised while writing into ``folder``, means the disk (or quota) is full.

    True for ENOSPC/EDQUOT/EFBIG anywhere in the exception's cause/context chain, and for any other
    ``Exception`` when ``folder``'s filesystem has less than :data:`FULL_BYTES` left (call it before
    removing the partial file). Interrupts (``KeyboardInterrupt``, ``SystemExit``) and dspseg's own
    sentences (:class:`~dspseg.errors.UserError`) never are, except a ``DiskFullError`` itself.
    """
    if isinstance(error, DiskFullError):
        return True
    if not isinstance(error, Exception) or isinstance(error, UserError):
        return False
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    left = free_bytes(folder)
    return left is not None and left < FULL_BYTES


def disk_full(path: str | Path, error: BaseException, kept: str | None = None, fix: str = "") -> DiskFullError:
    """The :class:`~dspseg.errors.DiskFullError` for a failed write of ``path``: ``kept`` says what is
    left (default: the previous ``path`` if there is one), ``fix`` how to go on after freeing space."""
    path = Path(path)
    if kept is None:
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    cause = error if isinstance(error, OSError) and error.strerror else None
    said = f" ({cause.strerror})" if cause else ""
    return DiskFullError(f"no space left on the disk while writing {path}{said}; {kept}. "
                         f"Free some space, then {fix or 'run the command again'}", path)


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False,
                 durable: bool = False, kept: str | None = None, fix: str = "") -> Path:
    """Write ``path`` through ``write(file)`` on a temporary sibling and a rename.

    Args:
        write: called once with the open temporary file.
        binary: open the temporary file in binary mode.
        durable: ``fsync`` the file and its folder, so the rename survives a power cut (checkpoints).
        kept, fix: the end of the sentence of a full disk (see :func:`disk_full`).

    On any error the temporary file is removed and the previous ``path`` is left as it was; a full
    disk (:func:`is_disk_full`, whatever the library raised) becomes
    :class:`~dspseg.errors.DiskFullError`, any other error propagates.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = is_disk_full(e, path.parent)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise disk_full(path, e, kept, fix) from None
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

    ``out`` must be absent or an empty folder (callers check and say so). The command is the one
    writer of ``out`` meanwhile (:func:`dspseg.fslock.folder_lock` on a hidden sibling lock file, as
    ``out`` itself is replaced). A failure or an interrupt leaves nothing behind: the temporary
    folder is removed and ``out`` is as it was; a full disk becomes
    :class:`~dspseg.errors.DiskFullError`. The folder gets ordinary permissions (``0o777`` less the
    umask), not ``mkdtemp``'s private ``0o700``.

        with new_folder(out) as tmp:
            write_everything_into(tmp)
    """
    from dspseg.fslock import folder_lock, sibling_lock_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, sibling_lock_file(out)):
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{purpose}."))
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise OutputFolderError(f"{out} was filled by another process while this command ran; this "
                                        "command's output was discarded: run it again with a new folder")
            if out.exists():
                out.rmdir()  # empty; replaced by the finished folder
            tmp.replace(out)
        except BaseException as e:
            full = is_disk_full(e, out.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            if full:
                raise disk_full(out, e, kept=f"nothing was written to {out} (the partial folder was removed)") from None
            raise

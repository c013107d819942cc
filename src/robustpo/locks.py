"""One writer per output: an OS-level lock held for the whole command.

`exclusive_output(path, what=...)` guards a run folder (lock file `<folder>/.lock`) or an
output file (lock file `<file>.lock`, beside it). The lock is an `fcntl.flock` on that file,
which the OS releases when the holder exits, however it exits (`kill -9` included); the
holder's pid is written inside so that a second process can say who holds it. A lock file
left by a dead process is therefore simply taken over, and so is one still flocked while the
pid written in it is dead (a child that inherited the descriptor outlived its robustpo
parent). Where `flock` is unavailable (no
`fcntl`, or a file system that refuses it) the lock falls back to creating the file
exclusively, and a file whose pid is no longer alive is taken over.

    with exclusive_output(run_dir, what="run folder"):
        ...   # nobody else writes run_dir meanwhile

A second process gets `LockedError` (a RobustpoError, so one line on the command line):

    run folder runs/x is in use by process 4242 (lock file runs/x/.lock): wait for it to
    finish or stop it, or choose another output
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import Iterator

from robustpo.errors import RobustpoError

try:
    import fcntl
except ImportError:  # Windows: the pid-file fallback below
    fcntl = None


class LockedError(RobustpoError):
    """The output is locked by another live process (`pid`, None when it could not be read)."""

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


def lock_path(path: str | os.PathLike, folder: bool | None = None) -> Path:
    """The lock file of `path`: `<folder>/.lock` for a folder (`folder=None`: if `path` is an
    existing folder), else `<path>.lock` beside it."""
    path = Path(path)
    if folder is None:
        folder = path.is_dir()
    return path / ".lock" if folder else path.with_name(path.name + ".lock")


def _read_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    head = text.split()[0] if text else ""
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def _locked(what: str, path: Path, lock: Path, pid: int | None) -> LockedError:
    who = f"process {pid}" if pid is not None else "another process"
    return LockedError(f"{what} {path} is in use by {who} (lock file {lock}): wait for it to finish or stop it, "
                       "or choose another output", pid)


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)


def _acquire_flock(lock: Path, what: str, path: Path) -> int | None:
    """The locked file descriptor, or None when this file system does not support flock."""
    deadline = time.monotonic() + 2.0   # for a holder that has locked but not yet written its pid
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RobustpoError(f"cannot create the lock file {lock} for {what} {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = _read_pid(lock)
                if pid is not None and not _alive(pid):   # flocked by an orphan of a dead robustpo process
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                    continue
                if pid is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise _locked(what, path, lock, pid) from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        # The holder before us may have removed the file between our open and our flock:
        # then we locked an orphan inode, and must lock the file that is there now.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _write_pid(fd)
            return fd
        os.close(fd)


def _acquire_pidfile(lock: Path, what: str, path: Path) -> int:
    """Fallback without flock: create the file exclusively; take over a dead holder's file."""
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = _read_pid(lock)
            if pid is not None and _alive(pid):   # our own pid too: the lock is not re-entrant
                raise _locked(what, path, lock, pid) from None
            with contextlib.suppress(FileNotFoundError):   # stale: its holder is gone
                lock.unlink()
            continue
        _write_pid(fd)
        return fd
    raise _locked(what, path, lock, _read_pid(lock))


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, what: str = "output", *, folder: bool | None = None) -> Iterator[Path]:
    """Hold the lock of `path` for the `with` block: a folder (`<path>/.lock`; `folder=True`
    creates the folder) or a file (`<path>.lock`); `folder=None` (default) means a folder when
    `path` is an existing one, otherwise a file.

    Raises LockedError, naming the holder's pid, when another live process holds it. The lock
    file is removed on exit; one left by a killed process is taken over by the next caller.
    Yields the lock file's path."""
    path = Path(path)
    if folder:
        path.mkdir(parents=True, exist_ok=True)
    lock = lock_path(path, folder)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RobustpoError(f"cannot create the lock file {lock} for {what} {path}: {e.strerror}") from None
    fd = _acquire_flock(lock, what, path) if fcntl is not None else None
    flocked = fd is not None
    if fd is None:
        fd = _acquire_pidfile(lock, what, path)
    try:
        yield lock
    finally:
        # Unlink before unlocking: a process waiting on the old file then sees it replaced
        # (the inode check above) instead of sharing a lock nobody else can see.
        with contextlib.suppress(OSError):
            if _read_pid(lock) == os.getpid():
                lock.unlink()
        if flocked:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

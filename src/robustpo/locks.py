"""One robustpo process per output: an exclusive lock held for the whole command.

    with exclusive_output(out_path, what="robustpo rank"):
        ...  # nothing else can write out_path (or its side files) meanwhile

The lock is `fcntl.flock` on `<OUT>.lock`, which holds the holder's pid (and `what`). A
second process gets a RobustpoError naming that pid. The kernel drops a flock when its
holder dies, so the lock of a killed process is simply taken over; a lock file still
flocked although the pid written in it is dead (a child that inherited the descriptor
outlived its robustpo parent) is replaced too. The lock file is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from robustpo.errors import RobustpoError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, what: str = "robustpo") -> Iterator[Path]:
    """Hold an exclusive lock on `path` (a file or folder) until the block ends; yields the lock file."""
    path = Path(path)
    lock = Path(str(path) + ".lock")
    deadline = time.monotonic() + 2.0
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RobustpoError(f"cannot create the lock file {lock} for {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(lock)
            if pid is not None and not _pid_alive(pid):
                lock.unlink(missing_ok=True)  # its robustpo process is dead: take it over
                continue
            if pid is None and time.monotonic() < deadline:  # the holder has not written its pid yet
                time.sleep(0.02)
                continue
            raise RobustpoError(f"{path} is in use by another robustpo process (pid {pid if pid is not None else '?'}); "
                                "wait for it to finish or stop it") from None
        # Locked; but if the file was replaced or removed meanwhile, this lock guards nothing.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{what}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)  # releases the flock

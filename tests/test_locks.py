"""robustpo.locks.exclusive_output: one writer per output, across real processes."""

import os
import subprocess
import sys

import pytest

import robustpo.locks as locks
from robustpo.errors import RobustpoError
from robustpo.locks import LockedError, exclusive_output

HOLD = """
import sys, time
from robustpo.locks import exclusive_output
with exclusive_output(sys.argv[1], what="scored output", folder={folder}):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(path, folder=None):
    """A second process holding the lock of `path` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(folder=folder), str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("folder", [False, True])
def test_second_process_is_refused_naming_the_holder(tmp_path, folder):
    out = tmp_path / ("run" if folder else "out.jsonl")
    holder = hold(out, folder)
    try:
        with pytest.raises(LockedError) as e:
            with exclusive_output(out, what="scored output", folder=folder):
                pass
        lock = out / ".lock" if folder else tmp_path / "out.jsonl.lock"
        assert str(e.value) == (f"scored output {out} is in use by process {holder.pid} (lock file {lock}): wait for "
                                "it to finish or stop it, or choose another output")
        assert e.value.pid == holder.pid and isinstance(e.value, RobustpoError)
    finally:
        holder.kill()
        holder.wait()
    # killed with SIGKILL: its lock file stays, and is taken over
    assert (out / ".lock" if folder else tmp_path / "out.jsonl.lock").exists()
    with exclusive_output(out, folder=folder) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()   # released: removed


@pytest.mark.parametrize("flock", [True, False])
def test_lock_file_of_a_dead_process_is_taken_over(tmp_path, monkeypatch, flock):
    if not flock:   # the fallback where the file system refuses flock: the pid decides
        monkeypatch.setattr(locks, "fcntl", None)
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.lock").write_text(f"{dead_pid()}\n")
    with exclusive_output(out) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(LockedError, match=f"in use by process {os.getpid()}"):
            with exclusive_output(out):   # not re-entrant, even within one process
                pass
    assert not lock.exists()


def test_fallback_refuses_a_live_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "fcntl", None)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "out.jsonl.lock").write_text(f"{holder.pid}\n")
        with pytest.raises(LockedError, match=f"in use by process {holder.pid}"):
            with exclusive_output(tmp_path / "out.jsonl"):
                pass
    finally:
        holder.kill()
        holder.wait()

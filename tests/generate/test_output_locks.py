"""Issue 11, item 3: one process per OUT for `robustpo generate | rank | label`.

Real processes: a `robustpo rank` held inside its judge (a function judge that waits for a
file), a second command on the same OUT, a SIGKILLed holder, and a lock file still flocked
by a process other than the robustpo pid written in it (as a forked child would)."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from genhelpers import HERE, cli_command, read_jsonl, run_cli, write_jsonl

BLOCKED = f"function:{HERE / 'judge_rules.py'}:blocked_longer"
LONGER = f"function:{HERE / 'judge_rules.py'}:longer_is_better"
SAMPLES = [{"prompt": f"p{i}", "completions": ["a", "bbb", "cc"]} for i in range(3)]
MESSAGE = ("output {out} is in use by process {pid} (lock file {out}.lock): wait for it to finish or stop it, "
           "or choose another output")


def wait_for(cond, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline
        time.sleep(0.02)


def other_commands(out, src):
    """generate, rank and label on the same OUT (generate's model is a folder that cannot load: the lock
    is checked before the model is loaded)."""
    model = Path(out).parent.with_name(Path(out).parent.name + "-unloadable-model")   # beside the test's folder
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return [["generate", "--model", str(model), "--prompts", src, "--out", out, "--no-progress"],
            ["rank", "--judge", LONGER, "--in", src, "--out", out, "--no-progress"],
            ["label", "--judge", LONGER, "--in", src, "--out", out, "--no-progress"]]


def test_a_second_process_on_the_same_out_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    out = tmp_path / "pairs.jsonl"
    started, release = tmp_path / "started", tmp_path / "release"
    env = dict(os.environ, JUDGE_STARTED=str(started), JUDGE_RELEASE=str(release), OMP_NUM_THREADS="1")
    holder = subprocess.Popen(cli_command(["rank", "--judge", BLOCKED, "--in", src, "--out", out, "--chunk", "1",
                                           "--no-progress"]), env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(started.exists)                        # inside its first judge call: the lock is held
        lock = tmp_path / "pairs.jsonl.lock"
        assert lock.read_text().split("\n")[0] == str(holder.pid)
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        for argv in other_commands(out, src):           # each a second real process
            second = subprocess.run(cli_command(argv), env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert f"robustpo {argv[0]}: error: " + MESSAGE.format(out=out, pid=holder.pid) in second.stderr
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.read_text().split("\n")[0] == str(holder.pid)  # left behind by the killed holder
    release.touch()
    monkeypatch.setenv("JUDGE_STARTED", str(started))
    monkeypatch.setenv("JUDGE_RELEASE", str(release))
    assert run_cli(["rank", "--judge", BLOCKED, "--in", src, "--out", out, "--no-progress"]) == 0
    assert len(read_jsonl(out)) == 3 and not lock.exists()


HOLD = ("import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, (sys.argv[2] + '\\n').encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")


@contextmanager
def held(lock, pid_text):
    """A process flocking `lock` with `pid_text` written in it (as a robustpo holder's child would),
    killed on exit."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), pid_text], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_whose_pid_is_dead_is_taken_over_even_while_still_flocked(tmp_path):
    src = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    out = tmp_path / "pairs.jsonl"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                    # a pid that no longer runs
    with held(tmp_path / "pairs.jsonl.lock", str(dead.pid)):
        assert run_cli(["rank", "--judge", LONGER, "--in", src, "--out", out, "--no-progress"]) == 0
        assert len(read_jsonl(out)) == 3


def test_a_live_holder_is_named_by_every_command(tmp_path, capsys):
    src = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    out = tmp_path / "pairs.jsonl"
    with held(tmp_path / "pairs.jsonl.lock", str(os.getppid())):  # a live pid (this test's parent)
        for argv in other_commands(out, src):
            assert run_cli(argv) == 2
            assert MESSAGE.format(out=out, pid=os.getppid()) in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl.lock", "samples.jsonl"]


def test_an_output_folder_that_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    src = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_cli(["rank", "--judge", LONGER, "--in", src, "--out", blocker / "pairs.jsonl", "--no-progress"]) == 2
    assert f"cannot create the lock file {blocker / 'pairs.jsonl.lock'}" in capsys.readouterr().err

"""Paths and small data shared by tests (imported by name; pytest puts tests/ on sys.path)."""

import json
import signal
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH_DATA = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
TINY_PAIRS = REPO / "recipes" / "tiny" / "data" / "pairs.jsonl"


def pair_texts():
    rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()]
    return [r["prompt"] + r["chosen"] + r["rejected"] for r in rows]


def kill_when(proc, ready, timeout: float) -> None:
    """SIGKILL the subprocess `proc` as soon as `ready()` holds (polled), as a crash would.

    Fails if the run ends first (nothing left to interrupt) or `ready` never holds in `timeout` s.
    """
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        assert time.time() < deadline, "the run never reached the point where it is to be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

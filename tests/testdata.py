"""Paths and small data shared by tests (imported by name; pytest puts tests/ on sys.path)."""

import json
import os
import signal
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real HH-RLHF file lives beside the project (../shared/data, which says not to copy it in);
# ROBUSTPO_HH_DATA points elsewhere. Tests that read it skip, naming the path, when it is absent.
HH_DATA = Path(os.environ.get("ROBUSTPO_HH_DATA",
                              REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"))
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


def needs_hh_data(test):
    """Skip `test` (with the reason shown by pytest -rs) where the HH-RLHF file is not present."""
    import pytest

    return pytest.mark.skipif(not HH_DATA.exists(), reason=f"needs the HH-RLHF file at {HH_DATA} "
                              "(../shared/data, or set ROBUSTPO_HH_DATA)")(test)

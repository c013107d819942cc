"""`benchmarks/judge_load.py --quick` as a user runs it (issue 11, item 8): 200 comparisons at
concurrency 32 against the fault-injecting server process. Checked from the server's own
log and the data files, not from the client's counts: no comparison lost, none paid twice."""

import json
import subprocess
import sys
from collections import Counter

from testdata import REPO


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_judge_load_quick_loses_nothing_and_pays_nothing_twice(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "judge_load.py"), "--quick", "--workdir",
                           str(work), "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| lost | 0 |" in proc.stdout and "| paid twice (server) | 0 |" in proc.stdout
    items = [tuple(c) for c in lines(work / "comparisons.jsonl")]
    assert len(items) == len(set(items)) == 200
    log = lines(work / "server.jsonl")
    outcomes = Counter(e["outcome"] for e in log)
    assert min(outcomes["500"], outcomes["drop"], outcomes["garbage"]) >= 1  # every kind of fault happened
    paid = Counter((e["prompt"], e["first"], e["second"]) for e in log if e["outcome"] == "verdict")
    assert set(paid) == set(items) and set(paid.values()) == {1}  # each comparison paid exactly once
    # What the client kept: one answer per comparison, the truth (the longer response is better),
    # which is what the server sent.
    for prompt, first, second, prob in lines(work / "verdicts.jsonl"):
        assert prob == (1.0 if len(first) > len(second) else 0.0)
    assert len(lines(work / "cache.jsonl")) == 200
    # Every request beyond a comparison's first is a retry the client counted; the rerun over
    # the same cache sent nothing (it would have added lines to the server's log).
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(log) == 200 + result["retries"] and result["retries"] == sum(outcomes.values()) - outcomes["verdict"]

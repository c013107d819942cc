"""`robustpo reward score` under torchrun: two real processes (gloo on CPU) split the rows,
each scored once, and the output equals a single-process run."""

import json
import os
import subprocess
import sys

import pytest

from rewardtesting import Interrupted, StopsAfter, write_rows
from robustpo.data.io import read_records
from robustpo.rewards import load_family, score_dataset
from robustpo.rewards.synthetic import make_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def torchrun_score(family, data, out, *extra):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    # c10d rendezvous on port 0: torchrun picks a free port
    return subprocess.run([torchrun, "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                           "localhost:0", "-m", "robustpo.cli", "reward", "score", "--family", str(family),
                           "--data", str(data), "--out", str(out), "--batch-size", "8", *extra],
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_two_processes_split_the_rows_and_equal_one(bootstrap_family, tmp_path):
    data = write_rows(tmp_path / "pairs.jsonl", make_pairs(61, seed=5))   # odd: the shares differ by one
    one = score_dataset(bootstrap_family, data, tmp_path / "one.jsonl", normalize="standardize", progress=False)
    two = torchrun_score(bootstrap_family, data, tmp_path / "two.jsonl", "--normalize", "standardize")
    assert two.returncode == 0, two.stderr[-3000:]

    meta = json.loads((tmp_path / "two.jsonl.meta.json").read_text())
    assert meta["rows_scored_by_process"] == [31, 30]          # 61 rows, each scored by exactly one process
    assert not list(tmp_path.glob("two.jsonl.raw*"))        # the shards are gone once OUT is whole
    a, b = read_records(tmp_path / "one.jsonl"), read_records(tmp_path / "two.jsonl")
    assert [r["chosen"] for r in a] == [r["chosen"] for r in b]  # same rows, same order
    for ra, rb in zip(a, b):
        assert rb["chosen_rewards"] == pytest.approx(ra["chosen_rewards"], abs=1e-5)
        assert rb["rejected_rewards"] == pytest.approx(ra["rejected_rewards"], abs=1e-5)
    assert meta["stats"]["mean"] == pytest.approx(one.stats["mean"], abs=1e-6)


def test_two_processes_finish_an_interrupted_single_process_run(bootstrap_family, tmp_path):
    """A shard left by an interrupted 1-process run (its first 20 rows): the 2-process rerun
    scores only the other 41 rows between them."""
    data = write_rows(tmp_path / "pairs.jsonl", make_pairs(61, seed=6))
    score_dataset(bootstrap_family, data, tmp_path / "full.jsonl", progress=False)
    out = tmp_path / "two.jsonl"
    with pytest.raises(Interrupted):   # 5 batches of 4 rows scored, then the run dies
        score_dataset(StopsAfter(load_family(bootstrap_family), calls=5), data, out, batch_size=4, progress=False)
    assert len(out.with_name("two.jsonl.raw").read_text().splitlines()) == 1 + 20   # header + 20 rows

    two = torchrun_score(bootstrap_family, data, out)
    assert two.returncode == 0, two.stderr[-3000:]
    meta = json.loads((tmp_path / "two.jsonl.meta.json").read_text())
    # process 0's shard keeps the 20 earlier rows and adds its 21 of the remaining 41
    assert meta["rows_scored_by_process"] == [20 + 21, 20]
    for ra, rb in zip(read_records(tmp_path / "full.jsonl"), read_records(out)):
        assert rb["chosen_rewards"] == pytest.approx(ra["chosen_rewards"], abs=1e-5)

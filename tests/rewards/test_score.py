"""Scoring a dataset: K rewards per response, standardization, resume after an interruption."""

import json
import os
import subprocess
import sys

import pytest
import torch

from rewardtesting import Interrupted, StopsAfter, write_rows
from testdata import kill_when
from robustpo.data.io import read_records
from robustpo.data.schema import load_preferences
from robustpo.rewards import load_family, score_dataset
from robustpo.rewards.synthetic import make_pairs


def test_scored_rows_carry_k_rewards_in_member_order(bootstrap_family, synthetic_path, tmp_path):
    family = load_family(bootstrap_family)
    out = tmp_path / "scored.jsonl"
    result = score_dataset(family, synthetic_path, out, progress=False)
    rows = read_records(out)
    source = read_records(synthetic_path)
    assert result.rows == len(rows) == len(source) == 240 and result.scored_now == 240
    direct = family.score([r["prompt"] for r in source[:5]], [r["chosen"] for r in source[:5]])   # (5, 3)
    for i in range(5):
        assert rows[i]["prompt"] == source[i]["prompt"] and rows[i]["meta"] == source[i]["meta"]
        assert rows[i]["chosen_rewards"] == pytest.approx(direct[i].tolist(), abs=1e-5)
    canonical, report = load_preferences(str(out))      # what `robustpo train` reads
    assert report.num_members == 3 and len(canonical) == 240
    assert not (tmp_path / "scored.jsonl.raw").exists()
    meta = json.loads((tmp_path / "scored.jsonl.meta.json").read_text())
    assert meta["members"] == ["member-0", "member-1", "member-2"] and meta["stats"] is None
    # A rerun of a finished job changes nothing.
    before = out.stat().st_mtime_ns
    assert score_dataset(family, synthetic_path, out, progress=False).scored_now == 0
    assert out.stat().st_mtime_ns == before


def test_standardize_is_one_affine_map_per_member(bootstrap_family, synthetic_path, tmp_path):
    """r' = (r − μ_k)/σ_k with μ_k, σ_k over all 2N responses: pooled mean 0 and std 1 per member,
    and Δr' = Δr / σ_k (the same map for chosen and rejected)."""
    family = load_family(bootstrap_family)
    raw = read_records(score_dataset(family, synthetic_path, tmp_path / "raw.jsonl", progress=False).out_path)
    std_out = score_dataset(family, synthetic_path, tmp_path / "std.jsonl", normalize="standardize", progress=False)
    std = read_records(std_out.out_path)
    pooled = torch.tensor([r["chosen_rewards"] for r in std] + [r["rejected_rewards"] for r in std])   # (2N, K)
    assert pooled.mean(0).abs().max() < 1e-5
    assert pooled.std(0, unbiased=False).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    raw_pooled = torch.tensor([r["chosen_rewards"] for r in raw] + [r["rejected_rewards"] for r in raw])
    sigma = raw_pooled.std(0, unbiased=False)
    d_raw = torch.tensor([[c - r for c, r in zip(x["chosen_rewards"], x["rejected_rewards"])] for x in raw])
    d_std = torch.tensor([[c - r for c, r in zip(x["chosen_rewards"], x["rejected_rewards"])] for x in std])
    assert torch.allclose(d_std, d_raw / sigma, atol=1e-4)
    # Reusing those statistics on other data applies exactly the same map.
    other = write_rows(tmp_path / "other.jsonl", make_pairs(12, seed=5))
    again = score_dataset(family, other, tmp_path / "other_std.jsonl", normalize="standardize",
                          stats_from=tmp_path / "std.jsonl.meta.json", progress=False)
    other_raw = read_records(score_dataset(family, other, tmp_path / "other_raw.jsonl", progress=False).out_path)
    mean = raw_pooled.mean(0)
    expected = (torch.tensor([r["chosen_rewards"] for r in other_raw]) - mean) / sigma
    got = torch.tensor([r["chosen_rewards"] for r in read_records(again.out_path)])
    assert torch.allclose(got, expected, atol=1e-4)


def test_interrupted_scoring_resumes_without_rescoring(bootstrap_family, synthetic_path, tmp_path):
    family = load_family(bootstrap_family)
    out = tmp_path / "scored.jsonl"
    with pytest.raises(Interrupted):
        score_dataset(StopsAfter(family, 3), synthetic_path, out, batch_size=8, progress=False)
    raw = tmp_path / "scored.jsonl.raw"
    assert not out.exists()
    assert len(raw.read_text().splitlines()) == 1 + 3 * 8        # header + 3 batches of 8 rows
    with open(raw, "a") as f:
        f.write('{"row": 24, "chosen": [0.1, ')                      # a torn last line, as from a kill
    resumed = StopsAfter(family, 10**6)
    result = score_dataset(resumed, synthetic_path, out, batch_size=8, progress=False)
    assert result.scored_now == 240 - 24 and resumed.texts == 2 * (240 - 24)
    uninterrupted = score_dataset(family, synthetic_path, tmp_path / "once.jsonl", batch_size=8, progress=False)
    got, want = read_records(out), read_records(uninterrupted.out_path)
    assert [r["chosen"] for r in got] == [r["chosen"] for r in want]
    for a, b in zip(got, want):
        assert a["chosen_rewards"] == pytest.approx(b["chosen_rewards"], abs=1e-5)
        assert a["rejected_rewards"] == pytest.approx(b["rejected_rewards"], abs=1e-5)


def test_a_run_killed_while_finishing_finishes_on_rerun(bootstrap_family, synthetic_path, tmp_path, monkeypatch):
    """Killed after OUT.partial holds every row but before the rename to OUT: no OUT (nothing
    partial looks complete), the raw rewards are kept, and the rerun scores nothing and writes
    the same OUT as an uninterrupted run. Killed after OUT appeared but before the raw files
    were removed: the rerun sees a finished OUT and removes them."""
    from robustpo.data.io import PartialOutput

    out = tmp_path / "scored.jsonl"
    real_complete = PartialOutput.complete

    def dies(self):
        raise Interrupted("killed")

    monkeypatch.setattr(PartialOutput, "complete", dies)
    with pytest.raises(Interrupted):
        score_dataset(bootstrap_family, synthetic_path, out, progress=False)
    assert not out.exists() and (tmp_path / "scored.jsonl.partial").exists() and (tmp_path / "scored.jsonl.raw").exists()
    monkeypatch.setattr(PartialOutput, "complete", real_complete)
    again = score_dataset(bootstrap_family, synthetic_path, out, progress=False)
    assert again.scored_now == 0 and not (tmp_path / "scored.jsonl.partial").exists()
    once = score_dataset(bootstrap_family, synthetic_path, tmp_path / "once.jsonl", progress=False)
    assert out.read_text() == once.out_path.read_text()

    (tmp_path / "scored.jsonl.raw").write_text('{"fingerprint": "left behind"}\n')
    assert score_dataset(bootstrap_family, synthetic_path, out, progress=False).scored_now == 0
    assert not (tmp_path / "scored.jsonl.raw").exists()


def test_sigkilled_score_command_resumes(bootstrap_family, tmp_path):
    """`robustpo reward score` killed with SIGKILL mid-run: the rerun finishes the rest only."""
    data = write_rows(tmp_path / "many.jsonl", make_pairs(600, seed=2))
    out = tmp_path / "scored.jsonl"
    cmd = [sys.executable, "-m", "robustpo.cli", "reward", "score", "--family", str(bootstrap_family),
           "--data", str(data), "--out", str(out), "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw = tmp_path / "scored.jsonl.raw"
    kill_when(proc, lambda: raw.exists() and len(raw.read_bytes().splitlines()) >= 20, timeout=60)
    assert not out.exists()
    done_before = len(raw.read_bytes().splitlines()) - 1
    rerun = subprocess.run(cmd[:-1] + ["32"], env=env, capture_output=True, text=True)  # batch size is free
    assert rerun.returncode == 0, rerun.stderr
    assert "from an interrupted run" in rerun.stdout
    rows = read_records(out)
    assert len(rows) == 600 and all(len(r["chosen_rewards"]) == 3 for r in rows)
    scored_now = int(rerun.stdout.split("(")[-1].split()[0])
    assert 600 - scored_now >= done_before - 1     # a torn line loses at most one row; none scored twice

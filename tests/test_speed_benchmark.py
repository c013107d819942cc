"""`benchmarks/speed.py --quick --json` as a user runs it: every row runs, is timed over the
same pairs and rated against the peak measured in the same run, and the first-step
DPO loss computed by TRL's own DPOTrainer equals robustpo's (the peer check the issue asks
for; TRL is the independent implementation)."""

import json
import subprocess
import sys

import pytest

from testdata import HH_DATA, REPO, needs_hh_data


@needs_hh_data
def test_speed_benchmark_quick_json(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--json", str(out),
                           "--data", str(HH_DATA), "--batch-size", "4", "--max-length", "256"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["rows"]] == ["trl_default", "trl_fastest", "robustpo", "floor", "floor_padded"]
    info = result["info"]
    assert info["pairs"] == 4 * 3   # batch × 3 steps per pass, each row timed over all of them
    for r in result["rows"]:
        assert r["pairs_per_s"] == pytest.approx(info["pairs"] / r["total_s"])
        assert r["fraction_of_peak"] == pytest.approx(info["useful_flops"] / r["total_s"] / info["peak_flops"])
        assert 0 < r["sec_per_step"] <= r["total_s"] and r["peak_mem_mb"] > 0
    losses = result["first_step_loss"]
    assert losses["robustpo"] == pytest.approx(losses["trl"], abs=1e-4)
    assert "| robustpo |" in proc.stdout


def test_speed_benchmark_without_its_data_stops_at_once_naming_it(tmp_path):
    """A clone with no ../shared beside it: the benchmark refuses before any work (exit 2,
    argparse's usage error) and says how to point it at the file."""
    missing = tmp_path / "nowhere.jsonl.gz"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--data", str(missing)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"--data {missing}: no such file" in proc.stderr and "ROBUSTPO_HH_DATA" in proc.stderr
    assert proc.stdout == ""

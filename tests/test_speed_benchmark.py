"""`benchmarks/speed.py --quick --json` as a user runs it: every row runs, is timed over the
same pairs and rated against the peak measured in the same run, and the first-step
DPO loss computed by TRL's own DPOTrainer equals robustpo's (the peer check the issue asks
for; TRL is the independent implementation)."""

import json
import os
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
    # the table says what ran it: the versions are the ones this interpreter imports
    import torch
    import transformers

    m = info["machine"]
    assert (m["torch"], m["transformers"], m["cores"]) == (torch.__version__, transformers.__version__, os.cpu_count())
    assert f"torch {torch.__version__}, transformers {transformers.__version__}" in proc.stdout


def test_speed_benchmark_without_its_data_stops_at_once_naming_it(tmp_path):
    """A clone with no ../shared beside it: the benchmark refuses before any work (exit 2,
    argparse's usage error) and says how to point it at the file."""
    missing = tmp_path / "nowhere.jsonl.gz"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--data", str(missing)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"--data {missing}: no such file" in proc.stderr and "ROBUSTPO_HH_DATA" in proc.stderr
    assert proc.stdout == ""


@needs_hh_data
def test_speed_sweep_quick_two_cells(tmp_path):
    """`--sweep --quick`: two cells (max length 128 and 256), robustpo and TRL fastest in each,
    timed over the same pairs, with the table, the JSON and the figure written where asked."""
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--sweep", "--quick",
                           "--data", str(HH_DATA), "--sweep-out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert [c["max_length"] for c in result["cells"]] == [128, 256]
    for cell in result["cells"]:
        assert sorted(cell["rows"]) == ["robustpo", "trl_fastest"]
        for row in cell["rows"].values():
            assert row["total_s"] > 0 and row["peak_mem_mb"] > 0
            assert row["pairs_per_s"] == pytest.approx(cell["pairs"] / row["total_s"])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "time per pair from length 128 to 256 grows as tokens^" in proc.stdout
    assert result["machine"]["cores"] == os.cpu_count() and "\nmeasured 20" in out.with_suffix(".md").read_text()


def test_sweep_report_states_the_chunking_cell():
    """The full sweep's last cell (too slow for the suite) is reported from its rows: with 1,533
    response tokens at a 131,072 vocabulary the batch holds 1533 × 131072 / 2**26 = 2.99 × 2**26
    logits (printed 3.0), past the threshold (so the chunked path ran); memory 2,700 / 5,400 MB = × 0.50,
    time 10 / 12.5 s = × 0.80."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import speed_sweep

    row = {"total_s": 1.0, "peak_mem_mb": 1000.0, "fraction_of_peak": 0.3}
    cell = {"axis": "max_length", "max_length": 512, "batch_size": 4, "vocab": 32768, "tokens_per_pair": 433,
            "pairs": 4, "rows": {"robustpo": row, "trl_fastest": {**row, "total_s": 9.0}}}
    chunking = {**speed_sweep.CHUNKING, "response_tokens": 1533,
                "rows": {"robustpo": {"total_s": 10.0, "peak_mem_mb": 2700.0},
                         "robustpo_unchunked": {"total_s": 12.5, "peak_mem_mb": 5400.0}}}
    text = speed_sweep.report([cell], None, chunking)
    assert "| max_length | 512 | 4 | 32768 | 433 | 1.00 | 9.00 | 9.00 |" in text
    assert ("1533 response tokens × vocabulary = 3.0 × 2**26 logits): robustpo 10.00 s, 2700 MB; with the "
            "chunking off 12.50 s, 5400 MB (memory × 0.50, time × 0.80)") in text

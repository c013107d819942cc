"""benchmarks/gpu_check.py: its tolerance rules by hand, and its three checks end to end on CPU
(the same code a GPU session runs with --device cuda; no test needs a GPU)."""

import json
import subprocess
import sys

import pytest
import torch

from testdata import HH_DATA, REPO, needs_hh_data

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

t = torch.tensor


def test_sharing_rules_by_hand():
    """Two sequences of 2 and 4 response tokens, float32 unshared log-probs -10 and -20.

    bf16 unshared off by 0.02 and 0.04 nats: 0.01 per token each, so the bf16 tolerance for the
    shared layout is 2 × 0.01 + 0.001 = 0.021 per token. Shared off by 0.04 on the first
    (0.02 per token) passes; off by 0.05 (0.025 per token) fails. In float32, shared off by
    0.0001 over 2 tokens (5e-5 per token) passes the 1e-4 rule; off by 0.001 (5e-4) fails."""
    lengths, fp32 = t([2, 4]), t([-10.0, -20.0])
    bf16_unshared = t([-10.02, -20.04])
    good = gpu_check.sharing_verdict(fp32, t([-10.0001, -20.0]), bf16_unshared, t([-10.04, -20.0]), lengths)
    assert good["float32_ok"] and good["bf16_ok"]
    assert good["bf16_unshared_error"] == pytest.approx(0.01, abs=1e-5)
    assert good["bf16_shared_error"] == pytest.approx(0.02, abs=1e-5)
    bad = gpu_check.sharing_verdict(fp32, t([-10.001, -20.0]), bf16_unshared, t([-10.05, -20.0]), lengths)
    assert not bad["float32_ok"] and not bad["bf16_ok"]


@needs_hh_data
def test_the_three_checks_run_and_pass_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--data", str(HH_DATA), "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for section in ("## speed: pass", "## prefix sharing in bf16: pass", "## LoRA: pass"):
        assert section in report
    assert "| robustpo |" in report and "| trl_fastest |" in report
    assert [r["name"] for r in json.loads((tmp_path / "speed.json").read_text())["rows"]] == ["trl_fastest", "robustpo"]
    v = json.loads((tmp_path / "sharing.json").read_text())
    # bf16 really ran in bf16: its error against float32 is far above float32's own noise
    assert v["bf16_unshared_error"] > 2e-4 > v["float32_shared_vs_unshared"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_device_is_refused_before_any_work(tmp_path):
    """Any existing --data file gets past the data check (the HH file may not be beside a clone)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--data", str(REPO / "README.md"),
                           "--out", str(tmp_path / "g")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "g").exists()

"""`benchmarks/ipr_vs_pointwise.py --quick` (issue 14, item 4) runs end to end on the quick testbed."""

import json
import subprocess
import sys

from testdata import REPO


def test_ipr_vs_pointwise_quick(quick_testbed, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ipr_vs_pointwise.py"), "--quick", "--out", str(out),
                           "--cache-dir", str(quick_testbed.config.cache_dir)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    for dist in ("in", "shifted"):
        sets = result["per_seed"]["0"]["distributions"][dist]
        assert set(sets) == {"pointwise_rm@128", "ipr_tournament@128", "ipr_insertion@128", "ipr_gold", "random"}
        assert sets["ipr_gold"]["gold_accuracy"] >= 0.9 and sets["ipr_gold"]["gold_gap"] > 0   # the ceiling
        assert sets["pointwise_rm@128"]["comparisons_per_prompt"] == 0
        assert 0 < sets["ipr_tournament@128"]["comparisons_per_prompt"] <= 2 * 8 - 3   # tournament's promise
        assert all(0 <= s["win_rate/dpo"] <= 1 for s in sets.values())
    assert set(result["per_seed"]["0"]["judges"]) == {"reward@128", "pairwise@128"}
    assert "### shifted prompts" in (out / "results.md").read_text() and (out / "provenance.json").exists()

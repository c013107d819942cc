"""`benchmarks/robustness_grid.py --quick` as a user runs it, and the committed results' freshness."""

import csv
import json
import subprocess
import sys

import pytest

from testdata import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import grid_plan  # noqa: E402
import provenance  # noqa: E402

RESULTS = ["benchmarks/results/robustness_grid", "benchmarks/results/reward_model_search",
           "benchmarks/results/span_scale", "benchmarks/results/judge_load", "benchmarks/results/ipr_vs_pointwise"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_grid_quick_runs_every_method_and_family(quick_testbed, tmp_path):
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robustness_grid.py"), "--quick", "--out",
                           str(out), "--cache-dir", str(quick_testbed.config.cache_dir), "--jobs", "1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = read_csv(out / "grid.csv")
    assert [r["method"] for r in grid] == list(grid_plan.METHODS)     # one cell (ρ = 0.2, seed 0), every method
    assert {"distill@bootstrap", "e_dpo@bootstrap", "distill@debiased", "e_dpo@span", "e_dpo@reweight",
            "length_dpo", "simpo"} <= {r["method"] for r in grid}
    families = {r["family"]: r for r in read_csv(out / "families.csv")}
    assert set(families) == {"bootstrap", "lm_bootstrap", "debiased_λ=1", "span_w=0,.5,1", "reweight_t=.2,.5,.8"}
    for r in grid:   # every distillation row carries the precondition of the family it was trained on
        if "@" in r["method"]:
            (family,) = [f for f in families.values() if f["kind"] == r["family"]]
            assert float(r["family_val_acc"]) == float(family["accuracy"])
        else:
            assert r["family_val_acc"] == ""
        lo, w, hi = float(r["ci_lo"]), float(r["win_rate"]), float(r["ci_hi"])
        assert lo <= w <= hi
    # the probe: a logistic model on the gold features, fitted to the same training pairs
    from robustpo.data.io import read_records
    from robustpo.testbed.probe import probe_accuracy

    probe = probe_accuracy(read_records(quick_testbed.dataset(0.2)), read_records(quick_testbed.validation_path))
    assert float(families["bootstrap"]["probe"]) == pytest.approx(probe["accuracy"])
    results = (out / "results.md").read_text()
    assert all(f"| {m} |" in results for m in grid_plan.METHODS)
    for png in ("win_rate_vs_rho.png", "gain_vs_precondition.png", "logratio_vs_rho.png"):
        assert (out / png).stat().st_size > 0
    record = json.loads((out / "provenance.json").read_text())
    assert {"benchmarks/robustness_grid.py", "benchmarks/grid_plan.py", "src/robustpo/train/reward.py",
            "src/robustpo/losses.py", "src/robustpo/testbed/demo.py"} <= set(record["files"])
    assert provenance.stale(out) == []


def test_code_fingerprints_ignore_docstrings_and_comments_only(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.py", "b.py", "c.py"))
    a.write_text('"""Module doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n')
    b.write_text('"""Another doc."""\n\n\ndef f(x):\n    # a comment\n    return x + 1\n')
    c.write_text('"""Module doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 2\n')
    assert provenance.code_fingerprint(a) == provenance.code_fingerprint(b)
    assert provenance.code_fingerprint(a) != provenance.code_fingerprint(c)


def test_a_changed_file_makes_results_stale(tmp_path):
    record = {"commit": "x", "files": {"benchmarks/grid_plan.py": "0" * 16,
                                       "src/robustpo/losses.py": provenance.code_fingerprint(
                                           REPO / "src" / "robustpo" / "losses.py")}}
    (tmp_path / "provenance.json").write_text(json.dumps(record))
    assert provenance.stale(tmp_path) == ["benchmarks/grid_plan.py"]


@pytest.mark.parametrize("folder", RESULTS)
def test_committed_results_were_made_by_the_code_as_it_is(folder):
    """Stale figures cannot ship: rerun the benchmark (README) after changing the code it ran."""
    changed = provenance.stale(REPO / folder)
    assert not changed, (f"{folder} was produced by older code; these files changed since: {changed}. "
                         f"Rerun `python benchmarks/{folder.split('/')[-1]}.py` and commit its results.")

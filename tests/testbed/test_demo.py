"""`robustpo demo --quick` end to end: outputs exist, every requested method is in them,
and the numbers obey what must hold whatever the training did."""

import json

from robustpo.cli import main
from robustpo.data.io import read_records

METHODS = ["dpo", "minor_dpo", "distill", "e_dpo"]   # both data paths: plain pairs and reward-scored pairs


def test_demo_quick_end_to_end(quick_testbed, tmp_path, capsys):
    out = tmp_path / "demo"
    cache = str(quick_testbed.config.cache_dir)   # the session's quick testbed: built once, found here
    assert main(["demo", "--quick", "--rho", "0.2", "--seed", "0", "--methods", *METHODS,
                 "--out", str(out), "--cache-dir", cache]) == 0
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    assert results["rho"] == 0.2 and results["seed"] == 0
    assert list(results["methods"]) == METHODS
    n_prompts = quick_testbed.config.n_test_prompts
    for name, m in results["methods"].items():
        assert set(m) == {"win_rate", "win_rate_ci", "gold_reward", "length", "kl", "logratio_chosen"}
        lo, hi = m["win_rate_ci"]
        assert 0.0 <= lo <= m["win_rate"] <= hi <= 1.0
        # one sample per prompt, wins scored 1 / ½ / 0: the rate is a multiple of 1/(2n)
        assert abs(m["win_rate"] * 2 * n_prompts - round(m["win_rate"] * 2 * n_prompts)) < 1e-6
        assert 0.0 <= m["length"] <= quick_testbed.config.max_new_tokens
        assert m["kl"] == m["kl"] and m["logratio_chosen"] == m["logratio_chosen"]   # measured, not NaN
        assert (out / "policies" / name / "final" / "config.json").exists()
    assert set(results["reference"]) == {"gold_reward", "length"}

    # results.json agrees with the full evaluation it summarises
    full = json.loads((out / "eval.json").read_text())
    for name in METHODS:
        assert full["policies"][name]["win_rate"] == results["methods"][name]["win_rate"]

    # the distillation methods trained on rewards from the 3-member family
    scored = read_records(out / "reward_family" / "scored.jsonl")
    assert scored and all(len(r["chosen_rewards"]) == 3 == len(r["rejected_rewards"]) for r in scored)

    report = (out / "report.md").read_text()
    family = json.loads((out / "reward_family" / "family" / "family.json").read_text())
    accuracy = family["heldout"]["mean_of_members"]["accuracy"]
    assert f"accuracy {accuracy:.3f}" in report   # the family's held-out metrics are reported, not left blank
    # ... and its accuracy on the unbiased validation pairs, recomputed here from the family's raw scores
    from robustpo.rewards import load_family

    pairs = read_records(quick_testbed.validation_path)
    fam = load_family(out / "reward_family" / "family")
    prompts = [p["prompt"] for p in pairs]
    delta = (fam.score(prompts, [p["chosen"] for p in pairs])
             - fam.score(prompts, [p["rejected"] for p in pairs])).mean(dim=1)   # the family-mean reward
    family_acc = ((delta > 0).float() + 0.5 * (delta == 0).float()).mean().item()   # ties count ½
    assert f"validation pairs: accuracy {family_acc:.3f}" in report
    table_rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in table_rows[1:]] == [*METHODS, "reference"]
    for png in ("win_rates.png", "reward_vs_kl.png", "training_curves.png"):
        assert f"({png})" in report and (out / png).stat().st_size > 0
    assert all(f"| {name} |" in printed for name in METHODS)   # the table is printed too

    # a rerun with the same settings reuses every finished policy instead of retraining it
    assert main(["demo", "--quick", "--methods", "dpo", "--out", str(out), "--cache-dir", cache]) == 0
    assert "finished earlier with the same config, reused" in capsys.readouterr().out

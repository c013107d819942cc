"""`robustpo demo --quick` end to end: outputs exist, every requested method is in them,
and the numbers obey what must hold whatever the training did."""

import json

import pytest

from robustpo.cli import main
from robustpo.data.io import read_records

# both data paths (plain pairs, reward-scored pairs) and the families validation picks
METHODS = ["dpo", "minor_dpo", "distill", "e_dpo", "distill@picked", "e_dpo@picked"]


def test_demo_quick_end_to_end(quick_testbed, tmp_path, capsys):
    out = tmp_path / "demo"
    cache = str(quick_testbed.config.cache_dir)   # the session's quick testbed: built once, found here
    assert main(["demo", "--quick", "--rho", "0.2", "--seed", "0", "--methods", *METHODS,
                 "--out", str(out), "--cache-dir", cache]) == 0
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    assert results["rho"] == 0.2 and results["seed"] == 0
    # the picked constructions: the best family-mean validation accuracy among the candidates
    # (for e_dpo, among those with more than one member)
    families = results["families"]
    assert set(families) == {"bootstrap", "debiased", "span", "reweight"}
    accuracy = {name: f["validation_accuracy"] for name, f in families.items()}
    picked = {m: next(n for n, f in families.items() if f"{m}@{n}" in f["used_by"]) for m in ("distill", "e_dpo")}
    assert accuracy[picked["distill"]] == max(accuracy[n] for n in ("debiased", "span", "reweight"))
    assert accuracy[picked["e_dpo"]] == max(accuracy[n] for n in ("span", "reweight"))
    names = [m.replace("picked", picked[m.split("@")[0]]) if "@" in m else m for m in METHODS]
    assert list(results["methods"]) == names
    n_prompts = quick_testbed.config.n_test_prompts
    for name, m in results["methods"].items():
        assert set(m) == {"win_rate", "win_rate_ci", "gold_reward", "length", "kl", "logratio_chosen"}
        lo, hi = m["win_rate_ci"]
        assert lo <= m["win_rate"] <= hi
        # one sample per prompt, wins scored 1 / ½ / 0: the rate is a multiple of 1/(2n)
        assert abs(m["win_rate"] * 2 * n_prompts - round(m["win_rate"] * 2 * n_prompts)) < 1e-6
        assert 0.0 <= m["length"] <= quick_testbed.config.max_new_tokens
        assert m["kl"] == m["kl"] and m["logratio_chosen"] == m["logratio_chosen"]   # measured, not NaN
        assert (out / "policies" / name / "final" / "config.json").exists()
    assert set(results["reference"]) == {"gold_reward", "length"}

    # results.json agrees with the full evaluation it summarises
    full = json.loads((out / "eval.json").read_text())
    for name in names:
        assert full["policies"][name]["win_rate"] == results["methods"][name]["win_rate"]

    # the bootstrap methods trained on rewards from the 3-member family, the picked ones on theirs
    scored = read_records(out / "reward_families" / "bootstrap.scored.jsonl")
    assert scored and all(len(r["chosen_rewards"]) == 3 == len(r["rejected_rewards"]) for r in scored)
    import yaml

    for name in names[-2:]:
        family = name.split("@")[1]
        trained_on = yaml.safe_load((out / "policies" / name / "config.yaml").read_text())["data"]["train"]
        assert trained_on == str(out / "reward_families" / f"{family}.scored.jsonl")
    assert families[picked["e_dpo"]]["members"] == 3

    report = (out / "report.md").read_text()
    family = json.loads((out / "reward_families" / "bootstrap" / "family.json").read_text())
    held = family["heldout"]["mean_of_members"]["accuracy"]
    assert f"accuracy {held:.3f}" in report   # the family's held-out metrics are reported, not left blank
    # ... and each family's accuracy on the unbiased validation pairs, recomputed here from its raw scores
    from robustpo.rewards import load_family

    pairs = read_records(quick_testbed.validation_path)
    prompts = [p["prompt"] for p in pairs]
    for name, f in families.items():
        fam = load_family(out / "reward_families" / name)
        delta = (fam.score(prompts, [p["chosen"] for p in pairs])
                 - fam.score(prompts, [p["rejected"] for p in pairs])).mean(dim=1)   # the family-mean reward
        family_acc = ((delta > 0).float() + 0.5 * (delta == 0).float()).mean().item()   # ties count ½
        assert f["validation_accuracy"] == pytest.approx(family_acc, abs=1e-9)
        assert f"| {name} | {f['members']} | {family_acc:.3f} |" in report
    table_rows = [line for line in report.splitlines() if line.startswith("| ") and "reward family" not in line]
    assert [row.split("|")[1].strip() for row in table_rows[1:len(names) + 2]] == [*names, "reference"]
    for png in ("win_rates.png", "reward_vs_kl.png", "training_curves.png"):
        assert f"({png})" in report and (out / png).stat().st_size > 0
    assert all(f"| {name} |" in printed for name in names)   # the table is printed too

    # a rerun with the same settings reuses every finished policy instead of retraining it
    assert main(["demo", "--quick", "--methods", "dpo", "--out", str(out), "--cache-dir", cache]) == 0
    assert "finished earlier with the same config, reused" in capsys.readouterr().out

"""`robustpo eval` and `robustpo report` through the real CLI entry point."""

import json
import shutil

import pytest
import torch

from robustpo.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics_rows(margin_slope: float, steps: int = 5):
    return [{"step": s, "loss": 0.69 - 0.05 * s, "rewards/margins": margin_slope * s,
             "rewards/chosen": 0.1 * s, "rewards/rejected": 0.1 * s - margin_slope * s,
             "logratio/chosen": 1.0 * s, "logratio/rejected": 1.0 * s - 10 * margin_slope * s}
            for s in range(1, steps + 1)]


def _write_run(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def evaluated(quick_testbed, tmp_path_factory):
    """One eval run: a copy of the reference posing as a finished training run, and a
    noised copy of the reference (a policy that really differs)."""
    from robustpo.models import load_for_inference

    tb, root = quick_testbed, tmp_path_factory.mktemp("eval")
    run = root / "run-same"
    shutil.copytree(tb.reference_path, run / "final")
    _write_run(run, _metrics_rows(0.5))
    model, tok = load_for_inference(tb.reference_path)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    model.save_pretrained(root / "noisy")
    tok.save_pretrained(root / "noisy")
    out = root / "out"
    code = main(["eval", "--policy", str(run), "--policy", f"noisy={root / 'noisy'}",
                 "--reference", str(tb.reference_path), "--prompts", str(tb.test_prompts_path),
                 "--gold", "testbed", "--judge", f"function:{tb.gold_judge_spec}",
                 "--train-pairs", str(tb.dataset(0.2)), "--max-new-tokens", str(tb.config.max_new_tokens),
                 "--samples-per-prompt", "2", "--out", str(out)])
    assert code == 0
    return json.loads((out / "eval.json").read_text()), out


def test_policy_equal_to_reference_wins_half_with_zero_kl(evaluated):
    """Identical models sampled with different seeds: the gold and judge win rates' 95%
    intervals contain 0.5 (and are narrow enough to mean something), the KL estimate is 0
    within its interval, and the training pairs' log-ratios are exactly 0."""
    result, _ = evaluated
    same = result["policies"]["run-same"]
    for key in ("gold_win_rate_ci", "judge_win_rate_ci"):
        lo, hi = same[key]
        assert lo <= 0.5 <= hi and hi - lo < 0.35, (key, lo, hi)
    assert same["kl_ci"][0] <= 0.0 <= same["kl_ci"][1] and abs(same["kl"]) < 1e-5
    assert same["judge_disagreement_rate"] == 0.0  # the gold judge is symmetric
    pairs = same["train_pairs"]
    assert pairs["n_pairs"] == 128 and abs(pairs["logratio_chosen"]) < 1e-5 and abs(pairs["logratio_rejected"]) < 1e-5
    # The gold reward of the identical policy is the reference's, within sampling error.
    ref = result["reference"]
    se = (same["gold_reward_se"] ** 2 + ref["gold_reward_se"] ** 2) ** 0.5
    assert abs(same["gold_reward"] - ref["gold_reward"]) < 4 * se


def test_a_different_policy_has_positive_kl_and_nonzero_log_ratios(evaluated):
    result, _ = evaluated
    noisy = result["policies"]["noisy"]
    assert noisy["kl_ci"][0] > 0.0  # KL ≥ 0, and these models differ
    assert noisy["train_pairs"]["logratio_chosen"] != 0.0
    assert noisy["win_rate_ci"][0] <= noisy["win_rate"] <= noisy["win_rate_ci"][1]


def test_eval_writes_json_markdown_and_real_pngs(evaluated):
    result, out = evaluated
    md = (out / "eval.md").read_text()
    assert "| run-same |" in md and "| noisy |" in md and "| reference |" in md
    # training_curves.png exists because run-same is a run folder with metrics.jsonl.
    for name in ("win_rates.png", "reward_vs_kl.png", "training_curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert result["settings"]["win_rate_interval"].startswith("95% percentile bootstrap")
    assert result["settings"]["samples_per_prompt"] == 2
    assert "samples" not in result  # kept out of eval.json, in samples.jsonl instead


def test_samples_file_lets_anyone_recompute_the_win_rate(evaluated, quick_testbed):
    """Recompute from samples.jsonl alone: gold rewards from the texts with the task's own
    function, and the win rate as the mean of 1 / ½ / 0 (two samples for every prompt, so
    the mean of per-prompt means is the plain mean)."""
    from robustpo.data.io import read_records
    from robustpo.testbed.task import gold_reward

    result, out = evaluated
    rows = [r for r in read_records(out / "samples.jsonl") if r["policy_name"] == "noisy"]
    assert len(rows) == 2 * quick_testbed.config.n_test_prompts
    wins = []
    for r in rows:
        assert r["policy_gold"] == pytest.approx(gold_reward(r["prompt"], r["policy"]))
        assert r["reference_gold"] == pytest.approx(gold_reward(r["prompt"], r["reference"]))
        mine, theirs = r["policy_gold"], r["reference_gold"]
        wins.append(1.0 if mine > theirs else 0.5 if mine == theirs else 0.0)
    assert result["policies"]["noisy"]["gold_win_rate"] == pytest.approx(sum(wins) / len(wins))
    assert result["policies"]["noisy"]["kl"] == pytest.approx(sum(r["kl_term"] for r in rows) / len(rows), abs=1e-6)


def test_report_draws_runs_side_by_side(tmp_path):
    """Final values in the table are the last logged rows: run a has margin 0.5·5 = 2.5,
    run b has margin 2.0·5 = 10.0 and logratio/rejected 5 − 10·2·5 = −95."""
    _write_run(tmp_path / "a", _metrics_rows(0.5))
    _write_run(tmp_path / "b", _metrics_rows(2.0))
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    row_b = next(line for line in md.splitlines() if line.startswith("| b |"))
    cells = [c.strip() for c in row_b.strip("|").split("|")]
    assert cells[1] == "5" and float(cells[3]) == 10.0 and float(cells[6]) == -95.0
    assert (tmp_path / "rep" / "training_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_clear_errors_for_bad_inputs(tmp_path, capsys, quick_testbed):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "document: a apple summary:"}\n{"text": "no prompt"}\n')
    ref = str(quick_testbed.reference_path)
    assert main(["eval", "--policy", ref, "--reference", ref, "--prompts", str(bad), "--gold", "testbed",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "prompts.jsonl" in err and "row 2" in err and "'prompt'" in err
    assert main(["eval", "--policy", ref, "--reference", ref, "--prompts", str(quick_testbed.test_prompts_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "gold reward function or a judge" in capsys.readouterr().err

"""Tables and plots from result dicts alone (no models)."""

from robustpo.eval.report import final_values, markdown_table, write_eval_outputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _judge_only_result():
    policy = {"path": "runs/x", "win_rate": 0.62, "win_rate_ci": [0.55, 0.69], "win_rate_by": "judge",
              "judge_win_rate": 0.62, "judge_win_rate_ci": [0.55, 0.69], "judge_disagreement_rate": 0.1,
              "length": 12.5, "kl": 3.25, "kl_se": 0.5, "kl_ci": [2.27, 4.23]}
    return {"settings": {"win_rate_interval": "95% percentile bootstrap over prompts"},
            "reference": {"path": "ref", "length": 10.0}, "policies": {"x": policy}}


def test_judge_only_table_has_no_gold_columns():
    md = markdown_table(_judge_only_result())
    header, _, row, ref = md.strip().splitlines()
    assert "win rate vs ref (judge)" in header and "gold" not in header and "Δ(w)" not in header
    assert row == "| x | 0.620 [0.550, 0.690] | 12.50 | 3.250 ± 0.500 |"
    assert ref.startswith("| reference | 0.5")


def test_eval_outputs_from_a_result_dict(tmp_path):
    paths = write_eval_outputs(_judge_only_result(), tmp_path)
    assert paths["json"].exists() and paths["markdown"].exists()
    assert paths["samples"].read_text() == ""  # no per-sample rows in this result
    for key in ("win_rates", "reward_vs_kl"):
        assert paths[key].read_bytes().startswith(PNG_MAGIC)
    assert "training_curves" not in paths  # runs/x has no metrics.jsonl


def test_final_values_take_the_last_logged_value_of_each_key():
    rows = [{"step": 1, "loss": 0.7, "kl_forward": 0.1}, {"step": 2, "loss": 0.6}, {"step": 3, "grad_norm": 2.0}]
    assert final_values(rows) == {"step": 3, "loss": 0.6, "kl_forward": 0.1, "grad_norm": 2.0}


def test_report_draws_and_tabulates_eval_rows_beside_training(tmp_path, monkeypatch):
    import json

    from robustpo.eval import report

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss": 0.7 - 0.01 * s, "rewards/margins": 0.1 * s} for s in (1, 2, 3, 4)]
    rows += [{"step": 2, "eval/loss": 0.69, "eval/rewards/margins": 0.15, "eval/rewards/accuracies": 0.5},
             {"step": 4, "eval/loss": 0.66, "eval/rewards/margins": 0.35, "eval/rewards/accuracies": 0.75}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["step"])))
    figures = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    text = report.write_report([run], tmp_path / "out").read_text()
    header, _, line = text.splitlines()[-3:]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    assert cells["eval/loss"] == "0.660" and cells["eval/rewards/accuracies"] == "0.750"
    assert cells["loss"] == "0.660" and cells["step"] == "4"
    loss_panel = [ax for ax in figures[0].axes if ax.get_title() == "loss"][0]
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in loss_panel.lines}
    assert drawn["run (eval)"] == ([2, 4], [0.69, 0.66])      # the eval curve, beside
    assert drawn["run"] == ([1, 2, 3, 4], [0.7 - 0.01 * s for s in (1, 2, 3, 4)])   # the training curve

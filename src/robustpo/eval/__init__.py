"""Evaluation: win rate against the reference (gold reward or judge), gold reward, length,
KL(π‖π_ref), the Δ(w)/Δ(l) collapse diagnostic, and reports with plots.

    from robustpo.eval import evaluate_policies, write_eval_outputs
    result = evaluate_policies({"dpo": run_dir}, reference_path, prompts, gold_fn=gold_rewards)
    write_eval_outputs(result, out_dir)
"""

from robustpo.eval.evaluate import EvalSettings, evaluate_policies, evaluate_policy
from robustpo.eval.report import (markdown_table, plot_training_curves, plot_win_rates, read_metrics, results_summary,
                                  write_eval_outputs, write_report)

__all__ = ["EvalSettings", "evaluate_policies", "evaluate_policy", "markdown_table", "plot_training_curves",
           "plot_win_rates", "read_metrics", "results_summary", "write_eval_outputs", "write_report"]

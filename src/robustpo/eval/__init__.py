"""Evaluation: win rate against the reference (gold reward or judge), gold reward, length,
KL(π‖π_ref), the Δ(w)/Δ(l) collapse diagnostic, and reports with plots.

    from robustpo.eval import evaluate_policies, write_eval_outputs
    result = evaluate_policies({"dpo": run_dir}, reference_path, prompts, gold_fn=gold_rewards)
    write_eval_outputs(result, out_dir)

`robustpo.eval(policies, reference, prompts, out=...)` does what `robustpo eval` does
(robustpo.api.evaluate): this package is callable, its names resolve as below.

Names resolve lazily: `robustpo.eval.commands` is imported by the CLI at start-up, and must
not pull in torch for `robustpo --help`.
"""

import importlib

from robustpo.api import evaluate as _evaluate, make_callable

_EXPORTS = {
    "EvalSettings": "evaluate", "evaluate_policies": "evaluate", "evaluate_policy": "evaluate",
    "markdown_table": "report", "plot_training_curves": "report", "plot_win_rates": "report",
    "read_metrics": "report", "results_summary": "report", "write_eval_outputs": "report",
    "write_report": "report",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"robustpo.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'robustpo.eval' has no attribute '{name}'")


make_callable(__name__, _evaluate)

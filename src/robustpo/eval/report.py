"""Tables and plots: evaluation results and the training curves of runs.

Training runs write RUN_DIR/metrics.jsonl, one object per logging step with `step` and
some of: loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies,
logps/chosen, logps/rejected, logratio/chosen, logratio/rejected, kl_forward, grad_norm, lr.
Evaluations during training (data.eval / data.eval_fraction) are rows of `step` and the same
metrics prefixed `eval/`; they are drawn in the same panels as dotted lines with dots.
The curves that tell robust runs from degenerate ones: the margin (runs off to infinity
under DPO with single annotations), `logratio/chosen` (below zero: the preferred response
is losing likelihood) and the implicit rewards' magnitude.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from robustpo.data.io import atomic_path, read_records, write_json_atomic, write_jsonl_atomic

EVAL_KEYS = ["eval/loss", "eval/rewards/margins", "eval/rewards/accuracies", "eval/logratio/chosen",
             "eval/kl_forward"]   # the report table's columns of the last evaluation, when logged
CURVE_PANELS = [  # (title, [(metric key, line style)])
    ("reward margin  β·(Δ(w) − Δ(l))", [("rewards/margins", "-")]),
    ("log-ratio Δ = log π − log π_ref  (chosen —, rejected - -)",
     [("logratio/chosen", "-"), ("logratio/rejected", "--")]),
    ("implicit rewards β·Δ  (chosen —, rejected - -)", [("rewards/chosen", "-"), ("rewards/rejected", "--")]),
    ("loss", [("loss", "-")]),
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# ------------------------------------------------------------------ evaluation results


def markdown_table(result: dict) -> str:
    """One row per policy plus the reference; columns present only when measured."""
    policies = result["policies"]
    has_gold = "gold_reward" in result["reference"]
    has_judge = any("judge_win_rate" in p for p in policies.values())
    has_pairs = any("train_pairs" in p for p in policies.values())
    by = next(iter(policies.values()))["win_rate_by"] if policies else ""
    head = ["method", f"win rate vs ref ({by}) [95% CI]"]
    head += ["judge win rate [95% CI]", "judge order disagreement"] if has_judge and has_gold else []
    head += ["gold reward"] if has_gold else []
    head += ["length", "KL(π‖π_ref) ± se"]
    head += ["Δ(w) train", "Δ(l) train"] if has_pairs else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, p in policies.items():
        cells = [name, f"{_fmt(p['win_rate'])} [{_fmt(p['win_rate_ci'][0])}, {_fmt(p['win_rate_ci'][1])}]"]
        if has_judge and has_gold:
            ci = p.get("judge_win_rate_ci", [None, None])
            cells += [f"{_fmt(p.get('judge_win_rate'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]",
                      _fmt(p.get("judge_disagreement_rate"))]
        cells += [_fmt(p.get("gold_reward"))] if has_gold else []
        cells += [_fmt(p["length"], 2), f"{_fmt(p['kl'])} ± {_fmt(p['kl_se'])}"]
        if has_pairs:
            tp = p.get("train_pairs", {})
            cells += [_fmt(tp.get("logratio_chosen"), 2), _fmt(tp.get("logratio_rejected"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    ref = result["reference"]
    cells = ["reference", "0.5 (by definition)"] + (["–", "–"] if has_judge and has_gold else [])
    cells += [_fmt(ref.get("gold_reward"))] if has_gold else []
    cells += [_fmt(ref["length"], 2), "0"] + (["0", "0"] if has_pairs else [])
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_summary(result: dict, **header) -> dict:
    """The compact per-method summary (the demo's results.json): `header` (e.g. rho, seed)
    + {"methods": {name: win_rate, win_rate_ci, gold_reward, length, kl, logratio_chosen},
    "reference": {gold_reward, length}}. Keys not measured are None."""
    keys = ("win_rate", "win_rate_ci", "gold_reward", "length", "kl", "logratio_chosen")
    return {**header,
            "methods": {name: {k: p.get(k) for k in keys} for name, p in result["policies"].items()},
            "reference": {k: result["reference"].get(k) for k in ("gold_reward", "length")}}


def plot_win_rates(result: dict, path: Path) -> Path:
    plt = _pyplot()
    names = list(result["policies"])
    rates = [result["policies"][n]["win_rate"] for n in names]
    lo = [r - result["policies"][n]["win_rate_ci"][0] for n, r in zip(names, rates)]
    hi = [result["policies"][n]["win_rate_ci"][1] - r for n, r in zip(names, rates)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * len(names)), 3.6))
    ax.bar(names, rates, yerr=[lo, hi], capsize=4, color="#4C72B0")
    ax.axhline(0.5, color="grey", lw=1, ls="--", label="reference (0.5)")
    by = next(iter(result["policies"].values()))["win_rate_by"] if names else ""
    ax.set(ylim=(0, 1), ylabel=f"win rate vs reference ({by})", title="Win rate by method, 95% bootstrap CI")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_reward_vs_kl(result: dict, path: Path) -> Path:
    """Each policy at (KL to the reference, gold reward or win rate): the usual frontier."""
    plt = _pyplot()
    key = "gold_reward" if "gold_reward" in result["reference"] else "win_rate"
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ref_y = result["reference"].get("gold_reward", 0.5)
    ax.scatter([0.0], [ref_y], color="black", marker="*", s=90, label="reference")
    for name, p in result["policies"].items():
        ax.errorbar(p["kl"], p[key], xerr=1.96 * p["kl_se"], fmt="o", capsize=3)
        ax.annotate(name, (p["kl"], p[key]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel="KL(π‖π_ref), nats per response", ylabel=key.replace("_", " "),
           title=f"{key.replace('_', ' ')} against KL")
    ax.legend(fontsize=8)
    return _save(fig, path)


# -------------------------------------------------------------------- training runs


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return read_records(path) if path.exists() else []


def find_run_dir(model_path: str | Path) -> Path | None:
    """The training run a model folder came from (RUN_DIR or RUN_DIR/final), if any."""
    path = Path(model_path)
    for candidate in (path, path.parent):
        if (candidate / "metrics.jsonl").exists():
            return candidate
    return None


def curve_points(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in the rows that logged it."""
    return [(r["step"], r[key]) for r in rows if key in r and r[key] is not None and "step" in r]


def plot_training_curves(runs: dict[str, list[dict]], path: Path) -> Path:
    """Runs side by side: one panel per diagnostic, one colour per run; each panel's eval/ series
    (evaluations during training) beside its training series, dotted with dots."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, series) in zip(axes.flat, CURVE_PANELS):
        drawn = False
        for i, (name, rows) in enumerate(runs.items()):
            for key, style in series:
                for shown, line, label in ((key, style, name if style == "-" else None),
                                           (f"eval/{key}", ":o", f"{name} (eval)" if style == "-" else None)):
                    pts = curve_points(rows, shown)
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(xs, ys, line, color=colours[i % len(colours)], lw=1.5, ms=3, label=label)
                        drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        if "log-ratio" in title or "margin" in title or "implicit" in title:
            ax.axhline(0.0, color="grey", lw=0.8)
        ax.set(title=title, xlabel="step")
        ax.title.set_fontsize(10)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        if not handles:
            handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return _save(fig, path)


def final_values(rows: list[dict]) -> dict:
    """The last logged value of each metric."""
    out: dict = {}
    for r in rows:
        out.update({k: v for k, v in r.items() if v is not None})
    return out


def write_report(run_dirs: list[str | Path], out_dir: str | Path, *, names: list[str] | None = None) -> Path:
    """report.md + training_curves.png comparing finished runs. Returns the report path."""
    out_dir = Path(out_dir)
    names = names or [Path(d).name or str(d) for d in run_dirs]
    runs = {n: read_metrics(d) for n, d in zip(names, run_dirs)}
    plot_training_curves(runs, out_dir / "training_curves.png")
    keys = ["step", "loss", "rewards/margins", "rewards/accuracies", "logratio/chosen", "logratio/rejected",
            "rewards/chosen", "rewards/rejected", "kl_forward"]
    evaluated = {k for rows in runs.values() for r in rows for k in r if k.startswith("eval/")}
    keys += [k for k in EVAL_KEYS if k in evaluated]
    lines = ["# Training runs", "", "![training curves](training_curves.png)", "",
             "Final logged values:", "", "| run | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, rows in runs.items():
        last = final_values(rows)
        lines.append(f"| {name} | " + " | ".join(
            str(last[k]) if k == "step" and k in last else _fmt(last.get(k)) for k in keys) + " |")
    report = out_dir / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def write_eval_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """eval.json, eval.md and PNG plots (win rates, reward vs KL, training curves when found)."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "eval.json", "markdown": out_dir / "eval.md", "samples": out_dir / "samples.jsonl"}
    samples = result.get("samples", {})
    write_json_atomic(paths["json"], {k: v for k, v in result.items() if k != "samples"})
    write_jsonl_atomic(paths["samples"], [{"policy_name": name, **row}
                                          for name, rows in samples.items() for row in rows])
    paths["win_rates"] = plot_win_rates(result, out_dir / "win_rates.png")
    paths["reward_vs_kl"] = plot_reward_vs_kl(result, out_dir / "reward_vs_kl.png")
    md = ["# Evaluation", "", markdown_table(result), "",
          f"Win rates: {result['settings']['win_rate_interval']}; KL: mean of log π − log π_ref over the "
          "policy's own samples ± its standard error.", "",
          "![win rates](win_rates.png)", "", "![reward vs KL](reward_vs_kl.png)"]
    runs = {n: find_run_dir(p["path"]) for n, p in result["policies"].items()}
    runs = {n: read_metrics(d) for n, d in runs.items() if d is not None}
    if runs:
        paths["training_curves"] = plot_training_curves(runs, out_dir / "training_curves.png")
        md += ["", "![training curves](training_curves.png)"]
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    return paths


def load_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))

"""The robustness grid's tables (OUT/results.md) and figures.

Every comparison is given as mean ± standard error over seeds (a seed is a whole testbed);
gains over DPO are paired by seed (the same testbed, reference and data), so their standard
error is that of the per-seed differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_se(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def fmt(values, digits: int = 3) -> str:
    m, se = mean_se(values)
    return "–" if np.isnan(m) else (f"{m:.{digits}f} ± {se:.{digits}f}" if not np.isnan(se) else f"{m:.{digits}f}")


def paired_gain(rows, method, n, rho, key="win_rate") -> list[float]:
    by_seed = {r["seed"]: r[key] for r in rows if r["method"] == "dpo" and r["n"] == n and r["rho"] == rho}
    return [r[key] - by_seed[r["seed"]] for r in rows
            if r["method"] == method and r["n"] == n and r["rho"] == rho and r["seed"] in by_seed]


def method_table(rows, n, rhos, key, digits=3, gain=False) -> list[str]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"ρ = {rho:g}" for rho in rhos) + " |", "|---|" + "---|" * len(rhos)]
    for m in methods:
        if gain and m == "dpo":
            continue
        cells = [fmt(paired_gain(rows, m, n, rho, key) if gain else
                     [r[key] for r in rows if r["method"] == m and r["n"] == n and r["rho"] == rho], digits)
                 for rho in rhos]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def family_table(family_rows, n, rhos) -> list[str]:
    names = list(dict.fromkeys(r["family"] for r in family_rows if r["n"] == n and r["epochs"] is None))
    lines = ["| reward family (variant) | " + " | ".join(f"ρ = {rho:g}" for rho in rhos) + " |",
             "|---|" + "---|" * len(rhos)]
    for name in names:
        cells = [fmt([r["accuracy"] for r in family_rows if r["family"] == name and r["n"] == n and r["rho"] == rho])
                 for rho in rhos]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, title in (("probe", "gold-feature probe (reference line)"),
                       ("probe_no_length", "gold-feature probe without length")):
        cells = []
        for rho in rhos:
            per_seed = {r["seed"]: r[key] for r in family_rows if r["n"] == n and r["rho"] == rho}
            cells.append(fmt(list(per_seed.values())))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def data_size_table(rows, rhos_big) -> list[str]:
    lines = ["| method | " + " | ".join(f"ρ = {rho:g}, N = {n}" for rho in rhos_big for n in (512, 2048)) + " |",
             "|---|" + "---|" * (2 * len(rhos_big))]
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = [fmt([r["win_rate"] for r in rows if r["method"] == m and r["n"] == n and r["rho"] == rho])
                 for rho in rhos_big for n in (512, 2048)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def budget_table(budget, grid, n0) -> list[str]:
    lines = ["| ρ | method | epochs | width | family validation accuracy | win rate | gain over DPO (paired) |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["rho"], r["method"], r["epochs"], r["width"]) for r in budget})
    for rho, m, e, w in keys:
        cell = [r for r in budget if (r["rho"], r["method"], r["epochs"], r["width"]) == (rho, m, e, w)]
        dpo = {r["seed"]: r["win_rate"] for r in grid if r["method"] == "dpo" and r["n"] == n0 and r["rho"] == rho}
        gains = [r["win_rate"] - dpo[r["seed"]] for r in cell if r["seed"] in dpo]
        lines.append(f"| {rho:g} | {m} | {e} | {w} | {fmt([r['family_val_acc'] for r in cell])} | "
                     f"{fmt([r['win_rate'] for r in cell])} | {fmt(gains)} |")
    return lines


def plot_win_rate(rows, n, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups = {"baselines": [m for m in methods if "@" not in m],
              "distillation, by reward family (DPO dashed)": ["dpo"] + [m for m in methods if "@" in m]}
    for ax, (title, group) in zip(axes, groups.items()):
        for m in group:
            xs = sorted({r["rho"] for r in rows if r["method"] == m and r["n"] == n})
            stats = [mean_se([r["win_rate"] for r in rows if r["method"] == m and r["n"] == n and r["rho"] == x])
                     for x in xs]
            ax.errorbar(xs, [s[0] for s in stats], yerr=[0 if np.isnan(s[1]) else s[1] for s in stats], marker="o",
                        capsize=3, label=m, ls="--" if m == "dpo" else "-")
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set(xlabel="ρ (fraction of longer-preferred pairs)", title=title)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("gold win rate vs reference (mean ± s.e.)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gain_vs_precondition(rows, budget, family_rows, n0, path: Path) -> None:
    """One point per (cell, method): x = the family's validation accuracy, y = win rate − DPO's."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    dpo = {(r["n"], r["rho"], r["seed"]): r["win_rate"] for r in rows if r["method"] == "dpo"}
    points = [r for r in rows if r.get("family_val_acc") is not None] + \
             [{**r, "n": n0} for r in budget]
    for family, color in zip(("bootstrap", "lm_bootstrap", "debiased", "span", "reweight"),
                             ("C3", "C4", "C0", "C2", "C1")):
        for obj, marker in (("distill", "o"), ("e_dpo", "^")):
            pts = [r for r in points if r["method"] == f"{obj}@{family}" and (r["n"], r["rho"], r["seed"]) in dpo]
            if pts:
                ax.scatter([r["family_val_acc"] for r in pts],
                           [r["win_rate"] - dpo[(r["n"], r["rho"], r["seed"])] for r in pts],
                           c=color, marker=marker, s=18, alpha=0.7, label=f"{obj}@{family}")
    probe = np.mean([r["probe"] for r in family_rows])
    ax.axvline(probe, color="k", ls="--", lw=1, label=f"gold-feature probe ({probe:.2f})")
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.axhline(0.0, color="grey", ls=":", lw=1)
    ax.set(xlabel="family accuracy on the unbiased validation pairs (the precondition)",
           ylabel="win rate − DPO's (same testbed, ρ, N)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lines(rows, key, ylabel, path: Path, x="rho", logx=False) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in dict.fromkeys(r["method"] for r in rows):
        xs = sorted({r[x] for r in rows if r["method"] == m})
        stats = [mean_se([r[key] for r in rows if r["method"] == m and r[x] == v]) for v in xs]
        ax.errorbar(xs, [s[0] for s in stats], yerr=[0 if np.isnan(s[1]) else s[1] for s in stats], marker="o",
                    capsize=3, label=m)
    ax.set(xlabel=x, ylabel=ylabel)
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, grid, family_rows, budget, lr_rows, selection, *, seeds, n0) -> None:
    rhos = sorted({r["rho"] for r in grid if r["n"] == n0})
    big = sorted({r["rho"] for r in grid if r["n"] == 2048})
    s = f"seeds {', '.join(map(str, seeds))}: mean ± s.e. over {len(seeds)} seed(s)"
    md = [f"# Robustness grid results ({s})", "",
          f"## Gold win rate against the reference, N = {n0}", "", *method_table(grid, n0, rhos, "win_rate"), "",
          f"## Win-rate gain over DPO, paired by seed, N = {n0}", "",
          *method_table(grid, n0, rhos, "win_rate", gain=True), "",
          f"## Final Δ(w) on the training pairs (nats), N = {n0}", "",
          *method_table(grid, n0, rhos, "logratio_chosen", digits=2), "",
          f"## KL(π‖π_ref), N = {n0}", "", *method_table(grid, n0, rhos, "kl", digits=2), "",
          f"## The precondition: family-mean accuracy on the unbiased validation pairs, N = {n0}", "",
          *family_table(family_rows, n0, rhos), ""]
    if big:
        md += ["## Data size: win rate at N = 512 and N = 2,048", "", *data_size_table(grid, big), "",
               "## The precondition at N = 2,048", "", *family_table(family_rows, 2048, big), ""]
    if budget:
        md += ["## Reward-model budget (epochs × backbone width), N = 512", "", *budget_table(budget, grid, n0), ""]
    if selection:
        chosen = [r for r in selection if r["chosen"]]
        md += ["## Hyperparameters chosen on the validation prompts (first seed)", "",
               "| ρ | method | chosen | validation win rate |", "|---|---|---|---|",
               *[f"| {r['rho']:g} | {r['method']} | {r['hparams']} | {r['val_win_rate']:.3f} |" for r in chosen], ""]
    (out / "results.md").write_text("\n".join(md) + "\n")
    plot_win_rate(grid, n0, out / "win_rate_vs_rho.png")
    plot_gain_vs_precondition(grid, budget, family_rows, n0, out / "gain_vs_precondition.png")
    plot_lines([r for r in grid if r["n"] == n0], "logratio_chosen", "final Δ(w) on training pairs (nats)",
               out / "logratio_vs_rho.png")
    if lr_rows:
        plot_lines(lr_rows, "win_rate", "gold win rate vs reference", out / "lr_sweep.png", x="lr", logx=True)
        plot_lines(lr_rows, "logratio_chosen", "final Δ(w) (nats)", out / "lr_sweep_logratio.png", x="lr", logx=True)

"""The robustness grid (issue 5, part 4): gold win rate against the length bias ρ, per method.

    python benchmarks/robustness_grid.py --quick          # quick testbed, 1 seed, no β sweep: minutes
    python benchmarks/robustness_grid.py                  # 5 ρ × 9 methods × 3 seeds, β sweep, lr sweep

For every (ρ, seed): the ρ-biased set, a 3-member bootstrap reward family trained on it (for
distill / e_dpo), then each method from the reference under the demo's shared budget
(robustpo.testbed.demo). Hyperparameters are chosen the same way for every method: each
setting of the method's sweep — β (τ for IPO) in --betas, crossed with γ in --gammas for
e_dpo / p_dpo and with the bcr budget δ in --budgets for dpo_bcr — is trained at the first
seed and scored by the gold win rate on the unbiased validation set's prompts (never the
test prompts); the best setting is then used for every seed.
The learning-rate sweep trains dpo and minor_dpo at each --lrs value (ρ = --lr-rho, β = 0.1).

Writes OUT/grid.csv, OUT/lr_sweep.csv, OUT/win_rate_vs_rho.png, OUT/logratio_vs_rho.png,
OUT/lr_sweep.png. Finished runs and evaluations are reused on a rerun.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from robustpo.testbed import demo

EXTRA_METHODS = {"cdpo": {"loss": {"name": "cdpo", "beta": 0.1, "label_smoothing": 0.1}},
                 "dpo_nll": {"loss": {"name": "dpo", "beta": 0.1}, "regularizers": [{"name": "nll", "weight": 1.0}]}}
ALL_METHODS = {**demo.METHODS, **EXTRA_METHODS}
FIELDS = ["rho", "seed", "method", "hparams", "lr", "win_rate", "ci_lo", "ci_hi", "gold_reward", "length", "kl",
          "logratio_chosen"]


def sweep_settings(method: str, betas, gammas, budgets) -> list[dict]:
    """Every hyperparameter setting of `method`'s sweep, as {"loss": {...}, "bcr": {...}} overrides."""
    spec = ALL_METHODS[method]
    strength = "tau" if spec["loss"]["name"] == "ipo" else "beta"
    settings = [{"loss": {strength: b}} for b in betas]
    if "gamma" in spec["loss"]:
        settings = [{"loss": {**s["loss"], "gamma": g}} for s in settings for g in gammas]
    if any(r["name"] == "bcr" for r in spec.get("regularizers", [])):
        settings = [{**s, "bcr": {"budget": d}} for s in settings for d in budgets]
    return settings


def label(setting: dict) -> str:
    return " ".join(f"{k}={v:g}" for part in setting.values() for k, v in part.items())


def config_for(method, data, tb, run_dir, *, seed, quick, setting, lr):
    cfg = demo.policy_config(method, data, tb.reference_path, run_dir, seed=seed, quick=quick,
                             spec=ALL_METHODS[method])
    cfg.loss.params.update(setting["loss"])
    for reg in cfg.regularizers:
        reg.params.update(setting.get(reg.name, {}))
    cfg.train.learning_rate = lr
    return cfg


def evaluate_cached(tb, runs: dict, path: Path, *, prompts=None, rho=None) -> dict:
    """tb.evaluate (or the gold evaluation on other prompts), saved to `path` and reused."""
    # keyed by each run's resolved config, not just its folder: a retrained run is re-evaluated
    key = {name: [str(d), hashlib.sha256((Path(d) / "config.yaml").read_bytes()).hexdigest()]
           for name, d in runs.items()}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["runs"] == key:
            return saved["policies"]
    if prompts is None:
        result = tb.evaluate(runs, rho=rho, log=lambda m: None)
    else:
        from robustpo.eval.evaluate import EvalSettings, evaluate_policies
        from robustpo.testbed import task

        result = evaluate_policies(runs, tb.reference_path, prompts, gold_fn=task.gold_rewards, log=lambda m: None,
                                   settings=EvalSettings(max_new_tokens=tb.config.max_new_tokens, seed=tb.config.seed))
    policies = {n: {k: v for k, v in p.items() if k != "train_pairs"} for n, p in result["policies"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": key, "policies": policies, "reference": result["reference"]}))
    return policies


def row(rho, seed, method, setting, lr, p) -> dict:
    return {"rho": rho, "seed": seed, "method": method, "hparams": label(setting), "lr": lr, "win_rate": p["win_rate"],
            "ci_lo": p["win_rate_ci"][0], "ci_hi": p["win_rate_ci"][1], "gold_reward": p["gold_reward"],
            "length": p["length"], "kl": p["kl"], "logratio_chosen": p.get("logratio_chosen")}


def write_csv(rows: list[dict], path: Path, fields=FIELDS) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def plot_vs(rows, key, ylabel, path, *, x="rho", group="method"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r[group] for r in rows):
        xs = sorted({r[x] for r in rows if r[group] == name})
        cells = [[r for r in rows if r[group] == name and r[x] == v] for v in xs]
        means = [np.mean([r[key] for r in cell]) for cell in cells]
        # error bars: standard error over seeds; with one seed, the run's own 95% bootstrap CI (win rate only)
        if all(len(cell) > 1 for cell in cells):
            err = [np.std([r[key] for r in cell], ddof=1) / np.sqrt(len(cell)) for cell in cells]
        elif key == "win_rate":
            err = [[m - cell[0]["ci_lo"] for m, cell in zip(means, cells)],
                   [cell[0]["ci_hi"] - m for m, cell in zip(means, cells)]]
        else:
            err = None
        ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=name)
    if key == "win_rate":
        ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set(xlabel=x if x != "rho" else "ρ (fraction of longer-preferred pairs)", ylabel=ylabel)
    if x == "lr":
        ax.set_xscale("log")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from robustpo.rewards import score_dataset
    from robustpo.data.io import read_records
    from robustpo.testbed.build import TestbedConfig, build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rhos", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.65, 0.8])
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--methods", nargs="+", choices=list(ALL_METHODS), default=list(ALL_METHODS))
    ap.add_argument("--betas", type=float, nargs="+", help="β (IPO: τ) sweep; default 0.03 0.1 0.3 1 (quick: 0.1)")
    ap.add_argument("--gammas", type=float, nargs="+", help="γ sweep (e_dpo, p_dpo); default 0.03 0.1 0.3 (quick: 0.1)")
    ap.add_argument("--budgets", type=float, nargs="+", help="bcr δ sweep; default 0 0.1 0.5 (quick: 0.1)")
    ap.add_argument("--lrs", type=float, nargs="+", help="lr sweep; default 3e-4 1e-3 3e-3 1e-2 (quick: 1e-3 1e-2)")
    ap.add_argument("--lr-rho", type=float, default=0.5)
    ap.add_argument("--out", default="benchmarks/results/robustness_grid")
    ap.add_argument("--cache-dir")
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    betas = args.betas or ([0.1] if args.quick else [0.03, 0.1, 0.3, 1.0])
    gammas = args.gammas or ([0.1] if args.quick else [0.03, 0.1, 0.3])
    budgets = args.budgets or ([0.1] if args.quick else [0.0, 0.1, 0.5])
    lrs = args.lrs or ([1e-3, 1e-2] if args.quick else [3e-4, 1e-3, 3e-3, 1e-2])
    sweeps = {m: sweep_settings(m, betas, gammas, budgets) for m in args.methods}
    out = Path(args.out)
    work = out / "runs"
    started = time.perf_counter()
    say = lambda m: print(f"[{time.perf_counter() - started:7.1f} s] {m}", flush=True)  # noqa: E731
    base = TestbedConfig.quick if args.quick else TestbedConfig

    def prepared(rho, seed):
        tb = build(base(seed=seed, rhos=(rho,), cache_dir=args.cache_dir), log=say)
        data = tb.dataset(rho)
        scored = None
        if any(ALL_METHODS[m].get("rewards") for m in args.methods):
            family = demo.reward_family(data, tb.reference_path, work / f"rho{rho}_s{seed}" / "reward_family" / "family",
                                        seed=seed, quick=args.quick)
            scored = family.parent / "scored.jsonl"
            score_dataset(family, data, scored, normalize="standardize", overwrite=True, progress=False)
        return tb, data, scored

    def train_all(tb, data, scored, rho, seed, tag, chosen):  # chosen: {method: (setting, lr)}
        runs = {}
        for m, (setting, lr) in chosen.items():
            cfg = config_for(m, scored if ALL_METHODS[m].get("rewards") else data, tb,
                             work / f"rho{rho}_s{seed}" / tag / m, seed=seed, quick=args.quick, setting=setting, lr=lr)
            runs[m] = demo.train_policy(cfg)
        return runs

    grid, selection = [], []
    for rho in args.rhos:
        tb, data, scored = prepared(rho, seeds[0])
        best = {m: settings[0] for m, settings in sweeps.items()}
        if any(len(settings) > 1 for settings in sweeps.values()):   # chosen on validation prompts, first seed
            val_prompts = [r["prompt"] for r in read_records(tb.validation_path)]
            score = {}
            for i in range(max(map(len, sweeps.values()))):
                todo = {m: (settings[i], demo.LEARNING_RATE) for m, settings in sweeps.items() if i < len(settings)}
                runs = train_all(tb, data, scored, rho, seeds[0], f"sweep{i}", todo)
                res = evaluate_cached(tb, runs, work / f"rho{rho}_s{seeds[0]}" / f"sweep{i}.json", prompts=val_prompts)
                score.update({(m, i): res[m]["win_rate"] for m in todo})
            for m, settings in sweeps.items():
                best[m] = settings[max(range(len(settings)), key=lambda i: score[(m, i)])]
                selection += [{"rho": rho, "method": m, "hparams": label(s), "val_win_rate": score[(m, i)],
                               "chosen": s is best[m]} for i, s in enumerate(settings)]
            say(f"ρ={rho}: chosen on validation prompts: " + ", ".join(f"{m} {label(best[m])}" for m in best))
        for seed in seeds:
            tb, data, scored = prepared(rho, seed) if seed != seeds[0] else (tb, data, scored)
            runs = train_all(tb, data, scored, rho, seed, "grid", {m: (best[m], demo.LEARNING_RATE) for m in best})
            res = evaluate_cached(tb, runs, work / f"rho{rho}_s{seed}" / "grid.json", rho=rho)
            grid += [row(rho, seed, m, best[m], demo.LEARNING_RATE, res[m]) for m in best]
            say(f"ρ={rho} seed {seed}: " + ", ".join(f"{m} {res[m]['win_rate']:.3f}" for m in best))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(grid, out / "grid.csv")
    if selection:
        write_csv(selection, out / "selection.csv", fields=list(selection[0]))
    plot_vs(grid, "win_rate", "gold win rate vs reference", out / "win_rate_vs_rho.png")
    plot_vs(grid, "logratio_chosen", "final Δ(w) on training pairs (nats)", out / "logratio_vs_rho.png")

    lr_rows, dpo_setting = [], {"loss": {"beta": 0.1}}
    for seed in seeds:
        tb, data, scored = prepared(args.lr_rho, seed)
        for lr in lrs:
            runs = train_all(tb, data, scored, args.lr_rho, seed, f"lr{lr}",
                             {m: (dpo_setting, lr) for m in ("dpo", "minor_dpo")})
            res = evaluate_cached(tb, runs, work / f"rho{args.lr_rho}_s{seed}" / f"lr{lr}.json", rho=args.lr_rho)
            lr_rows += [row(args.lr_rho, seed, m, dpo_setting, lr, res[m]) for m in runs]
            say(f"lr {lr} seed {seed}: " + ", ".join(f"{m} win {res[m]['win_rate']:.3f} Δ(w) "
                                                    f"{res[m]['logratio_chosen']:.2f}" for m in runs))
    write_csv(lr_rows, out / "lr_sweep.csv")
    plot_vs(lr_rows, "win_rate", "gold win rate vs reference", out / "lr_sweep.png", x="lr")
    plot_vs(lr_rows, "logratio_chosen", "final Δ(w) (nats)", out / "lr_sweep_logratio.png", x="lr")
    say(f"wrote {out}/grid.csv, lr_sweep.csv and figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

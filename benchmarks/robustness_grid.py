"""The robustness grid: gold win rate against the length bias ρ, per method and reward family.

    python benchmarks/robustness_grid.py --quick     # quick testbed, ρ = 0.2, 1 seed, no sweep: < 1 min
    python benchmarks/robustness_grid.py             # the full grid (README: "The robustness grid")

A cell is (N training pairs, ρ, seed); a seed is a whole testbed (reference policy, pairs).
In every cell the grid trains the reward families of grid_plan.FAMILY_VARIANTS on the ρ-biased
set — today's bootstrap family, a debiased reward model, a `span` and a `reweight` family —
measures each on the unbiased validation pairs (the precondition), and trains every method
of grid_plan.METHODS from the reference under the demo's budget (3 epochs of 32-pair batches).
Hyperparameters are chosen the same way for every method: each setting of its sweep is trained
at the first seed (N = 512) and scored by gold win rate on the unbiased validation prompts,
never the test prompts, in two stages (grid_plan.sweep, then grid_plan.refine at the
stage-1 winner); the winner runs at every seed and N. The gold-feature probe
(testbed/probe.py) is the reference line for the precondition. Also: the data-size dimension
(N = 2,048 at --n2048-rhos), the reward-model budget dimension (epochs × backbone width at
--budget-rhos), and the learning-rate sweep of dpo and minor_dpo (ρ = --lr-rho).

Work runs in --jobs processes (one thread each). Finished runs and evaluations are reused on a
rerun. Writes OUT/{grid,families,selection,budget,lr_sweep}.csv, OUT/results.md, the figures
and OUT/provenance.json (the commit and code fingerprints; tests fail when the code changes).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import grid_plan as plan
import grid_report
import provenance
from robustpo.testbed import demo

LR_METHODS = ("dpo", "minor_dpo")


# ----------------------------------------------------------------------------- cells


def testbed_config(args, seed: int):
    from robustpo.testbed.build import TestbedConfig

    base = TestbedConfig.quick if args["quick"] else TestbedConfig
    return base(seed=seed, cache_dir=args["cache_dir"])


def cell_dir(args, n: int, rho: float, seed: int) -> Path:
    return Path(args["work"]) / f"n{n}_rho{rho}_s{seed}"


def family_dir(args, n, rho, seed, family, variant, epochs=None, width=64) -> Path:
    tag = "".join(c for c in f"{family}_{variant}" if c.isalnum() or c in "_.=-,") or family
    budget = f"_e{epochs}_w{width}" if epochs else ""
    return cell_dir(args, n, rho, seed) / "families" / (tag.strip("_") + budget)


def _setup_worker():
    import torch

    torch.set_num_threads(1)      # the grid runs --jobs processes side by side on the cores
    os.environ["TQDM_DISABLE"] = "1"


def _imported() -> list[str]:
    import sys

    return [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]


def prepare(job: dict) -> dict:
    """Train, score and measure the families one cell needs. Returns their validation metrics."""
    from robustpo.data.io import read_records
    from robustpo.rewards import load_family, score_dataset
    from robustpo.testbed.build import build, language_model
    from robustpo.testbed.probe import probe_accuracy

    _setup_worker()
    args, n, rho, seed = job["args"], job["n"], job["rho"], job["seed"]
    config = testbed_config(args, seed)
    tb = build(config, log=lambda m: None)
    data = tb.dataset(rho, n)
    validation = read_records(tb.validation_path)
    train = read_records(data)
    out = {"probe": probe_accuracy(train, validation)["accuracy"],
           "probe_no_length": probe_accuracy(train, validation, drop_length=True)["accuracy"], "families": {}}
    for family, variant, epochs, width in job["families"]:
        folder = family_dir(args, n, rho, seed, family, variant, epochs, width)
        backbone = None if width == 64 else language_model(replace(config, hidden_size=width), log=lambda m: None)
        demo.reward_family(data, tb.reference_path, folder, seed=seed,
                           recipe=plan.family_recipe(family, variant, epochs=epochs), backbone=backbone)
        scored = folder.with_name(folder.name + ".scored.jsonl")
        fam = load_family(folder)
        score_dataset(fam, data, scored, normalize="standardize", overwrite=True, progress=False)
        v = demo.family_validation(fam, folder, tb.validation_path)
        out["families"][str(folder)] = {
            "accuracy": v["mean_of_members"]["accuracy"], "confound_corr": v["mean_of_members"]["confound_corr"],
            "best_member": max(m["accuracy"] for m in v["members"].values()), "members": fam.size,
            "kind": family, "variant": variant, "epochs": epochs, "width": width if epochs else None}
    out["imported"] = _imported()
    return out


def train_eval(job: dict) -> dict:
    """Train one policy (reused if finished) and evaluate it on the validation or test prompts."""
    from robustpo.data.io import read_records
    from robustpo.eval.evaluate import EvalSettings, evaluate_policies
    from robustpo.testbed import task
    from robustpo.testbed.build import build

    _setup_worker()
    args, n, rho, seed = job["args"], job["n"], job["rho"], job["seed"]
    tb = build(testbed_config(args, seed), log=lambda m: None)
    data = Path(job["scored"]) if job.get("scored") else tb.dataset(rho, n)
    spec = plan.method_spec(job["method"], job["setting"])
    spec["train"] = {"max_steps": demo.BUDGET["quick" if args["quick"] else "full"]["max_steps"] * n
                     // tb.config.n_train_pairs, "learning_rate": job.get("lr", demo.LEARNING_RATE)}
    cfg = demo.policy_config(job["method"], data, tb.reference_path, Path(job["run_dir"]), seed=seed,
                             quick=args["quick"], spec=spec)
    run = demo.train_policy(cfg)
    from robustpo.rewards.family import weights_fingerprint

    cache = Path(job["run_dir"]).with_name(Path(job["run_dir"]).name + f".{job['prompts']}.json")
    key = hashlib.sha256((weights_fingerprint(run / "final") + job["prompts"]).encode()).hexdigest()
    if cache.exists() and json.loads(cache.read_text())["key"] == key:
        policy = json.loads(cache.read_text())["policy"]
    else:
        settings = EvalSettings(max_new_tokens=tb.config.max_new_tokens, seed=tb.config.seed)
        if job["prompts"] == "validation":
            prompts, pairs = [r["prompt"] for r in read_records(tb.validation_path)], None
        else:
            prompts, pairs = tb.test_prompts(), read_records(tb.dataset(rho, n))
        result = evaluate_policies({"policy": run}, tb.reference_path, prompts, gold_fn=task.gold_rewards,
                                   train_pairs=pairs, settings=settings, log=lambda m: None)
        policy = {k: v for k, v in result["policies"]["policy"].items() if k != "train_pairs"}
        cache.write_text(json.dumps({"key": key, "policy": policy}))
    return {**{k: job[k] for k in ("n", "rho", "seed", "method")}, "hparams": plan.label(job["setting"]),
            "lr": job.get("lr", demo.LEARNING_RATE), "win_rate": policy["win_rate"],
            "ci_lo": policy["win_rate_ci"][0], "ci_hi": policy["win_rate_ci"][1],
            "gold_reward": policy["gold_reward"], "length": policy["length"], "kl": policy["kl"],
            "logratio_chosen": policy.get("logratio_chosen"), "imported": _imported()}


# ----------------------------------------------------------------------------- phases


class Runner:
    """Runs jobs in worker processes and remembers which source files they imported."""

    def __init__(self, jobs: int):
        import multiprocessing

        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        self.imported: set[str] = set()

    def map(self, fn, jobs: list[dict]) -> list[dict]:
        results = list(self.pool.map(fn, jobs))
        for r in results:
            self.imported.update(r.pop("imported"))
        return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rhos", type=float, nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--methods", nargs="+", choices=list(plan.METHODS))
    ap.add_argument("--n2048-rhos", type=float, nargs="*", help="ρ values of the N = 2,048 cells (default 0.2 0.5)")
    ap.add_argument("--budget-rhos", type=float, nargs="*", help="ρ values of the reward-model budget dimension")
    ap.add_argument("--lrs", type=float, nargs="*", help="lr sweep; default 3e-4 1e-3 3e-3 1e-2 (quick: none)")
    ap.add_argument("--lr-rho", type=float, default=0.5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/robustness_grid")
    ap.add_argument("--cache-dir")
    a = ap.parse_args(argv)
    snap = provenance.snapshot()
    say = lambda m: print(f"[{time.perf_counter() - snap['started']:7.1f} s] {m}", flush=True)  # noqa: E731
    q = a.quick
    rhos = a.rhos or ([0.2] if q else [0.2, 0.35, 0.5, 0.65, 0.8])
    seeds = a.seeds or ([0] if q else [0, 1, 2, 3, 4])
    methods = a.methods or list(plan.METHODS)
    n0 = 128 if q else 512
    big = [] if q else (a.n2048_rhos if a.n2048_rhos is not None else [0.2, 0.5])
    budget_rhos = [] if q else (a.budget_rhos if a.budget_rhos is not None else [0.2, 0.5])
    lrs = a.lrs if a.lrs is not None else ([] if q else [3e-4, 1e-3, 3e-3, 1e-2])
    out = Path(a.out)
    args = {"quick": q, "cache_dir": a.cache_dir, "work": str(out / "runs")}
    families = sorted({plan.METHODS[m]["family"] for m in methods if "family" in plan.METHODS[m]})
    variants = [(f, v) for f in families for v in (list(plan.FAMILY_VARIANTS[f])[:1] if q else plan.FAMILY_VARIANTS[f])]
    cells = [(n0, rho, s) for rho in rhos for s in seeds] + [(2048, rho, s) for rho in big for s in seeds]
    runner = Runner(a.jobs)

    def default_budget(e, w):
        return e == plan.DEFAULT_EPOCHS and w == 64

    budget_cells = [(e, w) for e in plan.BUDGET_EPOCHS for w in plan.BUDGET_WIDTHS if not default_budget(e, w)]

    def prepare_jobs(cell_list, chosen) -> dict:
        """prepare() for each cell: the family variants `chosen(rho)` names, and the budget dimension's."""
        jobs = []
        for n, rho, s in cell_list:
            fams = [(f, v, None, 64) for f, v in chosen(rho)]
            if n == n0 and rho in budget_rhos and "distill@debiased" in methods:
                fams += [("debiased", next(iter(plan.FAMILY_VARIANTS["debiased"])), e, w) for e, w in budget_cells]
            jobs.append({"args": args, "n": n, "rho": rho, "seed": s, "families": fams})
        return dict(zip(cell_list, runner.map(prepare, jobs)))

    # A. at the first seed every family variant (the sweep chooses among them), with the probe
    first = [(n0, rho, seeds[0]) for rho in rhos]
    prepared = prepare_jobs(first, lambda rho: variants)
    say(f"families trained and measured in {len(first)} cells (first seed, every variant)")

    def family_of(method, setting, n, rho, s, epochs=None, width=64):
        spec = plan.METHODS[method]
        if "family" not in spec:
            return None
        return family_dir(args, n, rho, s, spec["family"], setting["variant"], epochs, width)

    def job(method, setting, n, rho, s, tag, prompts, lr=None, epochs=None, width=64):
        fam = family_of(method, setting, n, rho, s, epochs, width)
        j = {"args": args, "n": n, "rho": rho, "seed": s, "method": method, "setting": setting, "prompts": prompts,
             "run_dir": str(cell_dir(args, n, rho, s) / tag / f"{method}{'_' + plan.label(setting) if tag == 'sweep' else ''}"
                            .replace(" ", "_")),
             "scored": str(fam.with_name(fam.name + ".scored.jsonl")) if fam else None}
        return {**j, "lr": lr} if lr else j

    # B. selection at the first seed, on the validation prompts: stage 1, then stage 2 at its winners
    selection, best = [], {}

    def score_settings(settings: dict) -> None:
        """Train and score every setting of {(rho, method): [setting]}; update `best` per (rho, method)."""
        jobs = [job(m, st, n0, rho, seeds[0], "sweep", "validation") for (rho, m), sts in settings.items() for st in sts]
        for j, r in zip(jobs, runner.map(train_eval, jobs)):
            selection.append({"rho": j["rho"], "method": j["method"], "hparams": r["hparams"],
                              "val_win_rate": r["win_rate"], "setting": j["setting"]})
        for key in settings:
            rows = [s for s in selection if (s["rho"], s["method"]) == key]
            best[key] = max(rows, key=lambda s: s["val_win_rate"])["setting"]
        say(f"{len(jobs)} sweep runs scored on validation prompts")

    stage1 = {(rho, m): plan.sweep(m, q) for rho in rhos for m in methods}
    if any(len(s) > 1 for s in stage1.values()):
        score_settings(stage1)
        stage2 = {key: plan.refine(key[1], best[key], q) for key in stage1}
        score_settings({key: sts for key, sts in stage2.items() if sts})
    for key, sts in stage1.items():
        best.setdefault(key, sts[0])
    for s in selection:
        s["chosen"] = s["setting"] is best[(s["rho"], s["method"])]

    def sel(rho, m):
        return best.get((rho, m)) or best[(min(rhos, key=lambda r: abs(r - rho)), m)]

    def chosen_variants(rho):   # the variants the selection uses at this ρ
        return sorted({(plan.METHODS[m]["family"], sel(rho, m)["variant"]) for m in methods if "family" in plan.METHODS[m]})

    # A'. the other cells: only the chosen variants (and the budget dimension's families)
    rest = [c for c in cells if c not in prepared]
    prepared.update(prepare_jobs(rest, chosen_variants))
    say(f"families trained and measured in {len(rest)} more cells")

    # C. the grid: every cell, every method at its chosen setting, on the test prompts
    def sel(rho, m):
        return best.get((rho, m)) or best[(min(rhos, key=lambda r: abs(r - rho)), m)]
    jobs = [job(m, sel(rho, m), n, rho, s, "grid", "test") for n, rho, s in cells for m in methods]
    grid = runner.map(train_eval, jobs)
    for j, r in zip(jobs, grid):
        fam = family_of(j["method"], j["setting"], j["n"], j["rho"], j["seed"])
        info = prepared[(j["n"], j["rho"], j["seed"])]
        r.update(family=plan.METHODS[j["method"]].get("family", ""), probe=info["probe"],
                 family_val_acc=info["families"][str(fam)]["accuracy"] if fam else None)
    say(f"{len(jobs)} grid runs evaluated on the test prompts")

    # D. the reward-model budget dimension: distill on the debiased model (β as selected, its default variant)
    budget_jobs, budget_keys = [], []
    if "distill@debiased" in methods:
        default = next(iter(plan.FAMILY_VARIANTS["debiased"]))
        for rho in budget_rhos:
            for s in seeds:
                for e, w in budget_cells:
                    setting = {**sel(rho, "distill@debiased"), "variant": default}
                    budget_jobs.append(job("distill@debiased", setting, n0, rho, s, f"budget_e{e}_w{w}", "test",
                                           epochs=e, width=w))
                    budget_keys.append((e, w))
    budget = runner.map(train_eval, budget_jobs)
    for j, r, (e, w) in zip(budget_jobs, budget, budget_keys):
        fam = family_of(j["method"], j["setting"], n0, j["rho"], j["seed"], e, w)
        r.update(epochs=e, width=w, family=plan.METHODS[j["method"]]["family"],
                 family_val_acc=prepared[(n0, j["rho"], j["seed"])]["families"][str(fam)]["accuracy"])
    if budget_jobs:
        say(f"{len(budget_jobs)} reward-model budget runs")

    # E. the learning-rate sweep (β = 0.1)
    lr_jobs = [job(m, {"loss": {"beta": 0.1}}, n0, a.lr_rho, s, f"lr{lr}", "test", lr=lr)
               for s in seeds for lr in lrs for m in LR_METHODS]
    lr_rows = runner.map(train_eval, lr_jobs)

    family_rows = [{"n": n, "rho": rho, "seed": s, "family": Path(k).name, **v, "probe": info["probe"],
                    "probe_no_length": info["probe_no_length"]}
                   for (n, rho, s), info in prepared.items() for k, v in info["families"].items()]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "grid.csv", grid)
    write_csv(out / "families.csv", family_rows)
    write_csv(out / "selection.csv", [{k: v for k, v in s.items() if k != "setting"} for s in selection])
    write_csv(out / "budget.csv", budget)
    write_csv(out / "lr_sweep.csv", lr_rows)
    grid_report.write(out, grid, family_rows, budget, lr_rows, selection, seeds=seeds, n0=n0)
    runner.pool.shutdown()
    record = provenance.write(out, snap, imported=sorted(runner.imported))
    say(f"wrote {out} in {record['seconds']:.0f} s")
    return 0


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.unlink(missing_ok=True)
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())

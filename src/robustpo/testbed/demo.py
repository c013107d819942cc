"""`robustpo demo`: every robust method against DPO on the length-biased testbed, in one command.

Stages (one progress line each, with the elapsed time):
  1. the testbed (reference policy, gold-labelled pairs; cached across runs, see build.py);
  2. the ρ-biased training set (default ρ = 0.2: the data say "shorter wins", the gold does not);
  3. a 3-member reward family trained on that same biased set, which then scores it;
  4. one policy per method, all from the reference, under the same budget (steps, batch,
     learning-rate schedule, seed; β = 0.1 for every method, τ = 0.1 for IPO);
  5. evaluation on held-out prompts by the gold reward, then OUT/report.md (table + plots)
     and OUT/results.json (the compact per-method summary).

Rerunning with the same settings skips every finished stage: a policy whose `final/` exists
and whose saved config equals the one it would be trained with is reused; a changed setting
(--rho, --seed, --quick) retrains what depends on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

# β = 0.1 for every β-parameterised method (the usual DPO default); the distillation targets
# are standardized rewards (Δr in units of each member's spread), so βh = Δr asks for
# Δ(w) − Δ(l) of about 10 nats per unit of reward margin, comparable to where DPO goes.
METHODS: dict[str, dict] = {
    "dpo": {"loss": {"name": "dpo", "beta": 0.1}},
    "ipo": {"loss": {"name": "ipo", "tau": 0.1}},
    "minor_dpo": {"loss": {"name": "minor_dpo", "beta": 0.1}},
    "dpo_bcr": {"loss": {"name": "dpo", "beta": 0.1}, "regularizers": [{"name": "bcr", "weight": 1.0, "budget": 0.1}]},
    "distill": {"loss": {"name": "distill", "beta": 0.1}, "rewards": True},
    "e_dpo": {"loss": {"name": "e_dpo", "beta": 0.1, "gamma": 0.1}, "rewards": True},
    "p_dpo": {"loss": {"name": "p_dpo", "beta": 0.1, "gamma": 0.1}},
}

# The shared budget. Full: 512 pairs, 3 epochs of 32-pair batches; quick: 128 pairs, 2 epochs.
BUDGET = {"full": {"max_steps": 48, "batch_size": 32}, "quick": {"max_steps": 8, "batch_size": 32}}
LEARNING_RATE = 1e-3
DATA_LIMITS = {"max_length": 64, "max_prompt_length": 32}   # testbed prompts ~12 words, responses ≤ 12 tokens
# Bootstrap members (not multihead): each member sees another resample, so they disagree on
# the pairs the data under-determine, which is what e-DPO's pessimism needs; multihead heads
# share a backbone and disagree 4–6× less for ~3× less compute.
REWARD_FAMILY = {"size": 3, "mode": "bootstrap"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train every method on the length-biased testbed and compare them (no download)",
        description="Build the testbed, a ρ-biased preference set and a 3-member reward family; train "
                    f"{', '.join(METHODS)} from the reference under the same budget; evaluate them with the "
                    "gold reward; print the table and write OUT/report.md and OUT/results.json.")
    p.add_argument("--rho", type=float, default=0.2, help="fraction of longer-preferred pairs (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="METHOD",
                   help=f"subset of: {' '.join(METHODS)} (default: all)")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="the quick testbed and an 8-step budget (a smoke run)")
    p.add_argument("--cache-dir", help="testbed cache (default: $ROBUSTPO_CACHE/testbed)")
    p.set_defaults(func=run)


class _Progress:
    """One line per stage: elapsed time since the start, and how long the stage took."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}

    def stage(self, name: str, fn, *args, **kwargs):
        began = time.perf_counter()
        print(f"[{began - self.start:6.1f} s] {name} ...", flush=True)
        out = fn(*args, **kwargs)
        self.stages[name] = time.perf_counter() - began
        print(f"[{time.perf_counter() - self.start:6.1f} s] {name}: done in {self.stages[name]:.1f} s", flush=True)
        return out


def policy_config(method: str, data_path: Path, reference: Path, out_dir: Path, *, seed: int, quick: bool,
                  spec: dict | None = None):
    """The run config of `method` (or of `spec`, a METHODS-style entry) under the shared budget."""
    from robustpo.config import RunConfig, from_dict

    spec = spec or METHODS[method]
    budget = BUDGET["quick" if quick else "full"]
    return from_dict(RunConfig, {
        "model": {"name_or_path": str(reference)},
        "data": {"train": str(data_path), **DATA_LIMITS},
        "loss": spec["loss"], "regularizers": spec.get("regularizers", []),
        "train": {"output_dir": str(out_dir), "seed": seed, "learning_rate": LEARNING_RATE, "warmup_ratio": 0.1,
                  "scheduler": "linear", "logging_steps": 1 if quick else 2, "save_steps": 0, **budget},
    })


def _finished(cfg) -> bool:
    """A finished run of exactly this config (the run folder's config.yaml is written by train)."""
    import yaml

    from robustpo.config import to_dict

    run_dir = Path(cfg.train.output_dir)
    if not (run_dir / "final" / "config.json").exists() or not (run_dir / "config.yaml").exists():
        return False
    return yaml.safe_load((run_dir / "config.yaml").read_text()) == yaml.safe_load(yaml.safe_dump(to_dict(cfg)))


def train_policy(cfg) -> Path:
    from robustpo.train.preference import train_preference

    if _finished(cfg):
        print(f"  {cfg.train.output_dir}: finished earlier with the same config, reused", flush=True)
        return Path(cfg.train.output_dir)
    train_preference(cfg, overwrite=True)
    return Path(cfg.train.output_dir)


def reward_family(data_path: Path, reference: Path, out_dir: Path, *, seed: int, quick: bool) -> Path:
    from robustpo.rewards import train_reward_family

    cfg = {"model": {"name_or_path": str(reference)},
           "data": {"train": str(data_path), **DATA_LIMITS},
           "reward": {"heldout_fraction": 0.2, "center_coef": 0.01, "family": REWARD_FAMILY},
           "train": {"output_dir": str(out_dir), "seed": seed, "epochs": 2, "batch_size": 32,
                     "learning_rate": 2e-3, "warmup_ratio": 0.0, "logging_steps": 4, "save_steps": 0}}
    # A settings file beside the family: a family trained on other data is retrained, not resumed.
    stamp, key = out_dir.parent / "reward_family.settings.json", json.dumps(cfg, sort_keys=True)
    same = stamp.exists() and stamp.read_text() == key and (out_dir / "family.json").exists()
    if same:
        print(f"  {out_dir}: trained earlier on the same data, reused", flush=True)
        return out_dir
    family = train_reward_family(cfg, overwrite=True)
    stamp.write_text(key)
    return Path(family)


def family_validation(family, family_dir: Path, validation_path: Path) -> dict:
    """The family's metrics on the testbed's unbiased, gold-labelled validation pairs, saved beside it.

    Distillation can only be as robust as the rewards it distills: accuracy below 0.5 here
    means the family learned the data's length bias rather than the task."""
    from robustpo.data.io import read_records, write_json_atomic
    from robustpo.rewards.evaluate import evaluate_family

    metrics = evaluate_family(family, read_records(validation_path))
    write_json_atomic(family_dir.parent / "validation_metrics.json", metrics)
    return metrics


def write_outputs(result: dict, out: Path, *, rho: float, seed: int, quick: bool, stages: dict,
                  family_dir: Path | None) -> dict:
    from robustpo.eval.report import markdown_table, results_summary, write_eval_outputs

    from robustpo.data.io import write_json_atomic

    write_eval_outputs(result, out)   # eval.json, eval.md, samples.jsonl, win_rates/reward_vs_kl/training_curves.png
    summary = results_summary(result, rho=rho, seed=seed)
    write_json_atomic(out / "results.json", summary)
    family_note = ""
    if family_dir is not None and (family_dir / "family.json").exists():
        held = json.loads((family_dir / "family.json").read_text()).get("heldout", {})
        members, disagreement = held.get("mean_of_members", {}), held.get("disagreement", {})
        family_note = (f"Reward family ({REWARD_FAMILY['mode']}, {REWARD_FAMILY['size']} members) on "
                       f"{members.get('pairs', '?')} held-out pairs of the same biased data, family mean: "
                       + ", ".join(f"{k} {members[k]:.3f}" for k in ("accuracy", "ece", "brier") if k in members)
                       + "; members disagree: "
                       + ", ".join(f"{k} {disagreement[k]:.3f}" for k in ("delta_std", "split_decisions")
                                   if k in disagreement) + ".")
        unbiased = family_dir.parent / "validation_metrics.json"
        if unbiased.exists():
            m = json.loads(unbiased.read_text())["mean_of_members"]
            family_note += (f" On the {m['pairs']} unbiased, gold-labelled validation pairs: accuracy "
                            f"{m['accuracy']:.3f}, ECE {m['ece']:.3f} (0.5 is chance; below it the family learned "
                            "the length bias rather than the task, and distilling it passes the bias on).")
        family_note += "\n"
    budget = BUDGET["quick" if quick else "full"]
    lines = [f"# robustpo demo: ρ = {rho}, seed {seed}{' (quick)' if quick else ''}", "",
             f"Training data: {'128' if quick else '512'} gold-labelled pairs of reference samples, a fraction "
             f"ρ = {rho} of them with the longer response preferred. Every policy starts from the reference and "
             f"trains {budget['max_steps']} steps of {budget['batch_size']} pairs, lr {LEARNING_RATE} (linear, "
             "10% warm-up), β = 0.1 (IPO: τ = 0.1); e_dpo, p_dpo γ = 0.1; bcr weight 1, budget 0.1 nats/token.",
             "", markdown_table(result), "",
             "Win rate: gold reward of the policy's sample vs the reference's on the same held-out prompt "
             "(ties ½), 95% percentile bootstrap over prompts. Δ(w), Δ(l): mean log π − log π_ref of the "
             "training pairs' chosen / rejected responses (Δ(w) < 0: the preferred responses lost likelihood).",
             "", family_note,
             "![win rates](win_rates.png)", "", "![reward vs KL](reward_vs_kl.png)", "",
             "![training curves](training_curves.png)", "", "Stage times (s): " +
             ", ".join(f"{k} {v:.1f}" for k, v in stages.items())]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def run(args) -> int:
    from robustpo.data.io import read_records
    from robustpo.rewards import load_family, score_dataset
    from robustpo.testbed.build import TestbedConfig, build

    methods = args.methods or list(METHODS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = _Progress()
    base = TestbedConfig.quick if args.quick else TestbedConfig
    config = base(seed=args.seed, rhos=(args.rho,), cache_dir=args.cache_dir)
    tb = progress.stage("testbed (cached after the first run)", build, config, log=lambda m: print("  " + m, flush=True))
    data = progress.stage(f"length-biased dataset (ρ = {args.rho})", tb.dataset, args.rho)
    rows = read_records(data)
    longer = sum(r["meta"]["longer_preferred"] for r in rows if r["meta"]["len_chosen"] != r["meta"]["len_rejected"])
    unequal = sum(r["meta"]["len_chosen"] != r["meta"]["len_rejected"] for r in rows)
    print(f"  {len(rows)} pairs, longer preferred in {longer}/{unequal} unequal-length pairs", flush=True)

    family_dir, scored = None, None
    if any(METHODS[m].get("rewards") for m in methods):
        family_dir = progress.stage("reward family (3 × bootstrap)", reward_family, data, tb.reference_path,
                                    out / "reward_family" / "family", seed=args.seed, quick=args.quick)
        scored = out / "reward_family" / "scored.jsonl"
        family = load_family(family_dir)   # loaded once: it scores the data, then is measured on validation
        progress.stage("score the dataset", score_dataset, family, data, scored, normalize="standardize",
                       overwrite=True, progress=False)
        progress.stage("family on unbiased validation pairs", family_validation, family, family_dir,
                       tb.validation_path)

    runs = {}
    for m in methods:
        cfg = policy_config(m, scored if METHODS[m].get("rewards") else data, tb.reference_path,
                            out / "policies" / m, seed=args.seed, quick=args.quick)
        runs[m] = progress.stage(f"train {m}", train_policy, cfg)
    result = progress.stage("evaluate", tb.evaluate, runs, rho=args.rho, log=lambda m: print("  " + m, flush=True))
    progress.stage("report", write_outputs, result, out, rho=args.rho, seed=args.seed, quick=args.quick,
                   stages=progress.stages, family_dir=family_dir)
    from robustpo.eval.report import markdown_table

    print(markdown_table(result))
    print(f"total {time.perf_counter() - progress.start:.1f} s; wrote {out / 'report.md'} and "
          f"{out / 'results.json'}", flush=True)
    return 0

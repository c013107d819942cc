"""`robustpo demo`: every robust method against DPO on the length-biased testbed, in one command.

Stages (one progress line each, with the elapsed time):
  1. the testbed (reference policy, gold-labelled pairs; cached across runs, see build.py);
  2. the ρ-biased training set (default ρ = 0.2: the data say "shorter wins", the gold does not);
  3. reward families trained on that same biased set, each then scoring it: today's 3-member
     bootstrap family, and the confound-aware constructions (a debiased reward model, a `span`
     family, a `reweight` family); each is measured on the testbed's unbiased validation pairs
     (the precondition), and validation picks the construction `distill@` / `e_dpo@` use;
  4. one policy per method, all from the reference, under the same budget (steps, batch,
     learning-rate schedule, seed; β = 0.1 for every method, τ = 0.1 for IPO);
  5. evaluation on held-out prompts by the gold reward, then OUT/report.md (table + plots)
     and OUT/results.json (the compact per-method summary, with each family's precondition).

Rerunning with the same settings skips every finished stage: a policy whose `final/` exists
and whose saved config equals the one it would be trained with is reused; a changed setting
(--rho, --seed, --quick) retrains what depends on it.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

# β = 0.1 for every β-parameterised method (the usual DPO default); the distillation targets
# are standardized rewards (Δr in units of each member's spread), so βh = Δr asks for
# Δ(w) − Δ(l) of about 10 nats per unit of reward margin, comparable to where DPO goes.
# "family" names the reward family a distillation method is trained on (FAMILIES);
# "picked" is the confound-aware construction the validation pairs pick.
METHODS: dict[str, dict] = {
    "dpo": {"loss": {"name": "dpo", "beta": 0.1}},
    "ipo": {"loss": {"name": "ipo", "tau": 0.1}},
    "minor_dpo": {"loss": {"name": "minor_dpo", "beta": 0.1}},
    "dpo_bcr": {"loss": {"name": "dpo", "beta": 0.1}, "regularizers": [{"name": "bcr", "weight": 1.0, "budget": 0.1}]},
    "distill": {"loss": {"name": "distill", "beta": 0.1}, "family": "bootstrap"},
    "e_dpo": {"loss": {"name": "e_dpo", "beta": 0.1, "gamma": 0.1}, "family": "bootstrap"},
    "p_dpo": {"loss": {"name": "p_dpo", "beta": 0.1, "gamma": 0.1}},
    "distill@picked": {"loss": {"name": "distill", "beta": 0.1}, "family": "picked"},
    "e_dpo@picked": {"loss": {"name": "e_dpo", "beta": 0.1, "gamma": 0.1}, "family": "picked", "members": 2},
}

# The shared budget. Full: 512 pairs, 3 epochs of 32-pair batches; quick: 128 pairs, 2 epochs.
BUDGET = {"full": {"max_steps": 48, "batch_size": 32}, "quick": {"max_steps": 8, "batch_size": 32}}
LEARNING_RATE = 1e-3
DATA_LIMITS = {"max_length": 64, "max_prompt_length": 32}   # testbed prompts ~12 words, responses ≤ 12 tokens

def merged(base: dict, extra: dict) -> dict:
    """A deep copy of `base` with `extra` merged in, mapping by mapping."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# Reward-model recipes. SCORE_RM is the one robustpo shipped first (a score head on the last
# token); LM_RM is the recipe benchmarks/reward_model_search.py found on the unbiased validation
# pairs: the reference's own token log-likelihood (mean over the response) times a learned scale,
# fine-tuned by Bradley–Terry (README, "A reward model that can learn the task").
SCORE_RM = {"reward": {"center_coef": 0.01}, "train": {"epochs": 2, "learning_rate": 2e-3}}
LM_RM = {"reward": {"head": "lm", "pooling": "mean"}, "train": {"epochs": 2, "learning_rate": 3e-4}}
LENGTH = {"feature": "length"}
# Bootstrap members (not multihead): each member sees another resample, so they disagree on
# the pairs the data under-determine, which is what e-DPO's pessimism needs; multihead heads
# share a backbone and disagree 4–6× less for ~3× less compute. The confound-aware
# constructions name the suspect (length) and span it; their weights and targets are the
# defaults of rewards/plan.py, chosen on validation data (README).
FAMILIES: dict[str, dict] = {
    "bootstrap": merged(SCORE_RM, {"reward": {"family": {"size": 3, "mode": "bootstrap"}}}),
    "debiased": merged(LM_RM, {"reward": {"confound": {**LENGTH, "decorrelate": 1.0}}}),
    "span": merged(LM_RM, {"reward": {"confound": {**LENGTH, "decorrelate": 1.0},
                                      "family": {"mode": "span", "weights": [0.0, 0.5, 1.0]}}}),
    "reweight": merged(LM_RM, {"reward": {"confound": {**LENGTH, "debias": False, "decorrelate": 0.0},
                                          "family": {"mode": "reweight", "targets": [0.2, 0.5, 0.8]}}}),
}
CANDIDATES = ("debiased", "span", "reweight")   # what validation picks from


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train every method on the length-biased testbed and compare them (no download)",
        description="Build the testbed, a ρ-biased preference set and reward families; train "
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
                  "scheduler": "linear", "logging_steps": 1 if quick else 2, "save_steps": 0, **budget,
                  **spec.get("train", {})},
    })


DATA_STAMP = "data_fingerprint.txt"   # the training file's fingerprint, beside a finished run


def _finished(cfg) -> bool:
    """A finished run of exactly this config on exactly this data (config.yaml is written by
    train; the data stamp after it: a family retrained on the same path rescoring the data
    must not leave a policy trained on the old scores)."""
    import yaml

    from robustpo.config import to_dict
    from robustpo.data.io import file_fingerprint

    run_dir = Path(cfg.train.output_dir)
    if not all((run_dir / p).exists() for p in ("final/config.json", "config.yaml", DATA_STAMP)):
        return False
    return (yaml.safe_load((run_dir / "config.yaml").read_text()) == yaml.safe_load(yaml.safe_dump(to_dict(cfg)))
            and (run_dir / DATA_STAMP).read_text() == file_fingerprint(Path(cfg.data.train)))


def train_policy(cfg) -> Path:
    from robustpo.data.io import file_fingerprint
    from robustpo.train.preference import train_preference

    run_dir = Path(cfg.train.output_dir)
    if _finished(cfg):
        print(f"  {run_dir}: finished earlier with the same config, reused", flush=True)
        return run_dir
    train_preference(cfg, overwrite=True)
    (run_dir / DATA_STAMP).write_text(file_fingerprint(Path(cfg.data.train)))
    return run_dir


def reward_family(data_path: Path, reference: Path, out_dir: Path, *, seed: int, recipe: dict | str = "bootstrap",
                  backbone: Path | None = None) -> Path:
    """Train the family of `recipe` (a FAMILIES name or entry) on `data_path`, from the reference
    (or `backbone`); reuse it when trained earlier with the same settings."""
    from robustpo.rewards import train_reward_family

    recipe = FAMILIES[recipe] if isinstance(recipe, str) else recipe
    cfg = merged({"model": {"name_or_path": str(backbone or reference)},
                  "data": {"train": str(data_path), **DATA_LIMITS},
                  "reward": {"heldout_fraction": 0.2},
                  "train": {"output_dir": str(out_dir), "seed": seed, "batch_size": 32, "warmup_ratio": 0.0,
                            "logging_steps": 4, "save_steps": 0}}, recipe)
    # A settings file beside the family: a family trained on other data is retrained, not resumed.
    from robustpo.data.io import file_fingerprint

    stamp = out_dir.with_name(out_dir.name + ".settings.json")
    key = json.dumps({**cfg, "data_fingerprint": file_fingerprint(data_path)}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == key and (out_dir / "family.json").exists():
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
    write_json_atomic(family_dir.with_name(family_dir.name + ".validation.json"), metrics)
    return metrics


def prepare_family(name: str, data: Path, tb, out: Path, *, seed: int, progress) -> dict:
    """Train family `name` on `data`, score `data` with it (standardized), measure it on the
    validation pairs. Returns {"dir", "scored", "size", "validation"}."""
    from robustpo.rewards import load_family, score_dataset

    family_dir = progress.stage(f"reward family: {name}", reward_family, data, tb.reference_path,
                                out / "reward_families" / name, seed=seed, recipe=name)
    family = load_family(family_dir)   # loaded once: it scores the data, then is measured on validation
    scored = out / "reward_families" / f"{name}.scored.jsonl"
    score_dataset(family, data, scored, normalize="standardize", overwrite=True, progress=False)
    metrics = family_validation(family, family_dir, tb.validation_path)
    return {"dir": family_dir, "scored": scored, "size": family.size, "validation": metrics}


def pick_family(families: dict, members: int = 1) -> str:
    """The candidate with the highest family-mean accuracy on the unbiased validation pairs
    among those with at least `members` members (ties: the earlier in CANDIDATES)."""
    eligible = [n for n in CANDIDATES if n in families and families[n]["size"] >= members]
    return max(eligible, key=lambda n: families[n]["validation"]["mean_of_members"]["accuracy"])


def family_lines(families: dict, used_by: dict[str, list[str]]) -> list[str]:
    """The report's precondition table: each family's accuracy on the unbiased validation pairs."""
    lines = ["| reward family | members | validation accuracy (family mean) | best member | corr(Δr, Δlength) "
             "| policies trained on it |", "|---|---|---|---|---|---|"]
    for name, f in families.items():
        v = f["validation"]
        best = max(m["accuracy"] for m in v["members"].values())
        lines.append(f"| {name} | {f['size']} | {v['mean_of_members']['accuracy']:.3f} | {best:.3f} | "
                     f"{v['mean_of_members']['confound_corr']:.2f} | {', '.join(used_by.get(name, [])) or '–'} |")
    return lines


def write_outputs(result: dict, out: Path, *, rho: float, seed: int, quick: bool, stages: dict,
                  families: dict, used_by: dict) -> dict:
    from robustpo.eval.report import markdown_table, results_summary, write_eval_outputs

    from robustpo.data.io import write_json_atomic

    write_eval_outputs(result, out)   # eval.json, eval.md, samples.jsonl, win_rates/reward_vs_kl/training_curves.png
    summary = results_summary(result, rho=rho, seed=seed)
    summary["families"] = {name: {"members": f["size"], "validation_accuracy":
                                  f["validation"]["mean_of_members"]["accuracy"], "used_by": used_by.get(name, [])}
                           for name, f in families.items()}
    write_json_atomic(out / "results.json", summary)
    family_note = []
    if "bootstrap" in families:
        held = json.loads((families["bootstrap"]["dir"] / "family.json").read_text()).get("heldout", {})
        members = held.get("mean_of_members", {})
        family_note = [
            f"Reward families, trained on the same biased set. The bootstrap family (3 members, a score head on "
            f"the last token) scores accuracy {members.get('accuracy', float('nan')):.3f} on "
            f"{members.get('pairs', '?')} held-out pairs of that set. On the unbiased, gold-labelled validation "
            "pairs (below) 0.5 is chance: below it a family learned the length bias rather than the task, and "
            "distilling it passes the bias on. `distill@`/`e_dpo@` use the construction with the best "
            "validation accuracy.", ""]
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
             "", *family_note, *(family_lines(families, used_by) if families else []), "",
             "![win rates](win_rates.png)", "", "![reward vs KL](reward_vs_kl.png)", "",
             "![training curves](training_curves.png)", "", "Stage times (s): " +
             ", ".join(f"{k} {v:.1f}" for k, v in stages.items())]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def run(args) -> int:
    from robustpo.data.io import read_records
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

    wanted = {METHODS[m]["family"] for m in methods if "family" in METHODS[m]}
    names = (["bootstrap"] if "bootstrap" in wanted else []) + (list(CANDIDATES) if "picked" in wanted else [])
    families = {name: prepare_family(name, data, tb, out, seed=args.seed, progress=progress) for name in names}
    for name, f in families.items():
        m = f["validation"]["mean_of_members"]
        print(f"  {name}: accuracy {m['accuracy']:.3f} on {m['pairs']} unbiased validation pairs", flush=True)

    runs, used_by = {}, {}
    for m in methods:
        spec, data_path, name = METHODS[m], data, m
        if "family" in spec:
            family = spec["family"] if spec["family"] != "picked" else pick_family(families, spec.get("members", 1))
            data_path, name = families[family]["scored"], m.replace("picked", family)
            used_by.setdefault(family, []).append(name)
        cfg = policy_config(m, data_path, tb.reference_path, out / "policies" / name, seed=args.seed,
                            quick=args.quick)
        runs[name] = progress.stage(f"train {name}", train_policy, cfg)
    result = progress.stage("evaluate", tb.evaluate, runs, rho=args.rho, log=lambda m: print("  " + m, flush=True))
    progress.stage("report", write_outputs, result, out, rho=args.rho, seed=args.seed, quick=args.quick,
                   stages=progress.stages, families=families, used_by=used_by)
    from robustpo.eval.report import markdown_table

    print(markdown_table(result))
    print(f"total {time.perf_counter() - progress.start:.1f} s; wrote {out / 'report.md'} and "
          f"{out / 'results.json'}", flush=True)
    return 0

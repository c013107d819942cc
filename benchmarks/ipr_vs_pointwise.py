"""Iterative pairwise ranking with a trained pairwise judge vs pointwise scoring, in and out of distribution.

The claim tested (Chen et al., arXiv 2411.05875): preference pairs picked by iterative pairwise
ranking (IPR) with a pairwise judge are better than best-vs-worst by a scoring reward model,
above all on out-of-distribution prompts, and so are the policies trained on them.

    python benchmarks/ipr_vs_pointwise.py --quick    # 1 seed, quick testbed, small sets (the suite's check)
    python benchmarks/ipr_vs_pointwise.py            # 3 seeds × 3 judge budgets

Per seed (a seed is a whole testbed: reference policy, gold-labelled pairs) and judge budget
n (`--judge-pairs`, default 1024 / 4096 / 8192: the first n gold-labelled in-distribution pool
pairs, 20% of them held out): a Bradley–Terry reward model and a pairwise judge
(rewards/pairwise.py) are trained from the reference's backbone on the same n pairs with the
same settings. The budget is the axis along which the judges get stronger, so the table shows
whether IPR's advantage (if any) appears once its judge is good. For each
distribution (`in`: the testbed's prompt generator; `shifted`: task.generate_shifted_prompts,
longer documents, more items, unseen filler words; the reference is not retrained), N = 8
completions per prompt are sampled from the reference and pairs are built by
  pointwise_rm    best vs worst by the reward model (`robustpo rank --strategy pointwise`),
  ipr_tournament  IPR tournament with the pairwise judge, both orders,
  ipr_insertion   IPR binary insertion with the pairwise judge, both orders,
  ipr_gold        IPR tournament with the gold judge (the ceiling),
  random          two distinct completions at random, in random order (the floor).
The three judge-made sets are named NAME@n per budget; ipr_gold and random do not depend on it.
Reported per pair set: gold accuracy of the labels, mean gold gap r*(chosen) − r*(rejected),
distinct comparisons per prompt; then DPO (and DPO + BCR, not in --quick) trained from the
reference on each set under demo.BUDGET, and their gold win rate against the reference on
held-out prompts of the same distribution. Means over seeds with 95% t-intervals.
Writes OUT/results.json, OUT/results.md (with the judges' held-out accuracy and each IPR set's
gain over the same budget's pointwise_rm, paired by seed), OUT/gold_accuracy.png (gold accuracy
and DPO win rate against the judge budget) and OUT/provenance.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import provenance

STRATEGIES = {"pointwise_rm": ("reward", "pointwise"), "ipr_tournament": ("pairwise", "tournament"),
              "ipr_insertion": ("pairwise", "insertion"), "ipr_gold": ("gold", "tournament"),
              "random": (None, None)}
JUDGED = ("pointwise_rm", "ipr_tournament", "ipr_insertion")   # made by a trained judge: one set per budget
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def prompts_for(dist: str, seed: int, n: int, stream: str) -> list[str]:
    from robustpo.testbed import task

    if dist == "in":
        return task.generate_prompts(n, task.seeded_rng(seed, f"ipr/{stream}"))
    if stream == "test":
        return task.shifted_test_prompts(seed, n)
    return task.generate_shifted_prompts(n, task.seeded_rng(seed, f"ipr-shifted/{stream}"))


def sample_completions(reference, prompts: list[str], n: int, seed: int, max_new_tokens: int) -> list[dict]:
    from robustpo.generate.sampling import sample_responses
    from robustpo.models import load_for_inference

    model, tokenizer = load_for_inference(reference)
    texts = [s.text for s in sample_responses(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens,
                                              seed=seed, batch_size=256)]
    return [{"prompt": p, "completions": texts[i * n:(i + 1) * n]} for i, p in enumerate(prompts)]


def random_pairs(samples: list[dict], seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 31337])
    rows = []
    for s in samples:
        uniq = list(dict.fromkeys(c for c in s["completions"] if c.strip()))
        if len(uniq) >= 2:
            a, b = rng.choice(len(uniq), size=2, replace=False)
            rows.append({"prompt": s["prompt"], "chosen": uniq[a], "rejected": uniq[b], "meta": {"comparisons": 0}})
    return rows


def pair_stats(rows: list[dict], n_prompts: int) -> dict:
    from robustpo.testbed import task

    c = np.array(task.gold_rewards([r["prompt"] for r in rows], [r["chosen"] for r in rows]))
    r = np.array(task.gold_rewards([r["prompt"] for r in rows], [r["rejected"] for r in rows]))
    return {"pairs": len(rows), "gold_accuracy": float(np.mean((c > r) + 0.5 * (c == r))),
            "gold_gap": float(np.mean(c - r)),
            "comparisons_per_prompt": sum(x["meta"].get("comparisons", 0) for x in rows) / max(1, n_prompts),
            # pointwise: one score per distinct completion; IPR: two per comparison (both orders)
            "judge_calls_per_prompt": sum(x["meta"].get("judge_calls", 0) for x in rows) / max(1, n_prompts)}


def train_judges(tb, work: Path, seed: int, n_pairs: int, epochs: int) -> dict:
    from robustpo.data.io import read_records
    from robustpo.testbed import demo

    work.mkdir(parents=True, exist_ok=True)
    data = work / "judge_pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in read_records(tb.pool_path)[:n_pairs]))
    out = {}
    for kind, name in (("bradley_terry", "reward"), ("pairwise", "pairwise")):
        recipe = {"reward": {"kind": kind, "family": {"size": 1, "mode": "seed"}},
                  "train": {"epochs": epochs, "learning_rate": 2e-3, "batch_size": 16}}
        if kind == "pairwise":   # prompt + both responses in one sequence
            recipe["data"] = {"max_length": 96, "max_prompt_length": 48}
        out[name] = demo.reward_family(data, tb.reference_path, work / name, seed=seed, recipe=recipe)
    return out


def run_seed(args, seed: int) -> dict:
    from robustpo.eval.evaluate import EvalSettings, evaluate_policies
    from robustpo.generate.rank import rank_file
    from robustpo.judges import load_judge
    from robustpo.testbed import demo, task
    from robustpo.testbed.build import TestbedConfig, build

    work = Path(args.out) / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    tb = build((TestbedConfig.quick if args.quick else TestbedConfig)(seed=seed, cache_dir=args.cache_dir),
               log=lambda m: None)
    judges, result = {None: {"gold": load_judge(f"function:{tb.gold_judge_spec}")}}, {"judges": {}, "distributions": {}}
    for n in args.judge_pairs:
        folders = train_judges(tb, work / f"judges{n}", seed, n, args.judge_epochs)
        judges[n] = {"reward": load_judge(f"reward:{folders['reward']}"),
                     "pairwise": load_judge(f"pairwise:{folders['pairwise']}")}
        result["judges"].update({f"{k}@{n}": json.loads((v / "family.json").read_text())["heldout"]["mean_of_members"]
                                 for k, v in folders.items()})
    for dist in ("in", "shifted"):
        d = work / dist
        d.mkdir(exist_ok=True)
        samples = sample_completions(tb.reference_path, prompts_for(dist, seed, args.prompts, "train"), args.n, seed,
                                     tb.config.max_new_tokens)
        src = d / "samples.jsonl"
        src.write_text("".join(json.dumps(s) + "\n" for s in samples))
        sets, policies = {}, {}
        jobs = [(f"{name}@{n}" if name in JUDGED else name, judge, strategy, n if name in JUDGED else None)
                for name, (judge, strategy) in STRATEGIES.items() for n in (args.judge_pairs if name in JUDGED else [0])]
        for name, judge, strategy, n in jobs:
            out = d / f"pairs_{name}.jsonl"
            if judge is None:
                rows = random_pairs(samples, seed)
                out.write_text("".join(json.dumps(r) + "\n" for r in rows))
            else:
                rank_file(str(src), str(out), judges[n][judge], strategy=strategy,
                          log_path=str(out) + ".judgments.jsonl", overwrite=True, progress=False)
                rows = [json.loads(line) for line in out.read_text().splitlines()]
            sets[name] = pair_stats(rows, len(samples))
            for method in args.methods:
                cfg = demo.policy_config(method, out, tb.reference_path, d / f"{method}_{name}", seed=seed,
                                         quick=args.quick)
                policies[f"{method}/{name}"] = demo.train_policy(cfg)
        evaluation = evaluate_policies(policies, tb.reference_path, prompts_for(dist, seed, args.test_prompts, "test"),
                                       gold_fn=task.gold_rewards, log=lambda m: None,
                                       settings=EvalSettings(max_new_tokens=tb.config.max_new_tokens, seed=seed,
                                                             bootstrap_resamples=200))
        for key, ev in evaluation["policies"].items():
            method, name = key.split("/")
            sets[name][f"win_rate/{method}"] = ev["gold_win_rate"]
        result["distributions"][dist] = sets
    return result


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (0 for one seed)."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(T95.get(len(v) - 1, 1.96) * v.std(ddof=1) / math.sqrt(len(v)))


def summarize(per_seed: dict) -> tuple[dict, str]:
    seeds = list(per_seed)
    first = per_seed[seeds[0]]["distributions"]
    table, lines = {}, []
    for dist, sets in first.items():
        keys = list(next(iter(sets.values())))
        lines += [f"\n### {dist} prompts ({len(seeds)} seed(s); mean ± 95% t-interval)\n",
                  "| pair set | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name in sets:
            cells = {k: interval([per_seed[s]["distributions"][dist][name][k] for s in seeds]) for k in keys}
            table.setdefault(dist, {})[name] = cells
            lines.append(f"| {name} | " + " | ".join(f"{m:.3f} ± {h:.3f}" for m, h in cells.values()) + " |")
    return table, "\n".join(lines)


def precondition_and_gains(per_seed: dict) -> str:
    """The judges' own held-out accuracy (the claim's precondition: a pairwise judge that
    compares better than a scorer), and each IPR set's gain over pointwise_rm paired by seed."""
    seeds = list(per_seed)
    lines = [f"\n### The judges on their held-out gold-labelled pairs ({len(seeds)} seed(s); mean ± 95% t-interval)\n",
             "| judge | accuracy | per seed |", "|---|---|---|"]
    for judge in per_seed[seeds[0]]["judges"]:
        acc = [per_seed[s]["judges"][judge]["accuracy"] for s in seeds]
        m, h = interval(acc)
        lines.append(f"| {judge} | {m:.3f} ± {h:.3f} | {' / '.join(f'{a:.3f}' for a in acc)} |")
    for dist, sets in per_seed[seeds[0]]["distributions"].items():
        keys = [k for k in next(iter(sets.values())) if k == "gold_accuracy" or k.startswith("win_rate/")]
        lines += [f"\n### {dist} prompts: gain over the same budget's pointwise_rm, paired by seed (mean ± 95% t-interval)\n",
                  "| pair set | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name in sets:
            if not name.startswith("ipr_") or "@" not in name:
                continue
            base = "pointwise_rm@" + name.split("@")[1]   # the same budget's scorer
            cells = [interval([per_seed[s]["distributions"][dist][name][k] -
                               per_seed[s]["distributions"][dist][base][k] for s in seeds]) for k in keys]
            lines.append(f"| {name} | " + " | ".join(f"{m:+.3f} ± {h:.3f}" for m, h in cells) + " |")
    return "\n".join(lines)


def figure(per_seed: dict, path: Path, budgets: list[int]) -> None:
    """Against the judge budget (pairs per judge): the gold accuracy of each judge-made set's labels
    (top) and the gold win rate of DPO trained on it (bottom), in and out of distribution; lines
    are the mean over seeds with 95% t-intervals, the dashed lines the gold-judge ceiling and
    the random floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(per_seed)
    dists = list(per_seed[seeds[0]]["distributions"])
    fig, axes = plt.subplots(2, len(dists), figsize=(5 * len(dists), 7), squeeze=False)
    for col, dist in enumerate(dists):
        for row, key in enumerate(("gold_accuracy", "win_rate/dpo")):
            ax = axes[row][col]
            at = lambda name: interval([per_seed[s]["distributions"][dist][name][key] for s in seeds])  # noqa: E731
            for name in JUDGED:
                cells = [at(f"{name}@{n}") for n in budgets]
                ax.errorbar(budgets, [m for m, _ in cells], yerr=[h for _, h in cells], marker="o", capsize=3,
                            label=name)
            for name, style in (("ipr_gold", "--"), ("random", ":")):
                ax.axhline(at(name)[0], color="grey", ls=style, lw=1, label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("judge budget (gold-labelled pairs)")
            ax.set_ylabel("gold accuracy of the pair labels" if row == 0 else "DPO gold win rate")
            ax.set_title(f"{dist} prompts")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"IPR with a pairwise judge vs pointwise best-vs-worst ({len(seeds)} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, quick testbed, small sets, DPO only")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--out", default="benchmarks/results/ipr_vs_pointwise")
    ap.add_argument("--cache-dir", default=None, help="testbed cache (default: the testbed's)")
    ap.add_argument("--n", type=int, default=8, help="completions per prompt")
    ap.add_argument("--judge-pairs", type=int, nargs="+", help="judge budgets: gold-labelled pool pairs per judge")
    args = ap.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.prompts, args.test_prompts = (12, 16) if args.quick else (256, 256)
    args.judge_pairs = args.judge_pairs or ([128] if args.quick else [1024, 4096, 8192])
    args.judge_epochs = 2 if args.quick else 4
    args.methods = ["dpo"] if args.quick else ["dpo", "dpo_bcr"]
    snap = provenance.snapshot()
    started = time.perf_counter()
    per_seed = {s: run_seed(args, s) for s in args.seeds}
    table, md = summarize(per_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items()}
    (out / "results.json").write_text(json.dumps({"settings": settings, "per_seed": per_seed, "summary": table,
                                                  "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    md += "\n" + precondition_and_gains(per_seed)
    (out / "results.md").write_text(f"# IPR vs pointwise (issue 14)\n{md}\n\n![gold accuracy of the pair labels](gold_accuracy.png)\n")
    figure(per_seed, out / "gold_accuracy.png", args.judge_pairs)
    provenance.write(out, snap)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

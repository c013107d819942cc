"""Which reward model can learn the testbed's task (issue 10, item 0)?

    python benchmarks/reward_model_search.py            # 3 seeds, ≈ 10 min here
    python benchmarks/reward_model_search.py --quick    # quick testbed, 1 seed, 3 recipes

Every recipe trains a single Bradley–Terry reward model with `robustpo reward train`'s own
code on three training sets of the same testbed seed — 512 and 2,048 unbiased gold-labelled
pairs (drawn from the pair pool, no length selection) and the 512 pairs of the ρ = 0.2
length-biased set — and is scored by its accuracy on the 1,024 unbiased validation pairs
(their labels: one sampled Bradley–Terry annotation of the gold reward, so even the gold
reward scores only about 0.78). Reference lines: the gold reward itself, and the gold-feature
probe (a logistic model on the gold reward's own four features, fitted to the same training
pairs: what the labels say with the right features; a diagnostic, never a model).
Writes OUT/search.csv, OUT/search.md and OUT/provenance.json.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import provenance
from robustpo.testbed import demo

LM = {"reward": {"head": "lm", "pooling": "mean"}, "train": {"learning_rate": 3e-4, "epochs": 2}}
SCORE = {"reward": {"center_coef": 0.01}, "train": {"learning_rate": 2e-3, "epochs": 2}}
RECIPES = {   # name -> (recipe, backbone width: the reference's 64, or a 128-wide LM SFT'd on the same demonstrations)
    "score · last token (the first recipe)": (SCORE, 64),
    "score · last token, lr 1e-3, 4 epochs": (demo.merged(SCORE, {"train": {"learning_rate": 1e-3, "epochs": 4}}), 64),
    "score · mean over response": (demo.merged(SCORE, {"reward": {"pooling": "mean"}}), 64),
    "score · sum over response": (demo.merged(SCORE, {"reward": {"pooling": "sum"}}), 64),
    "score · last token, 128-wide LM": (SCORE, 128),
    "lm · mean log-likelihood (zero-shot, untrained)": (None, 64),
    "lm · mean log-likelihood": (LM, 64),
    "lm · mean, lr 1e-3": (demo.merged(LM, {"train": {"learning_rate": 1e-3}}), 64),
    "lm · mean, 4 epochs": (demo.merged(LM, {"train": {"epochs": 4}}), 64),
    "lm · sum log-likelihood": (demo.merged(LM, {"reward": {"pooling": "sum"}}), 64),
    "lm · mean, 128-wide LM": (LM, 128),
    "lm · mean + product of experts only (length, decorrelate 0)":
        (demo.merged(demo.FAMILIES["debiased"], {"reward": {"confound": {"decorrelate": 0.0}}}), 64),
    "lm · mean + debiased (length, decorrelate 1)": (demo.FAMILIES["debiased"], 64),
}
QUICK = ["score · last token (the first recipe)", "lm · mean log-likelihood (zero-shot, untrained)",
         "lm · mean log-likelihood"]


def training_sets(tb, work: Path, seed: int, sizes: tuple[int, int]) -> dict[str, Path]:
    from robustpo.data.io import read_records, write_jsonl_atomic

    pool = read_records(tb.pool_path)
    order = np.random.default_rng([seed, 2718]).permutation(len(pool))
    sets = {}
    for n in sizes:
        path = work / f"s{seed}" / f"unbiased_n{n}.jsonl"
        if not path.exists():
            write_jsonl_atomic(path, [pool[i] for i in order[:n]])
        sets[f"unbiased {n}"] = path
    sets[f"ρ = 0.2, {tb.config.n_train_pairs}"] = tb.dataset(0.2)
    return sets


def zero_shot_accuracy(reference: Path, rows: list[dict]) -> float:
    """The untrained lm head: the reference's mean token log-likelihood as the reward."""
    from robustpo.rewards.family import RewardFamily, member_entry
    from robustpo.rewards.objective import pairwise_accuracy
    from robustpo.rewards.evaluate import pair_deltas
    import json
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:   # the reference, marked as an lm-head reward model
        model = Path(tmp) / "model"
        shutil.copytree(reference, model)
        config = json.loads((model / "config.json").read_text())
        config["robustpo_reward"] = {"head": "lm", "pooling": "mean", "scale": 1.0}
        (model / "config.json").write_text(json.dumps(config))
        family = RewardFamily(model, {"members": [member_entry(model, model, 0, "zero-shot")],
                                      **demo.DATA_LIMITS})
        return pairwise_accuracy(pair_deltas(family, rows)[:, 0])


def main(argv=None) -> int:
    from robustpo.data.io import read_records
    from robustpo.rewards.evaluate import evaluate_family
    from robustpo.rewards.objective import pairwise_accuracy
    from robustpo.testbed.build import TestbedConfig, build, language_model
    from robustpo.testbed.probe import probe_accuracy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--out", default="benchmarks/results/reward_model_search")
    ap.add_argument("--cache-dir")
    args = ap.parse_args(argv)
    snap = provenance.snapshot()
    started = snap["started"]
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    recipes = {k: RECIPES[k] for k in QUICK} if args.quick else RECIPES
    base = TestbedConfig.quick if args.quick else TestbedConfig
    sizes = (64, 128) if args.quick else (512, 2048)
    out = Path(args.out)
    work = out / "runs"
    rows = []
    for seed in seeds:
        config = base(seed=seed, cache_dir=args.cache_dir)
        tb = build(config, log=lambda m: None)
        validation = read_records(tb.validation_path)
        gold = [r["meta"]["gold_chosen"] - r["meta"]["gold_rejected"] for r in validation]
        import torch

        rows.append({"seed": seed, "recipe": "gold reward (the label-noise ceiling)", "data": "–",
                     "accuracy": pairwise_accuracy(torch.tensor(gold))})
        for data_name, path in training_sets(tb, work, seed, sizes).items():
            train = read_records(path)
            for drop in (False, True):
                rows.append({"seed": seed, "recipe": f"gold-feature probe{' without length' if drop else ''}",
                             "data": data_name, "accuracy": probe_accuracy(train, validation, drop_length=drop)
                             ["accuracy"]})
            for name, (recipe, width) in recipes.items():
                if recipe is None:
                    acc = zero_shot_accuracy(tb.reference_path, validation)
                else:
                    backbone = tb.reference_path if width == 64 else language_model(replace(config, hidden_size=width),
                                                                                    log=lambda m: None)
                    began = time.perf_counter()
                    family = demo.reward_family(path, tb.reference_path, work / f"s{seed}" / f"{data_name}" /
                                                name.replace(" ", "_").replace("·", "").replace(",", ""),
                                                seed=seed, recipe=demo.merged(recipe, {"reward": {
                                                    "heldout_fraction": 0.0}}), backbone=backbone)
                    acc = evaluate_family(family, validation)["mean_of_members"]["accuracy"]
                rows.append({"seed": seed, "recipe": name, "data": data_name, "accuracy": acc})
                print(f"[{time.perf_counter() - started:6.0f} s] seed {seed} {data_name:>16} {name}: {acc:.3f}",
                      flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "search.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seed", "recipe", "data", "accuracy"])
        w.writeheader()
        w.writerows(rows)
    (out / "search.md").write_text(table(rows, seeds) + "\n")
    print(table(rows, seeds))
    provenance.write(out, snap)
    return 0


def table(rows: list[dict], seeds: list[int]) -> str:
    datas = list(dict.fromkeys(r["data"] for r in rows if r["data"] != "–"))
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    lines = [f"Accuracy on the unbiased validation pairs, mean ± s.e. over seeds {', '.join(map(str, seeds))}", "",
             "| reward model | " + " | ".join(f"trained on {d}" for d in datas) + " |", "|---|" + "---|" * len(datas)]
    for recipe in recipes:
        cells = []
        for d in datas:
            vals = [r["accuracy"] for r in rows if r["recipe"] == recipe and r["data"] in (d, "–")]
            se = np.std(vals, ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else float("nan")
            cells.append(f"{np.mean(vals):.3f} ± {se:.3f}" if vals else "")
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

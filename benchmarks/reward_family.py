"""Multi-head reward family vs K independent reward models: cost against benefit.

Both variants see the same data and budget: the same training pairs, the same K bootstrap
draws (head k of the multi-head model weights each pair by its count in draw k, the very
draw independent member k trains on), the same epochs, batch size, learning rate and
backbone.

Cost: training-loop wall time; the whole `reward train` call (adding the fixed costs:
tokenizer and base model, loading, saving, held-out evaluation); scoring time; peak resident
memory of training above the process's footprint after imports (each variant runs in its own
process; members train one after another, so this is about one model's worth either way);
and the weights the family holds to score, where K independent members cost K times more.
Benefit, on held-out pairs: member accuracy, accuracy of the family mean, calibration (ECE,
Brier), and member disagreement.

    python benchmarks/reward_family.py                     # K=3, 600 synthetic pairs, seeds 0 1 2
    python benchmarks/reward_family.py --k 5 --pairs 1200 --hidden 128 --seeds 0

Data: `robustpo.rewards.synthetic` review pairs (preferred = more positive words, 10% of
labels flipped, so about 0.9 is the best achievable held-out accuracy), 25% held out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"independent": "bootstrap", "multihead": "multihead"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux reports KiB


def run_variant(variant: str, args) -> dict:
    """Train and evaluate one variant in this process; return its cost and benefit."""
    import torch

    from robustpo.config import from_dict
    from robustpo.data.schema import load_preferences
    from robustpo.rewards import load_family
    from robustpo.rewards.evaluate import evaluate_family
    from robustpo.rewards.synthetic import make_pairs
    from robustpo.train.reward import RewardRunConfig, split_heldout, train_reward_family

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix=f"rw-bench-{variant}-"))
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(args.pairs, seed=args.seed, flip_rate=0.1)))
    cfg = from_dict(RewardRunConfig, {
        "model": {"name_or_path": f"tiny:llama?hidden_size={args.hidden}&num_layers={args.layers}",
                  "tiny_vocab_size": 512},
        "data": {"train": str(data), "max_length": 40, "max_prompt_length": 16},
        "reward": {"heldout_fraction": 0.25, "family": {"size": args.k, "mode": VARIANTS[variant]}},
        "train": {"output_dir": str(work / "family"), "seed": args.seed, "epochs": args.epochs, "batch_size": 8,
                  "learning_rate": 2e-3, "warmup_ratio": 0.0, "logging_steps": 1000},
    })
    base_rss = peak_rss_mb()
    start = time.perf_counter()
    family_dir = train_reward_family(cfg)
    train_s = time.perf_counter() - start          # includes the held-out evaluation written to the manifest
    train_rss = peak_rss_mb()

    rows, _ = load_preferences(str(data))
    _, held = split_heldout(rows, 0.25, args.seed)
    family = load_family(family_dir, batch_size=32)
    start = time.perf_counter()
    metrics = evaluate_family(family, held)
    score_s = time.perf_counter() - start
    params = sum(p.numel() for m in family._models.values() for p in m.parameters())
    weight_mb = sum(p.numel() * p.element_size() for m in family._models.values() for p in m.parameters()) / 2**20
    members = list(metrics["members"].values())
    manifest = json.loads((family_dir / "family.json").read_text())
    # Loop time per trained model (the K heads of a multi-head model share one loop).
    loops = {m["path"]: m["made"]["loop_seconds"] for m in manifest["members"]}
    return {
        "variant": variant, "seed": args.seed, "k": args.k, "heldout_pairs": len(held),
        "train_s": train_s, "loop_s": sum(loops.values()), "score_s": score_s, "params": params,
        "weights_mb": weight_mb,
        "train_peak_mb": train_rss - base_rss, "peak_mb": peak_rss_mb() - base_rss,
        "member_accuracy": sum(m["accuracy"] for m in members) / len(members),
        "mean_accuracy": metrics["mean_of_members"]["accuracy"], "ece": metrics["mean_of_members"]["ece"],
        "brier": metrics["mean_of_members"]["brier"], "member_ece": sum(m["ece"] for m in members) / len(members),
        "delta_std": metrics["disagreement"]["delta_std"], "split": metrics["disagreement"]["split_decisions"],
    }


COLUMNS = [("loop_s", "training-loop time (s)", "{:.1f}"),
           ("train_s", "whole `reward train` (s)", "{:.1f}"), ("score_s", "scoring time (s)", "{:.2f}"),
           ("train_peak_mb", "peak resident memory of training, above imports (MB)", "{:.0f}"),
           ("params", "parameters", "{:,.0f}"), ("weights_mb", "weights held to score (MiB)", "{:.1f}"),
           ("member_accuracy", "member accuracy", "{:.3f}"), ("mean_accuracy", "family-mean accuracy", "{:.3f}"),
           ("member_ece", "member ECE", "{:.3f}"), ("ece", "family-mean ECE", "{:.3f}"),
           ("brier", "family-mean Brier", "{:.3f}"), ("delta_std", "disagreement: std of Δr", "{:.3f}"),
           ("split", "disagreement: split decisions", "{:.3f}")]


def table(results: list[dict]) -> str:
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    names = list(by_variant)
    lines = ["| | " + " | ".join(f"{n} (K={by_variant[n][0]['k']})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for key, label, fmt in COLUMNS:
        cells = []
        for n in names:
            values = [r[key] for r in by_variant[n]]
            mean = sum(values) / len(values)
            exact = key in ("params", "weights_mb")
            spread = (max(values) - min(values)) / 2 if len(values) > 1 and not exact else None
            cells.append(fmt.format(mean) + (f" ± {fmt.format(spread)}" if spread else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--pairs", type=int, default=600)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)   # internal: one child run
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            result = run_variant(args.variant, args)
        print(json.dumps(result))
        return
    results = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    for seed in args.seeds:
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", variant, "--seed", str(seed), "--k", str(args.k),
                   "--pairs", str(args.pairs), "--hidden", str(args.hidden), "--layers", str(args.layers),
                   "--epochs", str(args.epochs), "--threads", str(args.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{variant} (seed {seed}) failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"seed {seed} {variant}: {results[-1]['train_s']:.1f}s", file=sys.stderr)
    print(f"{args.pairs} synthetic pairs ({int(args.pairs * 0.75)} train / {args.pairs - int(args.pairs * 0.75)} "
          f"held out), tiny Llama hidden {args.hidden} × {args.layers} layers, {args.epochs} epochs, batch 8, "
          f"{args.threads} CPU thread(s), seeds {' '.join(map(str, args.seeds))} (mean ± half-range)\n")
    print(table(results))


if __name__ == "__main__":
    main()

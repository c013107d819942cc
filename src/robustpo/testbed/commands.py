"""`robustpo testbed`: build (or find in the cache) the controlled testbed and print its paths."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "testbed", help="build the controlled testbed (reference policy, ρ-biased pairs, gold reward)",
        description="Train the testbed's reference policy and make gold-labelled preference pairs, length-biased "
                    "datasets for each --rho, an unbiased validation set and held-out test prompts. Everything "
                    "is seeded and cached by a fingerprint of the settings; prints the paths as JSON.")
    p.add_argument("--rho", type=float, action="append",
                   help="fraction of longer-preferred pairs (repeatable; default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-pairs", type=int, help="pairs per ρ dataset")
    p.add_argument("--deterministic-labels", action="store_true",
                   help="argmax gold labels instead of one sampled annotation")
    p.add_argument("--reference-samples", type=int,
                   help="extra reference samples per row (for the KL term of p_dpo/e_dpo)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster testbed (for trying things out)")
    p.add_argument("--cache-dir", help="default: $ROBUSTPO_CACHE/testbed or ~/.cache/robustpo/testbed")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from robustpo.testbed.build import TestbedConfig, build, with_overrides

    base = TestbedConfig.quick() if args.quick else TestbedConfig()
    config = with_overrides(base, seed=args.seed, n_train_pairs=args.train_pairs, cache_dir=args.cache_dir,
                            rhos=tuple(args.rho) if args.rho else None,
                            deterministic_labels=args.deterministic_labels or None,
                            n_reference_samples=args.reference_samples)
    # Progress to stderr, so that stdout is the JSON alone (scripts can parse it).
    tb = build(config, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(json.dumps({
        "reference": str(tb.reference_path),
        "train": {f"{rho:g}": str(path) for rho, path in tb.train_paths.items()},
        "validation": str(tb.validation_path),
        "test_prompts": str(tb.test_prompts_path),
        "gold_rewards": tb.gold_rewards_spec,
        "gold_judge": f"function:{tb.gold_judge_spec}",
        "stats": {k: v for k, v in tb.stats.items() if k != "config"},
    }, indent=2))
    return 0

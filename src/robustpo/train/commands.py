"""`robustpo train RECIPE.yaml [--section.key=value ...] [--resume]`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="train a policy with a preference objective",
                       description="Train a policy from a YAML recipe. Overrides: --section.key=value "
                                   "(e.g. --train.learning_rate=1e-5 --loss.beta=0.2).")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.output_dir")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in train.output_dir")
    p.set_defaults(func=run, _allow_overrides=True)


def run(args) -> int:
    from robustpo.config import load_config
    from robustpo.train.preference import train_preference

    cfg = load_config(args.recipe, args.overrides)
    train_preference(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0

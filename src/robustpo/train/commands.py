"""`robustpo train RECIPE.yaml [--section.key=value ...] [--resume]` and `robustpo losses`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="train a policy with a preference objective",
                       description="Train a policy from a YAML recipe. Overrides: --section.key=value "
                                   "(e.g. --train.learning_rate=1e-5 --loss.beta=0.2).")
    p.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.output_dir")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in train.output_dir")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue although the recipe changes values the run was made with "
                        "(each change is recorded in OUTPUT_DIR/config_changes.jsonl)")
    p.add_argument("--list-losses", action="store_true", help="print the objectives and regularizers, and exit")
    p.set_defaults(func=run, _allow_overrides=True)
    q = sub.add_parser("losses", help="list the objectives and regularizers with their hyperparameters",
                       description="The loss catalogue, read from the registry: what each loss needs, its "
                                   "hyperparameters with their defaults and allowed values.")
    q.set_defaults(func=lambda args: print(catalogue()))


def catalogue() -> str:
    """The registry as text: one block per loss (name, kind, needs, summary, hyperparameters)."""
    from robustpo.loss_spec import LOSSES

    blocks = []
    for spec in sorted(LOSSES.values(), key=lambda s: s.kind != "objective"):
        needs = [n for n, on in [("reference", spec.needs_reference),
                                 (f"rewards (K >= {spec.min_members})", spec.needs_rewards),
                                 ("lengths", spec.needs_lengths)] if on]
        head = f"{spec.name}  {spec.kind}{', batch-level' if spec.batch_level else ''}; " \
               f"needs: {', '.join(needs) or 'policy log-probs only'}{'' if spec.needs_reference else '; no reference'}"
        if spec.uses_reference_samples:
            head += "; reads reference samples when the data has them"
        lines = [head, f"    {spec.summary}"]
        width = max((len(k) for k in spec.defaults), default=0)
        for key, default in spec.defaults.items():
            allowed = spec.hparams.get(key)
            lines.append(f"    {key:<{width}}  default {default!s:<10} {allowed or ''}".rstrip())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run(args) -> int:
    from robustpo.api import train
    from robustpo.errors import ConfigError

    if args.list_losses:
        print(catalogue())
        return 0
    if args.recipe is None:
        raise ConfigError("a recipe is required (robustpo train RECIPE.yaml), or --list-losses")
    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes only applies to --resume")
    train(args.recipe, args.overrides, resume=args.resume, overwrite=args.overwrite, allow_changes=args.allow_changes)
    return 0

"""`robustpo reward train | family | eval | score`."""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("reward", help="train, assemble and apply reward models and families",
                       description="Bradley–Terry reward models and families of them (ensembles).")
    rsub = p.add_subparsers(dest="reward_command", required=True, metavar="SUBCOMMAND")

    t = rsub.add_parser("train", help="train a reward model or a family of K (reward.family: {size, mode})",
                        description="Train from a YAML recipe (see recipes/reward/). Overrides: --section.key=value "
                                    "(e.g. --reward.family.size=3 --reward.family.mode=bootstrap).")
    t.add_argument("recipe")
    t.add_argument("--resume", action="store_true", help="keep finished members, continue the interrupted one")
    t.add_argument("--overwrite", action="store_true", help="discard an earlier run in train.output_dir")
    t.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue although the recipe changes values the run was made with "
                        "(each change is recorded in OUTPUT_DIR/config_changes.jsonl)")
    t.set_defaults(func=run_train, _allow_overrides=True, command="reward train")

    f = rsub.add_parser("family", help="assemble a family from reward models trained elsewhere",
                        description="Write OUT/family.json listing the members (reward-model or family folders).")
    f.add_argument("--members", nargs="+", required=True, metavar="DIR")
    f.add_argument("--out", required=True, metavar="DIR")
    f.add_argument("--copy", action="store_true", help="copy members under OUT/members (default: refer to them)")
    f.add_argument("--heldout", metavar="DATA", help="preference pairs to measure each member and disagreement on")
    f.add_argument("--max-length", type=int, help="token limit for scoring (default: the members' own)")
    f.add_argument("--drop-empty", action="store_true", help="drop held-out rows with an empty response")
    f.set_defaults(func=run_family, command="reward family")

    e = rsub.add_parser("eval", help="held-out accuracy, margin, calibration and disagreement of a family",
                        description="Measure each member and the family mean on preference pairs.")
    e.add_argument("--family", required=True, metavar="DIR", help="family folder or single reward-model folder")
    e.add_argument("--data", required=True, metavar="PAIRS")
    e.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="cpu")
    e.add_argument("--drop-empty", action="store_true", help="drop rows with an empty response")
    e.set_defaults(func=run_eval, command="reward eval")

    s = rsub.add_parser("score", help="add chosen_rewards / rejected_rewards (K per row) to a dataset",
                        description="Resumable: rerun the same command after an interruption. Output rows feed "
                                    "`robustpo train` with distill, distill_soft and e_dpo.")
    s.add_argument("--family", required=True, metavar="DIR", help="family folder or single reward-model folder")
    s.add_argument("--data", required=True, metavar="IN")
    s.add_argument("--out", required=True, metavar="OUT")
    s.add_argument("--normalize", choices=("none", "standardize"), default="none",
                   help="standardize: per-member (r − mean) / std over this dataset's responses")
    s.add_argument("--stats-from", metavar="META", help="reuse normalization stats from another OUT.meta.json")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", default="cpu")
    s.add_argument("--format", default="auto", choices=("auto", "explicit", "implicit", "conversational"))
    s.add_argument("--split")
    s.add_argument("--drop-empty", action="store_true", help="drop rows with an empty response")
    s.add_argument("--resume", action="store_true",
                   help="accepted for symmetry with other commands: scoring always resumes an interrupted run")
    s.add_argument("--overwrite", action="store_true", help="replace OUT and any interrupted partial scoring")
    s.set_defaults(func=run_score, command="reward score")


def run_train(args) -> int:
    from robustpo.api import reward_train
    from robustpo.errors import ConfigError
    from robustpo.rewards.evaluate import format_metrics

    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes only applies to --resume")
    run = reward_train(args.recipe, args.overrides, resume=args.resume, overwrite=args.overwrite,
                       allow_changes=args.allow_changes)
    manifest = run.manifest
    print(f"family of {manifest['size']} ({manifest['mode']}) written to {run.family_dir}")
    if "heldout" in manifest:
        metrics = {"members": {m["name"]: m["heldout"] for m in manifest["members"]}, **manifest["heldout"]}
        print(f"held-out: {manifest['heldout']['source']}\n{format_metrics(metrics)}")
    return 0


def run_family(args) -> int:
    from robustpo.rewards.family import assemble_family, read_manifest, write_manifest

    out = assemble_family(args.members, args.out, copy=args.copy, max_length=args.max_length)
    manifest = read_manifest(out)
    print(f"family of {len(manifest['members'])} written to {out / 'family.json'}")
    if args.heldout:
        from robustpo.data.schema import load_preferences
        from robustpo.rewards.evaluate import evaluate_family, format_metrics

        rows, _ = load_preferences(args.heldout, drop_empty=args.drop_empty)
        metrics = evaluate_family(out, rows)
        for m in manifest["members"]:
            m["heldout"] = metrics["members"][m["name"]]
        manifest["heldout"] = {"source": args.heldout, **{k: v for k, v in metrics.items() if k != "members"}}
        write_manifest(out, {k: v for k, v in manifest.items() if k not in ("format", "version")})
        print(format_metrics(metrics))
    return 0


def run_eval(args) -> int:
    from robustpo.api import reward_eval
    from robustpo.data.io import write_json_atomic
    from robustpo.rewards.evaluate import format_metrics

    metrics = reward_eval(args.family, args.data, batch_size=args.batch_size, device=args.device,
                          drop_empty=args.drop_empty)
    print(f"{metrics.pop('data_report')}\n{format_metrics(metrics)}")
    if args.json:
        write_json_atomic(args.json, {"data": args.data, "family": args.family, **metrics})
    return 0


def run_score(args) -> int:
    from robustpo.api import reward_score

    device = args.device
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:   # one GPU per launched process
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    result = reward_score(args.family, args.data, args.out, normalize=args.normalize, stats_from=args.stats_from,
                          batch_size=args.batch_size, device=device, format=args.format, split=args.split,
                          drop_empty=args.drop_empty, overwrite=args.overwrite)
    resumed = result.rows - result.scored_now
    if result.scored_now == 0 and resumed:
        note = "already up to date"
    else:
        note = f"{result.scored_now} scored now" + (f", {resumed} from an interrupted run" if resumed else "")
    print(f"{result.rows} pairs with rewards from {len(result.members)} member(s) in {result.out_path} ({note})")
    return 0

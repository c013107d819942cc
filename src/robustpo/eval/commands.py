"""`robustpo eval` and `robustpo report`."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="win rate, gold reward, length and KL of policies against their reference",
        description="Sample each policy and the reference on held-out prompts; report the win rate against the "
                    "reference (gold reward function and/or a pairwise judge in both orders, 95% percentile "
                    "bootstrap interval over prompts), mean gold reward, mean length, KL(pi||pi_ref) from the "
                    "policy's own samples with its standard error, and on training pairs the mean log-ratios "
                    "of chosen and rejected responses. Writes eval.json, eval.md and PNG plots to --out.")
    p.add_argument("--policy", action="append", required=True, metavar="[NAME=]PATH",
                   help="policy model folder or training run folder (uses RUN_DIR/final); repeatable")
    p.add_argument("--reference", required=True, metavar="PATH", help="reference model folder")
    p.add_argument("--prompts", required=True, metavar="FILE", help="held-out prompts: rows with a 'prompt' field")
    p.add_argument("--gold", metavar="MODULE:FN",
                   help="gold reward fn(prompts, responses) -> rewards; 'testbed' = robustpo.testbed.task:gold_rewards")
    p.add_argument("--judge", metavar="SPEC", help="pairwise judge spec (see `robustpo rank --help`), both orders")
    p.add_argument("--train-pairs", metavar="FILE", help="training pairs for the Δ(w), Δ(l) collapse diagnostic")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--max-prompts", type=int, help="use the first N prompts")
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0,
                   help="1.0 (default) keeps the KL estimate unbiased; 0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-train-pairs", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_eval)

    r = subparsers.add_parser("report", help="training curves of finished runs side by side",
                              description="Draw margins, logratio/chosen and implicit-reward curves from each "
                                          "RUN_DIR/metrics.jsonl into one PNG, and a markdown report.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", default="report", metavar="DIR", help="output folder (default: ./report)")
    r.set_defaults(func=run_report)


def run_eval(args) -> int:
    from robustpo.api import evaluate, named_policies
    from robustpo.eval.report import markdown_table

    result = evaluate(named_policies(args.policy), args.reference, args.prompts, out=args.out, gold=args.gold,
                      judge=args.judge, train_pairs=args.train_pairs, max_prompts=args.max_prompts,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                      samples_per_prompt=args.samples_per_prompt, seed=args.seed, batch_size=args.batch_size,
                      max_train_pairs=args.max_train_pairs, device=args.device)
    print(markdown_table(result))
    print(f"wrote {', '.join(result['written'].values())}")
    return 0


def run_report(args) -> int:
    from pathlib import Path

    from robustpo.errors import DataError
    from robustpo.eval.report import write_report

    for d in args.run_dirs:
        if not (Path(d) / "metrics.jsonl").exists():
            raise DataError("no metrics.jsonl in this run folder (has the run logged a step yet?)", file=d)
    print(f"wrote {write_report(args.run_dirs, args.out)}")
    return 0

"""`robustpo generate | rank | label`: make preference data from prompts.

    robustpo generate --model M --prompts prompts.jsonl --n 8 --out samples.jsonl
    robustpo rank --judge SPEC --in samples.jsonl --out pairs.jsonl [--strategy tournament|insertion|pointwise]
    robustpo label --judge SPEC --in pairs.jsonl --out relabelled.jsonl

All three resume: rerun the same command after a crash and it continues where it stopped.
Each holds an exclusive lock on OUT (`OUT.lock`, robustpo/locks.py) for the whole command,
so a second process on the same OUT stops at once with the holder's pid. Until every input
row is done the rows are in `OUT.partial`; OUT appears (atomically) only when complete.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_options(pairs: list[str] | None, flag: str = "--judge-option") -> dict:
    """`KEY=VALUE` strings -> dict; values parsed as JSON when they are JSON (numbers, bools)."""
    from robustpo.errors import ConfigError

    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got '{item}'")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


def _add_judge_args(p: argparse.ArgumentParser) -> None:
    from robustpo.judges import JUDGE_SPEC_HELP

    p.add_argument("--judge", required=True, help="judge spec, see below")
    p.add_argument("--judge-option", "-J", action="append", metavar="KEY=VALUE",
                   help="judge backend option (repeatable), e.g. -J model=qwen -J concurrency=8")
    p.add_argument("--single-order", action="store_true",
                   help="judge each pair in one order only (default: both orders, averaged)")
    p.add_argument("--judge-log", help="append-only record of every comparison (default OUT.judgments.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    p.add_argument("--resume", action="store_true",
                   help="continue an earlier run in OUT (the default whenever OUT exists; accepted for symmetry)")
    p.add_argument("--no-progress", action="store_true")
    import textwrap

    # Raw formatting keeps the spec table's columns; the description is wrapped by hand.
    p.epilog = JUDGE_SPEC_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.fill(p.description or "", 88)


def _log_path(args) -> str:
    """The comparison log: --judge-log, else OUT.judgments.jsonl (cleared by --overwrite)."""
    from pathlib import Path

    if args.judge_log:
        return args.judge_log
    path = args.out + ".judgments.jsonl"
    if args.overwrite:
        Path(path).unlink(missing_ok=True)
    return path


def _judge_from_args(args):
    from robustpo.judges import load_judge

    options = parse_options(args.judge_option)
    is_http = args.judge.startswith(("http://", "https://", "openai:"))
    if is_http and "cache" not in options:
        options["cache"] = args.out + ".judge-cache.jsonl"  # a rerun never pays twice
    return load_judge(args.judge, **options)


def _report(summary, args, what: str) -> None:
    skip = {"swapped", "ties"} if what == "rank" else {"no_pair"}
    d = {k: getattr(summary, k) for k in summary.__dataclass_fields__ if k not in skip}
    d["disagreement_rate"] = round(summary.disagreement_rate, 4)
    print(f"{what}: " + json.dumps(d), file=sys.stderr)


def _report_truncation(judge, what: str) -> None:
    """Judges that cut long texts by a documented rule (pairwise:) say how often they did."""
    counts = getattr(judge, "truncation", None)
    if counts is not None:
        print(f"{what}: judge truncation " + json.dumps(counts), file=sys.stderr)


def cmd_generate(args) -> int:
    from robustpo.locks import exclusive_output
    from robustpo.models import check_model_source

    check_model_source(args.model, "--model")
    with exclusive_output(args.out, what="output", folder=False):
        return _generate(args)


def _generate(args) -> int:
    from robustpo.errors import ConfigError
    from robustpo.generate.sampling import SamplingSettings, generate_file, load_sampler

    settings = SamplingSettings(n=args.n, temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size)
    settings.check()
    if args.vllm_option and args.backend != "vllm":
        raise ConfigError("--vllm-option is for --backend vllm")
    options = {"device": args.device} if args.backend == "transformers" else parse_options(args.vllm_option,
                                                                                          "--vllm-option")
    sampler = load_sampler(args.model, args.backend, **options)
    result = generate_file(args.prompts, args.out, sampler, settings, model_name=args.model,
                           overwrite=args.overwrite, progress=not args.no_progress)
    print("generate: " + json.dumps(result), file=sys.stderr)
    return 0


def cmd_rank(args) -> int:
    from robustpo.locks import exclusive_output

    # Locked before anything is opened: the judge's cache and the log are OUT's side files too.
    with exclusive_output(args.out, what="output", folder=False):
        return _rank(args)


def _rank(args) -> int:
    from robustpo.generate.rank import rank_file

    judge = _judge_from_args(args)
    summary = rank_file(args.input, args.out, judge, strategy=args.strategy, selection=args.pairs,
                        both_orders=not args.single_order, chunk=args.chunk,
                        log_path=_log_path(args), overwrite=args.overwrite,
                        progress=not args.no_progress)
    _report(summary, args, "rank")
    _report_truncation(judge, "rank")
    return 0


def cmd_label(args) -> int:
    from robustpo.locks import exclusive_output

    with exclusive_output(args.out, what="output", folder=False):
        return _label(args)


def _label(args) -> int:
    from robustpo.generate.rank import label_file

    judge = _judge_from_args(args)
    summary = label_file(args.input, args.out, judge, both_orders=not args.single_order, ties=args.ties,
                         chunk=args.chunk, log_path=_log_path(args),
                         overwrite=args.overwrite, progress=not args.no_progress)
    _report(summary, args, "label")
    _report_truncation(judge, "label")
    return 0


def register(subparsers) -> None:
    g = subparsers.add_parser("generate", help="sample N completions per prompt",
                              description="Sample N completions per prompt (resumable, append-only output). "
                                          "Prompts: rows with 'prompt', a string or a list of {role, content} "
                                          "messages (rendered with the chat template). Output: one row per "
                                          "prompt, {prompt, completions: [N strings], meta}, which "
                                          "`robustpo rank` reads.")
    g.add_argument("--model", required=True, help="model folder or hub id")
    g.add_argument("--prompts", required=True, help="rows with 'prompt' (string or chat messages)")
    g.add_argument("--out", required=True, help="output JSONL: {prompt, completions, meta} per prompt")
    g.add_argument("--n", type=int, default=4, help="completions per prompt (default 4)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="0 = greedy: one decode per prompt, copied n times (default 1.0)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    g.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    g.add_argument("--device", default="cpu")
    g.add_argument("--vllm-option", "-V", action="append", metavar="KEY=VALUE",
                   help="vllm.LLM option for --backend vllm (repeatable), e.g. -V dtype=float32 "
                        "-V gpu_memory_utilization=0.3 (CPU) -V tensor_parallel_size=2")
    g.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    g.add_argument("--resume", action="store_true",
                   help="continue an earlier run in OUT (the default whenever OUT exists; accepted for symmetry)")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=cmd_generate)

    r = subparsers.add_parser("rank", help="rank completions with a pairwise judge; write preference pairs",
                              description="Iterative pairwise ranking (Chen et al., arXiv 2411.05875). "
                                          "tournament: winner stays finds the best in N-1 comparisons, loser "
                                          "stays the worst (2N-3 in all); insertion: a full ranking by binary "
                                          "insertion, O(N log N); pointwise: score each completion with a "
                                          "reward model. Output: canonical preference rows {prompt, chosen, "
                                          "rejected, meta} (meta: ranking, best, worst, comparisons, judge "
                                          "calls, order disagreements) that `robustpo train` reads.")
    r.add_argument("--in", dest="input", required=True, help="output of `robustpo generate`")
    r.add_argument("--out", required=True, help="canonical preference rows {prompt, chosen, rejected, meta}")
    r.add_argument("--strategy", default="tournament", choices=["tournament", "insertion", "pointwise"])
    r.add_argument("--pairs", default="best_worst", choices=["best_worst", "best_vs_rest", "adjacent"])
    r.add_argument("--chunk", type=int, default=16, help="prompts ranked together (one judge batch per step)")
    _add_judge_args(r)
    r.set_defaults(func=cmd_rank)

    lb = subparsers.add_parser("label", help="judge existing pairs; swap when the judge prefers the rejected",
                               description="Relabel preference pairs with a judge (both orders by "
                                           "default): swap chosen and rejected when the judge prefers the "
                                           "rejected; meta.label records the judge, prob_chosen_better, "
                                           "swapped, tie. A 0.5 verdict is a tie: kept as it was "
                                           "(--ties keep) or dropped (--ties drop).")
    lb.add_argument("--in", dest="input", required=True, help="preference rows {prompt, chosen, rejected}")
    lb.add_argument("--out", required=True)
    lb.add_argument("--ties", default="keep", choices=["keep", "drop"],
                    help="a 0.5 verdict keeps the pair as it was (marked tie) or drops it")
    lb.add_argument("--chunk", type=int, default=64)
    _add_judge_args(lb)
    lb.set_defaults(func=cmd_label)

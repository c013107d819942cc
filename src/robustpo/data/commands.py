"""`robustpo validate DATA`: what a dataset holds and what is wrong with it, before training."""

from __future__ import annotations

import statistics


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a preference dataset and report its shape",
                       description="Report row counts, formats detected, problems found and length statistics.")
    p.add_argument("data", help="file (.jsonl/.json/.parquet/.csv), saved dataset folder, or hub id")
    p.add_argument("--format", default="auto", choices=["auto", "explicit", "implicit", "conversational"])
    p.add_argument("--split", default=None)
    p.add_argument("--tokenizer", default=None, help="report lengths in this tokenizer's tokens (else characters)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--max-prompt-length", type=int, default=256)
    p.add_argument("--max-problems", type=int, default=20, help="problems listed before stopping the scan")
    p.set_defaults(func=run)


def _stats(values: list[int]) -> str:
    values = sorted(values)
    pct = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return f"mean {statistics.fmean(values):.0f}, median {pct(0.5)}, p95 {pct(0.95)}, max {values[-1]}"


def collect_problems(raw, source: str, fmt: str, limit: int, problems: list | None = None):
    """Validate every row (strict: identical pairs are problems too), collecting problems instead
    of stopping at the first: (rows that passed, up to `limit` DataErrors in file order, the
    DataReport of the rows that passed). `problems` may already hold the DataErrors of reading
    (unreadable lines)."""
    from robustpo.data.schema import validate_rows

    problems = list(problems or [])
    good, report = validate_rows(raw, source=source, fmt=fmt, strict=True, problems=problems,
                                 max_problems=max(limit - len(problems), 1))
    problems.sort(key=lambda e: (e.row is not None, e.row if e.row is not None else -1))
    return good, problems[:limit], report


def run(args) -> int:
    from robustpo.data.io import read_records
    from robustpo.errors import ConfigError

    if args.max_problems < 1:
        raise ConfigError(f"--max-problems must be >= 1, got {args.max_problems}")
    read_problems: list = []
    raw = read_records(args.data, split=args.split, problems=read_problems)
    rows, problems, report = collect_problems(raw, args.data, args.format, args.max_problems, read_problems)
    print(f"{args.data}: {len(raw) + len(read_problems)} rows")
    if rows:
        print(f"formats: {', '.join(f'{k} {v}' for k, v in sorted(report.formats.items()))}")
        if report.num_members is not None:
            print(f"rewards: K={report.num_members} members per response")
        if args.tokenizer:
            from transformers import AutoTokenizer

            from robustpo.data.tokenize import tokenize_pairs

            tok = AutoTokenizer.from_pretrained(args.tokenizer)
            items, tstats = tokenize_pairs(rows, tok, max_length=args.max_length,
                                           max_prompt_length=args.max_prompt_length, source=args.data)
            unit = "tokens"
            lengths = {"prompt": [len(i["prompt_ids"]) for i in items], "chosen": [len(i["chosen_ids"]) for i in items],
                       "rejected": [len(i["rejected_ids"]) for i in items]}
            print(f"truncation (max_length {args.max_length}, max_prompt_length {args.max_prompt_length}): "
                  f"{tstats.summary()}")
        else:
            unit = "characters"
            lengths = {k: [len(str(r[k])) for r in rows] for k in ("prompt", "chosen", "rejected")}
        for name, values in lengths.items():
            print(f"{name} length ({unit}): {_stats(values)}")
    if problems:
        print(f"{len(problems)} problem(s){' (scan stopped)' if len(problems) >= args.max_problems else ''}:")
        for p in problems:
            print(f"  {p}")
        return 1
    print("no problems found")
    return 0

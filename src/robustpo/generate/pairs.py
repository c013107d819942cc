"""Choosing preference pairs from a ranking, and validating inputs for rank / label (prompts by
data.schema.check_prompt, the rule every command applies to a prompt)."""

from __future__ import annotations

from robustpo.data.schema import check_prompt
from robustpo.errors import ConfigError, DataError
from robustpo.generate.ranking import Ranking

SELECTIONS = ("best_worst", "best_vs_rest", "adjacent")


def check_strategy(strategy: str, selection: str) -> None:
    from robustpo.generate.ranking import STRATEGIES

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}' (choose from {', '.join(STRATEGIES)})")
    if selection not in SELECTIONS:
        raise ConfigError(f"unknown pair selection '{selection}' (choose from {', '.join(SELECTIONS)})")
    if strategy == "tournament" and selection == "adjacent":
        raise ConfigError("adjacent pairs need a full ranking: use --strategy insertion (or pointwise)")


def select_pairs(ranking: Ranking, n: int, selection: str) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs. best_worst: the best against the worst;
    best_vs_rest: the best against every other; adjacent: neighbours in the full ranking."""
    if n < 2:
        return []
    if selection == "best_worst":
        return [(ranking.best, ranking.worst)] if ranking.best != ranking.worst else []
    if selection == "best_vs_rest":
        others = ranking.order[1:] if ranking.order else [i for i in range(n) if i != ranking.best]
        return [(ranking.best, j) for j in others]
    if selection == "adjacent":
        return list(zip(ranking.order[:-1], ranking.order[1:]))
    raise ConfigError(f"unknown pair selection '{selection}'")


def read_samples(path: str) -> list[dict]:
    """Rows of a `robustpo generate` output: `prompt` and `completions` (list of strings).
    Rows are named by their file row, as in `data.schema.validate_rows`."""
    from robustpo.data.io import read_records

    rows = read_records(path)
    for row, i in zip(rows, rows.file_rows):
        for name in ("prompt", "completions"):
            if name not in row:
                raise DataError("missing field", file=str(path), row=i, field=name)
        check_prompt(row["prompt"], file=str(path), row=i)
        comps = row["completions"]
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise DataError("expected a list of strings", file=str(path), row=i, field="completions")
    return rows


def read_pairs(path: str) -> list[dict]:
    """Preference rows in any accepted input format (explicit, implicit HH-style,
    conversational; see data/formats.py), returned as canonical rows. Rows are named by their
    file row, as in `data.schema.validate_rows`."""
    from robustpo.data.formats import to_canonical
    from robustpo.data.io import read_records

    rows, records = [], read_records(path)
    for raw, i in zip(records, records.file_rows):
        row = to_canonical(raw, file=str(path), index=i)
        row.pop("format", None)
        rows.append(row)
        check_prompt(row["prompt"], file=str(path), row=i)
        for name in ("chosen", "rejected"):
            v = row[name]
            if not (isinstance(v, str) or isinstance(v, list)):
                raise DataError(f"expected a string or a list of messages, got {type(v).__name__}",
                                file=str(path), row=i, field=name)
            if isinstance(v, str) and not v.strip():
                raise DataError("empty response", file=str(path), row=i, field=name)
    return rows

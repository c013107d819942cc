"""Confound features φ(x, y): a per-response quantity the labels are suspected to be biased by.

Practitioners usually know the suspect (response length above all: Singhal et al. 2023, "A
Long Way to Go: Investigating Length Correlations in RLHF"). Naming it lets a reward family
span it (train/reward.py: debiased members, `span`, `reweight`) and lets the precondition
check say how much of each member's margin it explains (rewards/evaluate.py).

A feature is
- `length`: response tokens, EOS included, after truncation (the n(y) of the training loop);
- `words`: whitespace-separated words of the response text;
- `module:function`: any callable `(prompts, responses) -> list[float]`, one finite value per
  response (formatting, a keyword, a politeness score...).

Values are standardised, `(φ − mean) / std`, with the mean and standard deviation over the
2N responses of the training pairs; the statistics go into `family.json` so that scoring
applies exactly the same map.
"""

from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass
from typing import Callable

from robustpo.errors import ConfigError, DataError

BUILTIN = ("length", "words")


@dataclass
class ConfoundConfig:
    feature: str = "length"       # length | words | module:function
    debias: bool = True           # learn b in r_θ(w) − r_θ(l) + b·(φ(w) − φ(l)); score with r_θ alone
    # λ of the penalty λ·corr(r_θ, φ)² over each batch's responses; 1 because on the testbed's
    # validation pairs it is what moved accuracy (README, "A reward model that can learn the task")
    decorrelate: float = 1.0


def check_feature(spec: str) -> None:
    """Raise ConfigError now (before any model work) for a feature that cannot be used."""
    resolve(spec)


def resolve(spec: str) -> Callable | None:
    """The user function of `module:function` (None for a built-in feature)."""
    if spec in BUILTIN:
        return None
    if ":" not in spec:
        close = difflib.get_close_matches(spec, BUILTIN, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"reward.confound.feature: unknown feature '{spec}'{hint} (choose {', '.join(BUILTIN)} "
                          "or module:function)")
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward.confound.feature: cannot import '{spec}' ({type(e).__name__}: {e})") from None
    if not callable(fn):
        raise ConfigError(f"reward.confound.feature: '{spec}' is not callable")
    return fn


def feature_values(spec: str, prompts: list, responses: list, token_counts: list[int], *,
                   rows: list[int] | None = None, source: str | None = None) -> list[float]:
    """Raw φ for each (prompt, response). `token_counts`: response tokens as the models see them.

    `rows` (0-based file rows, one per response) name the row at fault in an error.
    """
    if spec == "length":
        return [float(n) for n in token_counts]
    if spec == "words":
        return [float(len(r.split())) if isinstance(r, str) else float(sum(len(str(m.get("content", "")).split())
                                                                           for m in r)) for r in responses]
    fn = resolve(spec)
    try:
        values = list(fn(list(prompts), list(responses)))
    except Exception as e:  # noqa: BLE001 - a user function may raise anything; find the row that does it
        raise DataError(f"confound feature '{spec}' raised {type(e).__name__}: {e}", file=source,
                        row=_first_failing_row(fn, prompts, responses, rows)) from None
    if len(values) != len(responses):
        raise DataError(f"confound feature '{spec}' returned {len(values)} values for {len(responses)} responses "
                        "(it must return one float per response)", file=source)
    out = []
    for i, v in enumerate(values):
        try:
            v = float(v)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise DataError(f"confound feature '{spec}' gave {values[i]!r}, not a finite number", file=source,
                            row=rows[i] if rows is not None else i)
        out.append(v)
    return out


def _first_failing_row(fn, prompts, responses, rows) -> int | None:
    for i, (p, r) in enumerate(zip(prompts, responses)):
        try:
            fn([p], [r])
        except Exception:  # noqa: BLE001
            return rows[i] if rows is not None else i
    return None


def standardization(values: list[float], spec: str) -> dict:
    """{"mean", "std"} of the training responses' raw values; a constant feature is an error."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    if not std > 1e-12:
        raise ConfigError(f"reward.confound.feature '{spec}' has the same value ({mean:g}) for every training "
                          "response: there is no confound to model")
    return {"mean": mean, "std": std}


def standardize(values: list[float], stats: dict) -> list[float]:
    return [(v - stats["mean"]) / stats["std"] for v in values]

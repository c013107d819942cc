"""The pairwise Judge protocol, both-order judging and the record of every comparison.

A judge answers, in batches, "is the first response better than the second?" with a
probability in [0, 1] (0.5 = tie / no preference). Every backend (reward model or family,
local LM, OpenAI-compatible HTTP endpoint, Python function) speaks this one protocol, so
the ranking (Chen et al., arXiv 2411.05875), the labelling of existing pairs and the
evaluation's win rates never care which judge is behind it.

Position bias: LM judges often prefer whichever answer comes first. `judge_both_orders`
asks both orders, P(a>b) from (a, b) and 1 − P(b>a) from (b, a), and averages them; a judge
that always prefers position one then returns 0.5 for every pair instead of a verdict.
The fraction of items whose two orders point in opposite directions is reported as the
disagreement rate.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from robustpo.errors import RobustpoError

TIE = 0.5


class JudgeError(RobustpoError):
    """A judge could not produce verdicts (bad output, server down after all retries, ...)."""


@runtime_checkable
class Judge(Protocol):
    """Pairwise judge. `name` is a stable identifier used in cache keys and records."""

    name: str

    def compare(self, prompts: list, first: list[str], second: list[str]) -> list[float]:
        """P(first response is better than second), one per item, in [0, 1]; 0.5 = tie."""
        ...


@dataclass
class Verdict:
    """One judged comparison as a backend saw it: the probability plus what it was read from."""

    prob: float
    raw: Any = None        # reply text, label logits, rewards: whatever the verdict came from
    parsed: bool = True    # False: the reply could not be read, `prob` is the tie 0.5


def as_text(value) -> str:
    """A prompt or response as plain text for judges that read text.

    Strings pass through; a list of chat messages `{role, content}` becomes
    "role: content" blocks separated by blank lines (a neutral rendering: the judge's
    own chat template, if any, is applied around the whole judging prompt).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                           for m in value)
    return str(value)


def text_hash(value) -> str:
    """Short content hash recorded in comparison logs (texts themselves stay in the data)."""
    data = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def check_probs(probs: Sequence[float], expected: int, judge_name: str) -> list[float]:
    """Validate a backend's output: right length, finite numbers in [0, 1]."""
    probs = [float(p) for p in probs]
    if len(probs) != expected:
        raise JudgeError(f"judge '{judge_name}' returned {len(probs)} verdicts for {expected} comparisons")
    for i, p in enumerate(probs):
        if not math.isfinite(p) or p < 0.0 or p > 1.0:
            raise JudgeError(f"judge '{judge_name}' returned {p!r} for comparison {i}; "
                             "a verdict must be a probability in [0, 1]")
    return probs


def compare_detailed(judge, prompts: list, first: list, second: list) -> list[Verdict]:
    """Run one batch through `judge`, keeping the raw replies when the backend offers them."""
    if not (len(prompts) == len(first) == len(second)):
        raise JudgeError(f"compare needs equal lengths, got {len(prompts)}, {len(first)}, {len(second)}")
    if not prompts:
        return []
    if hasattr(judge, "compare_detailed"):
        verdicts = judge.compare_detailed(prompts, first, second)
        check_probs([v.prob for v in verdicts], len(prompts), judge.name)
        return verdicts
    return [Verdict(p) for p in check_probs(judge.compare(prompts, first, second), len(prompts), judge.name)]


class ComparisonLog:
    """Append-only JSONL record of every judged comparison (one flushed line each).

    Fields: judge, order ("ab": a shown first, "ba": b shown first), hashes of the prompt
    and of the texts shown first and second, the raw reply, whether it parsed, the
    probability that the text shown first is better, and `source_row` (the input row it
    was judged for) when known. Each comparison is written once: a comparison already in
    the file (same judge, order, texts and source_row) is not written again, so a resumed
    job that asks again for the comparisons of an unfinished row (its judge answers them
    from its cache) leaves the same log as an uninterrupted run.
    """

    def __init__(self, path: str | Path):
        from robustpo.data.io import AppendOnlyJsonl

        self._out = AppendOnlyJsonl(path)
        self._lock = threading.Lock()
        self._seen = {self._key(r) for r in self._out.rows}

    @staticmethod
    def _key(row: dict) -> tuple:
        return (row.get("judge"), row.get("order"), row.get("prompt_hash"), row.get("first_hash"),
                row.get("second_hash"), row.get("source_row"))

    def record(self, judge_name: str, order: str, prompt, first, second, verdict: Verdict,
               source_row: int | None = None) -> None:
        row = {"judge": judge_name, "order": order, "prompt_hash": text_hash(prompt),
               "first_hash": text_hash(first), "second_hash": text_hash(second),
               "raw": verdict.raw, "parsed": verdict.parsed, "prob_first": verdict.prob}
        if source_row is not None:
            row["source_row"] = source_row
        key = self._key(row)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            self._out.append(row)

    def close(self) -> None:
        self._out.close()


@dataclass
class BothOrders:
    """Verdicts for items (prompt, a, b) judged as (a, b) and as (b, a).

    probs[i] = (P(a>b | a first) + 1 − P(b>a | b first)) / 2, the position-debiased
    probability that a is better. disagreement_rate: fraction of items where one order
    prefers a and the other prefers b (strictly, ties excluded).
    """

    probs: list[float]
    prob_a_first: list[float]
    prob_b_first: list[float]          # already flipped: P(a better) read from the (b, a) order
    disagreements: list[bool] = field(default_factory=list)

    @property
    def disagreement_rate(self) -> float:
        return sum(self.disagreements) / len(self.disagreements) if self.disagreements else 0.0


def judge_both_orders(judge, prompts: list, a: list, b: list, *, log: ComparisonLog | None = None,
                      both_orders: bool = True, source_rows: list | None = None) -> BothOrders:
    """P(a better than b) for each item, judged in both orders and averaged (see module doc).

    With `both_orders=False` only the (a, b) order is asked (half the cost, biased judges
    stay biased); `prob_b_first` then mirrors `prob_a_first` and nothing can disagree.
    `source_rows` (one per item) tags each logged comparison with the input row it serves.
    """
    n = len(prompts)
    if both_orders:
        verdicts = compare_detailed(judge, list(prompts) * 2, list(a) + list(b), list(b) + list(a))
        ab, ba = verdicts[:n], verdicts[n:]
    else:
        ab = compare_detailed(judge, list(prompts), list(a), list(b))
        ba = None
    if log is not None:
        for i in range(n):
            unit = source_rows[i] if source_rows is not None else None
            log.record(judge.name, "ab", prompts[i], a[i], b[i], ab[i], source_row=unit)
            if ba is not None:
                log.record(judge.name, "ba", prompts[i], b[i], a[i], ba[i], source_row=unit)
    p_ab = [v.prob for v in ab]
    p_ba = [1.0 - v.prob for v in ba] if ba is not None else list(p_ab)
    probs = [(x + y) / 2 for x, y in zip(p_ab, p_ba)]
    disagree = [(x - TIE) * (y - TIE) < 0 for x, y in zip(p_ab, p_ba)]
    return BothOrders(probs=probs, prob_a_first=p_ab, prob_b_first=p_ba, disagreements=disagree)

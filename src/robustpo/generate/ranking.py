"""Iterative pairwise ranking of a prompt's completions (Chen et al., arXiv 2411.05875).

The paper's observation: asking a judge "which of these two is better?" and ranking by
such comparisons gives better preference pairs than scoring each completion on its own
with a reward model, above all out of distribution. Strategies:

- `tournament`: winner stays. The current best meets the next candidate; the winner stays
  on. N−1 comparisons find the best. A loser-stays pass (the current worst meets the next
  candidate, the loser stays) finds the worst with another N−1; its first comparison,
  candidate 1 against candidate 0, is the same as the best pass's and is asked once, so
  best and worst cost 2N−3 comparisons (N ≥ 2, no ties).
- `insertion`: binary insertion sort, a full ranking. Inserting into a ranked list of m
  needs at most ⌈log2(m+1)⌉ comparisons, so at most Σ_{m=1}^{N−1} ⌈log2(m+1)⌉ = O(N log N).
- `pointwise`: the baseline the paper compares against: a reward model scores each
  completion once; ranking by score (N scorings, no comparison).

A comparison "is i better than j" counts once whatever the judge does inside (both-order
judging asks the judge twice). A tie (probability exactly 0.5) never displaces: the
incumbent stays best/worst, and an inserted item goes after its equals (stable).

Each algorithm is a generator that yields a pair (i, j) and is sent back P(i better than
j); the driver (`rank_many`) advances many prompts in lockstep so that every judge call
is one batch across prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generator

from robustpo.judges.base import TIE

STRATEGIES = ("tournament", "insertion", "pointwise")

Asker = Generator[tuple[int, int], float, "Ranking"]


@dataclass
class Ranking:
    best: int
    worst: int | None
    order: list[int] | None          # full ranking best -> worst, when the strategy gives one
    comparisons: int                  # distinct pairs judged
    probs: dict[tuple[int, int], float] = field(default_factory=dict)  # (i, j) -> P(i better than j)


def _ask(memo: dict, i: int, j: int):
    """P(i better than j), asking the judge only for a pair not asked yet (in either order)."""
    if (i, j) in memo:
        return memo[(i, j)]
    if (j, i) in memo:
        return 1.0 - memo[(j, i)]
    p = yield (i, j)
    memo[(i, j)] = float(p)
    return float(p)


def tournament(n: int, *, find_worst: bool = True) -> Asker:
    memo: dict = {}
    best = 0
    for k in range(1, n):
        if (yield from _ask(memo, k, best)) > TIE:
            best = k
    worst = None
    if find_worst:
        worst = 0
        for k in range(1, n):
            if (yield from _ask(memo, k, worst)) < TIE:
                worst = k
    return Ranking(best=best, worst=worst, order=None, comparisons=len(memo), probs=memo)


def insertion(n: int) -> Asker:
    memo: dict = {}
    order = [0] if n else []
    for k in range(1, n):
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            if (yield from _ask(memo, k, order[mid])) > TIE:
                hi = mid
            else:
                lo = mid + 1
        order.insert(lo, k)
    return Ranking(best=order[0], worst=order[-1], order=order, comparisons=len(memo), probs=memo)


def insertion_bound(n: int) -> int:
    """Most comparisons binary insertion can need for n items."""
    return sum(math.ceil(math.log2(m + 1)) for m in range(1, n))


def pointwise(scores: list[float]) -> Ranking:
    """Rank by score, highest first; equal scores keep their input order."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return Ranking(best=order[0], worst=order[-1], order=order, comparisons=0)


def run_ranking(n: int, strategy: str, compare: Callable[[int, int], float], *, find_worst: bool = True) -> Ranking:
    """Rank n items with a plain function compare(i, j) -> P(i better than j) (one prompt)."""
    gen = tournament(n, find_worst=find_worst) if strategy == "tournament" else insertion(n)
    try:
        request = next(gen)
        while True:
            request = gen.send(compare(*request))
    except StopIteration as stop:
        return stop.value


def rank_many(sizes: list[int], strategy: str, judge_batch: Callable[[list[tuple[int, int, int]]], list[float]],
              *, find_worst: bool = True) -> list[Ranking]:
    """Rank many item sets at once. `judge_batch([(set, i, j), ...])` answers one pending
    comparison per unfinished set in a single call, so batched judges run full batches."""
    results: list[Ranking | None] = [None] * len(sizes)
    gens: dict[int, Asker] = {}
    pending: dict[int, tuple[int, int]] = {}
    for s, n in enumerate(sizes):
        if n < 2:
            results[s] = Ranking(best=0, worst=0, order=list(range(n)) or None, comparisons=0)
            continue
        gen = tournament(n, find_worst=find_worst) if strategy == "tournament" else insertion(n)
        gens[s] = gen
        pending[s] = next(gen)
    while pending:
        batch = [(s, i, j) for s, (i, j) in pending.items()]
        probs = judge_batch(batch)
        for (s, _, _), p in zip(batch, probs):
            try:
                pending[s] = gens[s].send(p)
            except StopIteration as stop:
                results[s] = stop.value
                del pending[s]
    return results  # type: ignore[return-value]

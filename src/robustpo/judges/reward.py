"""Reward models as pairwise judges: P(a > b) = σ(r(x, a) − r(x, b)) (Bradley–Terry).

`FamilyJudge` wraps any object with `.score(prompts, responses) -> Tensor (N, K)`: r is
the family mean, or one chosen member. `load_judge("reward:PATH")` builds one from
`robustpo.rewards.load_family`, which reads a single reward-model folder
(`AutoModelForSequenceClassification`, num_labels=1: K=1) as well as a family folder, and
scores texts with exactly the tokenization reward training used (string responses end
with EOS, chat prompts go through the chat template, the documented truncation rule), so
a judge never scores text differently from how its reward model was trained.

The judge also exposes `score(prompts, responses) -> list[float]`, which the pointwise
ranking baseline uses, and memoises scores by (prompt, response) so that ranking N
completions scores each one once however many comparisons it enters.
"""

from __future__ import annotations

import math

import torch

from robustpo.judges.base import JudgeError, Verdict, text_hash


def _sigmoid(x: float) -> float:
    # Numerically safe for large |x|.
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class FamilyJudge:
    """A family of K reward models: `family.score(prompts, responses) -> (N, K)`.

    member=None uses the family mean r̄ = mean_k r_k; member=k uses r_k alone.
    """

    def __init__(self, family, *, member: int | None = None, name: str | None = None, kind: str = "family"):
        self.family, self.member = family, member
        base = name or getattr(family, "name", type(family).__name__)
        self.name = f"{kind}:{base}" + ("" if member is None else f"[{member}]")
        self._memo: dict[tuple[str, str], float] = {}

    def _score_uncached(self, prompts: list, responses: list) -> list[float]:
        scores = torch.as_tensor(self.family.score(prompts, responses), dtype=torch.float32)
        if scores.dim() != 2 or scores.shape[0] != len(prompts):
            raise JudgeError(f"{self.name}: score() must return shape (N, K) with N={len(prompts)}, "
                             f"got {tuple(scores.shape)}")
        if self.member is not None:
            if not 0 <= self.member < scores.shape[1]:
                raise JudgeError(f"{self.name}: member {self.member} out of range for K={scores.shape[1]}")
            return scores[:, self.member].tolist()
        return scores.mean(dim=1).tolist()

    def score(self, prompts: list, responses: list) -> list[float]:
        keys = [(text_hash(p), text_hash(r)) for p, r in zip(prompts, responses)]
        # Each distinct text once, even inside a batch: both-order judging sends every text twice.
        first_index: dict[tuple[str, str], int] = {}
        for i, k in enumerate(keys):
            if k not in self._memo:
                first_index.setdefault(k, i)
        if first_index:
            idx = list(first_index.values())
            values = self._score_uncached([prompts[i] for i in idx], [responses[i] for i in idx])
            for k, v in zip(first_index, values):
                self._memo[k] = float(v)
        return [self._memo[k] for k in keys]

    def compare_detailed(self, prompts: list, first: list, second: list) -> list[Verdict]:
        r = self.score(list(prompts) * 2, list(first) + list(second))
        n = len(prompts)
        return [Verdict(_sigmoid(r[i] - r[n + i]), raw={"reward_first": r[i], "reward_second": r[n + i]})
                for i in range(n)]

    def compare(self, prompts: list, first: list, second: list) -> list[float]:
        return [v.prob for v in self.compare_detailed(prompts, first, second)]

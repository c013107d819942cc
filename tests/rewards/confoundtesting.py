"""Synthetic pairs whose labels follow content AND a confound with a known weight."""

import math
import random

from robustpo.rewards.synthetic import _response, gold_reward


def words(text: str) -> int:
    return len(text.split())


def confounded_pairs(n: int, c: float, seed: int) -> list[dict]:
    """Two random reviews per row; P(a ≻ b) = σ(content(a) − content(b) + c·(words(a) − words(b))),
    content = positive − negative words (rewards/synthetic.py). Content and length are
    independent in sign, so the confound is the only reason the labels follow length.
    Each row keeps the generator's true P(chosen ≻ rejected) in meta."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        a, b = _response(rng), _response(rng)
        logit = gold_reward(a) - gold_reward(b) + c * (words(a) - words(b))
        p = 1 / (1 + math.exp(-logit))
        a_wins = rng.random() < p
        w, l = (a, b) if a_wins else (b, a)
        rows.append({"prompt": "Review:", "chosen": w, "rejected": l, "meta": {"p_chosen": p if a_wins else 1 - p}})
    return rows


def content_ordered(rows: list[dict]) -> list[dict]:
    """The rows with unequal content, chosen = the one with more content (length ignored)."""
    out = []
    for r in rows:
        gw, gl = gold_reward(r["chosen"]), gold_reward(r["rejected"])
        if gw != gl:
            out.append(r if gw > gl else {**r, "chosen": r["rejected"], "rejected": r["chosen"]})
    return out

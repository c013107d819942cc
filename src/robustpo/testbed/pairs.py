"""Gold-labelled preference pairs and the length-bias knob ρ.

Labels: each pair (a, b) of reference samples gets one annotation from the gold
Bradley-Terry model, `a` preferred with probability σ(r*(a) − r*(b)) (a single sampled
annotation per pair, the regime in which DPO overfits), or the argmax when labels are
deterministic.

Bias: `biased_subsample` keeps exactly round(ρ·N) pairs in which the longer response was
preferred and N − round(ρ·N) in which the shorter one was, each drawn at random from the
gold-labelled pool (as Fisch et al., arXiv 2405.19316, §6 do on TL;DR). Labels are never
flipped: the bias comes from selection alone, so every kept label is still a genuine gold
annotation, while the data as a whole say "shorter wins" for small ρ. Pairs of equal length
carry no length signal and are left out of biased datasets.
"""

from __future__ import annotations

import numpy as np

from robustpo.errors import RobustpoError
from robustpo.testbed.task import score_response, sigmoid


def label_pair(prompt: str, a: str, b: str, rng: np.random.Generator, *, deterministic: bool = False) -> dict | None:
    """A canonical preference row for (a, b), or None when the pair cannot be a row.

    None for identical or empty responses (training data validation rejects both: a row
    needs two different, non-empty texts) and, with deterministic labels, for gold ties.
    """
    if a == b or not a.strip() or not b.strip():
        return None
    score_a, score_b = score_response(prompt, a), score_response(prompt, b)
    p_a = sigmoid(score_a.reward - score_b.reward)
    if deterministic:
        if score_a.reward == score_b.reward:
            return None
        a_wins = score_a.reward > score_b.reward
    else:
        a_wins = bool(rng.random() < p_a)
    (w, sw), (l, sl) = ((a, score_a), (b, score_b)) if a_wins else ((b, score_b), (a, score_a))
    return {
        "prompt": prompt, "chosen": w, "rejected": l,
        "meta": {
            "gold_chosen": sw.reward, "gold_rejected": sl.reward,
            "p_chosen": p_a if a_wins else 1.0 - p_a,  # gold P(chosen ≻ rejected)
            "len_chosen": sw.length, "len_rejected": sl.length,
            "longer_preferred": None if sw.length == sl.length else sw.length > sl.length,
        },
    }


def label_pairs(prompts: list[str], first: list[str], second: list[str], rng: np.random.Generator, *,
                deterministic: bool = False) -> list[dict]:
    rows = (label_pair(p, a, b, rng, deterministic=deterministic)
            for p, a, b in zip(prompts, first, second, strict=True))
    return [r for r in rows if r is not None]


def longer_preferred_rate(rows: list[dict]) -> float:
    """Fraction of unequal-length pairs whose chosen response is the longer one."""
    flags = [r["meta"]["longer_preferred"] for r in rows if r["meta"]["longer_preferred"] is not None]
    return sum(flags) / len(flags) if flags else float("nan")


def biased_subsample(pool: list[dict], rho: float, size: int, rng: np.random.Generator) -> list[dict]:
    """`size` rows of `pool` of which exactly round(rho·size) have the longer response preferred."""
    if not 0.0 <= rho <= 1.0:
        raise RobustpoError(f"rho must lie in [0, 1], got {rho}")
    longer = [r for r in pool if r["meta"]["longer_preferred"] is True]
    shorter = [r for r in pool if r["meta"]["longer_preferred"] is False]
    n_longer = int(round(rho * size))
    n_shorter = size - n_longer
    if n_longer > len(longer) or n_shorter > len(shorter):
        raise RobustpoError(
            f"the pair pool is too small for rho={rho}, size={size}: it has {len(longer)} longer-preferred "
            f"and {len(shorter)} shorter-preferred pairs, needs {n_longer} and {n_shorter}; "
            "raise pool_factor or lower the dataset size")
    keep = ([longer[i] for i in rng.choice(len(longer), n_longer, replace=False)]
            + [shorter[i] for i in rng.choice(len(shorter), n_shorter, replace=False)])
    return [keep[i] for i in rng.permutation(len(keep))]

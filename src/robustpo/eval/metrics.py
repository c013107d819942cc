"""Small statistics for evaluation: paired wins, bootstrap intervals, standard errors.

Win rates are averaged per prompt first and their 95% intervals come from a percentile
bootstrap over prompts. The bootstrap (rather than a Wilson interval) because a "win" is
not always 0/1: ties count one half, and a judge gives a probability, so the outcomes are
not binomial; resampling prompts also keeps several samples of one prompt together.
"""

from __future__ import annotations

import math

import numpy as np


def paired_wins(policy_scores, reference_scores) -> np.ndarray:
    """1 where the policy's score is higher, 0.5 on a tie, 0 where lower."""
    a, b = np.asarray(policy_scores, float), np.asarray(reference_scores, float)
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def per_prompt_means(values, prompt_index) -> np.ndarray:
    """Mean of `values` within each prompt (clusters), in prompt order."""
    values, prompt_index = np.asarray(values, float), np.asarray(prompt_index)
    ids, inverse = np.unique(prompt_index, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(ids))
    return sums / np.bincount(inverse, minlength=len(ids))


def bootstrap_ci(values, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean of `values` (one value per prompt)."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return [math.nan, math.nan]
    if len(values) == 1:
        return [float(values[0])] * 2
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt n); se is 0 for fewer than 2 values."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return math.nan, math.nan
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), se


def summarize(values, prompt_index=None, *, seed: int = 0, n_resamples: int = 2000) -> dict:
    """{"mean", "se", "ci"} with clusters = prompts (se and ci over per-prompt means)."""
    values = np.asarray(values, float)
    clustered = per_prompt_means(values, prompt_index) if prompt_index is not None else values
    mean, se = mean_se(clustered)
    return {"mean": mean, "se": se, "ci": bootstrap_ci(clustered, seed=seed, n_resamples=n_resamples)}

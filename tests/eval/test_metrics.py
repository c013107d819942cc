"""Win counting, intervals and standard errors, checked by hand and by coverage."""

import numpy as np
import pytest

from robustpo.eval.metrics import bootstrap_ci, mean_se, paired_wins, per_prompt_means, summarize


def test_paired_wins_count_ties_as_half():
    assert paired_wins([1.0, 2.0, 3.0], [0.5, 2.0, 4.0]).tolist() == [1.0, 0.5, 0.0]


def test_mean_se_by_hand():
    """[1, 2, 3, 4]: mean 2.5, sample variance 5/3, se = sqrt(5/3 / 4) = 0.645497."""
    mean, se = mean_se([1, 2, 3, 4])
    assert mean == 2.5 and se == pytest.approx(0.645497, abs=1e-6)


def test_per_prompt_means_cluster_samples():
    assert per_prompt_means([1.0, 0.0, 0.5, 0.5, 1.0], [0, 0, 1, 1, 2]).tolist() == [0.5, 0.5, 1.0]


def test_bootstrap_interval_has_its_nominal_coverage():
    """Over 300 simulated win/loss datasets of 150 prompts with true win rate 0.3, the 95%
    percentile-bootstrap interval should contain 0.3 about 95% of the time; we accept
    [0.90, 0.99] (the binomial 99.9% band of the coverage count is about ±0.04)."""
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(300):
        wins = (rng.random(150) < 0.3).astype(float)
        lo, hi = bootstrap_ci(wins, n_resamples=400, seed=i)
        covered += lo <= 0.3 <= hi
    assert 0.90 <= covered / 300 <= 0.99


def test_summarize_resamples_prompts_not_samples():
    """Two samples per prompt that always agree: the interval must be as wide as for one
    sample per prompt (clusters), not narrower by √2."""
    rng = np.random.default_rng(1)
    per_prompt = (rng.random(100) < 0.5).astype(float)
    doubled = summarize(np.repeat(per_prompt, 2), np.repeat(np.arange(100), 2), seed=3)
    single = summarize(per_prompt, seed=3)
    assert doubled["ci"] == pytest.approx(single["ci"]) and doubled["se"] == pytest.approx(single["se"])

"""Gold labels follow the Bradley-Terry model; the bias sampler realises ρ exactly."""

import math

import numpy as np
import pytest

from robustpo.errors import RobustpoError
from robustpo.testbed import task
from robustpo.testbed.pairs import biased_subsample, label_pair, label_pairs, longer_preferred_rate


def _demo_pairs(n: int, seed: int = 0):
    rng = task.seeded_rng(seed, "pairs-test")
    prompts = task.generate_prompts(n, rng)
    return prompts, [task.demonstration(p, rng) for p in prompts], [task.demonstration(p, rng) for p in prompts]


def test_sampled_labels_follow_sigma_of_gold_difference():
    """Bin pairs by d = r*(a) − r*(b) ≥ 0 (a = the better one); in each bin the fraction of
    pairs labelled "a" must match the bin's mean σ(d) within 3.3 binomial standard errors
    (a ~99.9% interval per bin), and the bins must show the rise of σ itself."""
    prompts, a, b = _demo_pairs(12000)
    rows = label_pairs(prompts, a, b, np.random.default_rng(7))
    d, better_chosen = [], []
    for r in rows:
        diff = r["meta"]["gold_chosen"] - r["meta"]["gold_rejected"]
        d.append(abs(diff))
        better_chosen.append(diff >= 0)
    d, better_chosen = np.array(d), np.array(better_chosen)
    edges = [0.0, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0]
    rates = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (d > lo) & (d <= hi)
        n = in_bin.sum()
        assert n > 300, (lo, hi, n)
        expected = (1 / (1 + np.exp(-d[in_bin]))).mean()
        observed = better_chosen[in_bin].mean()
        se = math.sqrt(expected * (1 - expected) / n)
        assert abs(observed - expected) < 3.3 * se, (lo, hi, observed, expected)
        rates.append(observed)
    assert rates == sorted(rates)  # more decisive gold gaps, more reliable labels


def test_deterministic_labels_always_prefer_the_better_response():
    prompts, a, b = _demo_pairs(2000)
    rows = label_pairs(prompts, a, b, np.random.default_rng(0), deterministic=True)
    assert rows and all(r["meta"]["gold_chosen"] > r["meta"]["gold_rejected"] for r in rows)
    ties = sum(task.gold_reward(p, x) == task.gold_reward(p, y) for p, x, y in zip(prompts, a, b))
    assert len(rows) == len(prompts) - ties


def test_rows_that_training_would_reject_are_never_made():
    rng = np.random.default_rng(0)
    prompt = "document: the apple of river stone a summary:"
    assert label_pair(prompt, "apple", "apple", rng) is None
    assert label_pair(prompt, "", "apple", rng) is None
    row = label_pair(prompt, "apple river", "tiger", rng, deterministic=True)
    assert (row["chosen"], row["rejected"]) == ("apple river", "tiger")
    assert row["meta"]["longer_preferred"] is True
    assert label_pair(prompt, "apple", "tiger", rng, deterministic=True)["meta"]["longer_preferred"] is None


@pytest.mark.parametrize("rho", [0.0, 0.2, 0.35, 0.5, 0.8, 1.0])
def test_bias_sampler_realises_rho_by_selection_only(rho):
    """The realised fraction is round(ρ·N)/N, so within 1/(2N) of ρ (far inside the binomial
    sampling error √(ρ(1−ρ)/N) a Bernoulli sampler would have); every kept row is a pool row
    with its label untouched, and no row is kept twice."""
    prompts, a, b = _demo_pairs(3000)
    pool = label_pairs(prompts, a, b, np.random.default_rng(1))
    size = 500
    data = biased_subsample(pool, rho, size, np.random.default_rng(2))
    assert len(data) == size
    assert abs(longer_preferred_rate(data) - rho) <= 1 / (2 * size)
    by_key = {(r["prompt"], r["chosen"], r["rejected"]) for r in pool}
    keys = [(r["prompt"], r["chosen"], r["rejected"]) for r in data]
    assert set(keys) <= by_key and len(set(keys)) == size
    # The flag agrees with the lengths it summarises.
    assert all(r["meta"]["longer_preferred"] == (r["meta"]["len_chosen"] > r["meta"]["len_rejected"]) for r in data)


def test_bias_sampler_changes_what_the_data_say_about_length_not_the_gold():
    """In the unbiased pool the gold prefers longer slightly (rate > 0.5); at ρ = 0.2 the data
    say "shorter wins", yet each kept label is still a genuine gold annotation: the mean
    gold P(chosen ≻ rejected) stays above 0.5."""
    prompts, a, b = _demo_pairs(3000)
    pool = label_pairs(prompts, a, b, np.random.default_rng(1))
    assert longer_preferred_rate(pool) > 0.52
    data = biased_subsample(pool, 0.2, 500, np.random.default_rng(3))
    assert np.mean([r["meta"]["p_chosen"] for r in data]) > 0.55


def test_bias_sampler_refuses_an_undersized_pool():
    prompts, a, b = _demo_pairs(200)
    pool = label_pairs(prompts, a, b, np.random.default_rng(1))
    with pytest.raises(RobustpoError, match="too small"):
        biased_subsample(pool, 0.0, 190, np.random.default_rng(0))
    with pytest.raises(RobustpoError, match="rho"):
        biased_subsample(pool, 1.5, 10, np.random.default_rng(0))

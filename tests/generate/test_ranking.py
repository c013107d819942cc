"""Iterative pairwise ranking (Chen et al., arXiv 2411.05875): correctness, comparison
counts, and graceful degradation under a noisy judge."""

import random

import pytest

from robustpo.generate.pairs import check_strategy, select_pairs
from robustpo.generate.ranking import Ranking, insertion_bound, rank_many, run_ranking
from robustpo.errors import ConfigError


def kendall_tau(order: list[int], truth: list[int]) -> float:
    """(concordant − discordant) / C(n, 2) between two orderings of the same items."""
    pos = {item: k for k, item in enumerate(truth)}
    n, s = len(order), 0
    for x in range(n):
        for y in range(x + 1, n):
            s += 1 if pos[order[x]] < pos[order[y]] else -1
    return s / (n * (n - 1) / 2)


def oracle(scores):
    return lambda i, j: 1.0 if scores[i] > scores[j] else 0.0


# Hand-computed: Σ_{m=1}^{N-1} ceil(log2(m+1)).
#   N=2: 1;  N=3: 1+2;  N=5: 1+2+2+3;  N=8: 1+2+2+3+3+3+3;  N=16: 1 + 2·2 + 4·3 + 8·4.
HAND_BOUNDS = {2: 1, 3: 3, 5: 8, 8: 17, 16: 49}


@pytest.mark.parametrize("n", sorted(HAND_BOUNDS))
def test_insertion_bound_matches_hand_counts(n):
    assert insertion_bound(n) == HAND_BOUNDS[n]


@pytest.mark.parametrize("n", [2, 3, 5, 8, 16])
def test_deterministic_judge_recovers_the_true_order(n):
    rng = random.Random(n)
    for _ in range(30):
        scores = rng.sample(range(1000), n)
        truth = sorted(range(n), key=lambda i: -scores[i])
        calls = []

        def compare(i, j):
            calls.append((i, j))
            return oracle(scores)(i, j)

        t = run_ranking(n, "tournament", compare)
        assert (t.best, t.worst) == (truth[0], truth[-1])
        # N−1 for the best, N−1 for the worst, the first pair (1 vs 0) shared: 2N − 3.
        assert t.comparisons == len(calls) == 2 * n - 3
        calls.clear()
        assert run_ranking(n, "tournament", compare, find_worst=False).comparisons == len(calls) == n - 1
        calls.clear()
        ins = run_ranking(n, "insertion", compare)
        assert ins.order == truth
        assert n - 1 <= ins.comparisons == len(calls) <= HAND_BOUNDS[n]
        assert len(set(calls)) == len(calls)  # no pair asked twice


def test_insertion_reaches_its_bound_on_some_input():
    # For N=3 the bound 3 is reached when the third item lands between the first two.
    assert run_ranking(3, "insertion", oracle([3, 1, 2])).comparisons == 3


def test_ties_never_displace():
    tie = lambda i, j: 0.5  # noqa: E731
    t = run_ranking(4, "tournament", tie)
    assert (t.best, t.worst) == (0, 0)  # so best_worst yields no pair
    assert select_pairs(t, 4, "best_worst") == []
    assert run_ranking(4, "insertion", tie).order == [0, 1, 2, 3]  # stable


def test_rank_many_batches_one_request_per_set_and_matches_single_runs():
    rng = random.Random(0)
    sets = [rng.sample(range(100), n) for n in (1, 2, 5, 7, 3)]
    batch_sizes = []

    def judge_batch(batch):
        assert len({s for s, _, _ in batch}) == len(batch)  # one pending comparison per set
        batch_sizes.append(len(batch))
        return [oracle(sets[s])(i, j) for s, i, j in batch]

    for strategy in ("tournament", "insertion"):
        batch_sizes.clear()
        got = rank_many([len(s) for s in sets], strategy, judge_batch)
        for res, scores in zip(got, sets):
            single = run_ranking(len(scores), strategy, oracle(scores)) if len(scores) > 1 else None
            if single:
                assert (res.best, res.worst, res.order, res.comparisons) == (
                    single.best, single.worst, single.order, single.comparisons)
        assert batch_sizes[0] == 4  # the 1-item set needs no comparison


def flipping_judge(scores, rate, rng):
    return lambda i, j: (1.0 - oracle(scores)(i, j)) if rng.random() < rate else oracle(scores)(i, j)


def test_noisy_judge_degrades_gracefully():
    """Mean Kendall's tau of the insertion ranking, and how often the tournament finds the
    true best, over 300 random orders of 10 items for each flip rate. Must hold: exact at
    rate 0; both decrease as the rate grows; at rate 0.5 every verdict is a fair coin
    independent of the truth, so E[tau] = 0 (sd of the mean ≈ 0.25/√300 ≈ 0.014) and the
    best is found about 1 time in 10."""
    rng = random.Random(1234)
    n, trials, rates = 10, 300, [0.0, 0.1, 0.2, 0.3, 0.5]
    mean_tau, best_rate = [], []
    for rate in rates:
        taus, hits = [], 0
        for _ in range(trials):
            scores = rng.sample(range(1000), n)
            truth = sorted(range(n), key=lambda i: -scores[i])
            taus.append(kendall_tau(run_ranking(n, "insertion", flipping_judge(scores, rate, rng)).order, truth))
            hits += run_ranking(n, "tournament", flipping_judge(scores, rate, rng)).best == truth[0]
            if rate == 0:
                assert taus[-1] == 1.0
        mean_tau.append(sum(taus) / trials)
        best_rate.append(hits / trials)
    print("flip rate -> mean tau:", dict(zip(rates, [round(t, 3) for t in mean_tau])))
    print("flip rate -> tournament best found:", dict(zip(rates, [round(b, 3) for b in best_rate])))
    assert mean_tau[0] == 1.0 and best_rate[0] == 1.0
    assert all(a > b for a, b in zip(mean_tau, mean_tau[1:]))
    assert all(a > b for a, b in zip(best_rate, best_rate[1:]))
    assert abs(mean_tau[-1]) < 0.07
    assert abs(best_rate[-1] - 0.1) < 0.07


def test_pair_selection():
    full = Ranking(best=2, worst=0, order=[2, 3, 1, 0], comparisons=5)
    assert select_pairs(full, 4, "best_worst") == [(2, 0)]
    assert select_pairs(full, 4, "best_vs_rest") == [(2, 3), (2, 1), (2, 0)]
    assert select_pairs(full, 4, "adjacent") == [(2, 3), (3, 1), (1, 0)]
    best_only = Ranking(best=1, worst=None, order=None, comparisons=3)
    assert select_pairs(best_only, 4, "best_vs_rest") == [(1, 0), (1, 2), (1, 3)]
    with pytest.raises(ConfigError, match="full ranking"):
        check_strategy("tournament", "adjacent")

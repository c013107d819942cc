"""Bradley–Terry loss and reward-model metrics against values worked out by hand."""

import math

import pytest
import torch

from robustpo.rewards.objective import (bradley_terry_loss, brier_score, disagreement, expected_calibration_error,
                                        pairwise_accuracy, reward_metrics)

t = torch.tensor


def test_bt_plain_values():
    """−log σ(d) = log(1 + e^{−d}): d=1 → log(1 + 1/e) = 0.313262; d=0 → log 2;
    d=−2 → log(1 + e²) = 2.126928."""
    loss, losses = bradley_terry_loss(t([1.0, 0.5, -1.0]), t([0.0, 0.5, 1.0]))
    expected = [0.313262, math.log(2), 2.126928]
    assert losses[:, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(sum(expected) / 3, abs=1e-6)


def test_bt_margin_shifts_the_logistic():
    """Pair (1, 0) with margin m=1: −log σ(1 − 0 − 1) = log 2;
    with m=−1: −log σ(2) = log(1 + e^{−2}) = 0.126928."""
    _, losses = bradley_terry_loss(t([1.0, 1.0]), t([0.0, 0.0]), margin=t([1.0, -1.0]))
    assert losses[:, 0].tolist() == pytest.approx([math.log(2), 0.126928], abs=1e-6)


def test_bt_centering_adds_squared_pair_sum():
    """r_w=1, r_l=−3, c=0.5: log(1 + e^{−4}) + 0.5·(1 − 3)² = 0.018149 + 2 = 2.018149.
    A centred pair (r_w = −r_l) pays no centering: r_w=2, r_l=−2 → log(1 + e^{−4}) only."""
    _, losses = bradley_terry_loss(t([1.0, 2.0]), t([-3.0, -2.0]), center_coef=0.5)
    assert losses[:, 0].tolist() == pytest.approx([2.018149, 0.018149], abs=1e-6)


def test_bt_gradient_only_sees_the_difference_without_centering():
    """dℓ/dr_w = −σ(−d) = −(1 − σ(d)), dℓ/dr_l = +σ(−d); for d=0 both are ∓1/2."""
    rw, rl = t([0.3], requires_grad=True), t([0.3], requires_grad=True)
    bradley_terry_loss(rw, rl)[0].backward()
    assert rw.grad.item() == pytest.approx(-0.5) and rl.grad.item() == pytest.approx(0.5)


def test_bt_multihead_weights():
    """Two pairs, two heads, Δ = 0 on pair 0 and Δ = 1 on pair 1 for both heads (losses log 2 and
    0.313262). Head 0 counts (2, 0): (2·log 2 + 0)/2 = log 2 (a pair drawn 0 times does not count);
    head 1 counts (1, 1): (log 2 + 0.313262)/2. The loss is the mean over heads."""
    rw = t([[0.0, 0.0], [1.0, 1.0]])
    rl = torch.zeros(2, 2)
    loss, losses = bradley_terry_loss(rw, rl, weights=t([[2.0, 1.0], [0.0, 1.0]]))
    head1 = (math.log(2) + 0.313262) / 2
    assert losses.shape == (2, 2)
    assert loss.item() == pytest.approx((math.log(2) + head1) / 2, abs=1e-6)


def test_accuracy_brier_and_ties():
    """Δ = (2, −1, 0, 3): wins 2, tie 1 (counts 1/2) → accuracy (2 + 0.5)/4 = 0.625.
    Brier: (1−σ(2))² = 0.119203² = 0.014209, (1−σ(−1))² = 0.731059² = 0.534447, (1−σ(0))² = 0.25,
    (1−σ(3))² = 0.047426² = 0.002249 → mean 0.200226."""
    d = t([2.0, -1.0, 0.0, 3.0])
    assert pairwise_accuracy(d) == pytest.approx(0.625)
    assert brier_score(d) == pytest.approx(0.200226, abs=1e-5)
    m = reward_metrics(d)
    assert m["mean_margin"] == pytest.approx(1.0) and m["pairs"] == 4


def test_ece_by_hand():
    """Δ = (ln 3, ln 3, −ln 3, ln 9): confidences σ(ln 3) = 0.75 (×3) and σ(ln 9) = 0.9.
    10 bins over [0.5, 1] of width 0.05: 0.75 → bin 5, 0.9 → bin 8.
    bin 5: accuracy 2/3, confidence 0.75 → |−0.083333|·3/4 = 0.0625; bin 8: |1 − 0.9|·1/4 = 0.025.
    ECE = 0.0875."""
    d = t([math.log(3), math.log(3), -math.log(3), math.log(9)])
    assert expected_calibration_error(d, bins=10) == pytest.approx(0.0875, abs=1e-6)


def test_ece_zero_when_confidence_matches_accuracy():
    """4 pairs at confidence 0.75 of which 3 are right: perfectly calibrated."""
    d = t([math.log(3)] * 3 + [-math.log(3)])
    assert expected_calibration_error(d) == pytest.approx(0.0, abs=1e-6)


def test_disagreement_by_hand():
    """3 pairs × 3 members. Pair 0 Δ=(1,1,1): std 0, unanimous. Pair 1 Δ=(1,−1,1): std of (1,−1,1) =
    sqrt(mean((1/3... )²)) = sqrt(8/9) = 0.942809, split. Pair 2 Δ=(−2,−2,−2): std 0, unanimous.
    delta_std = 0.942809/3 = 0.314270; split decisions 1/3; flips: (0,1) 1/3, (0,2) 0, (1,2) 1/3 → 2/9."""
    d = t([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [-2.0, -2.0, -2.0]])
    out = disagreement(d)
    assert out["delta_std"] == pytest.approx(0.314270, abs=1e-6)
    assert out["split_decisions"] == pytest.approx(1 / 3)
    assert out["pairwise_flip_rate"] == pytest.approx(2 / 9)

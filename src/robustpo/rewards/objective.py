"""The Bradley–Terry reward-model objective and the held-out metrics of a reward model.

Bradley–Terry (DESIGN.md "Reward models"): the probability that the chosen response `w`
beats the rejected `l` is σ(r(x,w) − r(x,l)), so a reward model is fitted by

    ℓ = −log σ(r(x,w) − r(x,l) − m)  +  c · (r(x,w) + r(x,l))²

with an optional per-pair margin `m` (a pair labelled "much better" must be separated by at
least m before the loss stops pushing; Llama-2 style) and optional centering `c`: BT only
sees reward differences, so the overall offset of r is free and drifts; the centering term
pins the mean reward of each pair near 0 (as in Eisenstein et al. 2023, "Helping or Herding?").

Metrics take Δ = r(w) − r(l) for N held-out pairs:
- accuracy: fraction with Δ > 0 (a tie counts one half: the model cannot tell);
- mean margin: mean Δ (in reward units; depends on the reward scale);
- Brier score: mean (1 − σ(Δ))², the squared error of the predicted P(w ≻ l) against the
  label (always 1 in this orientation, and the same value in the swapped orientation);
- ECE: top-label expected calibration error with `bins` equal-width bins of the confidence
  σ(|Δ|) ∈ [0.5, 1]: Σ_b (n_b/N) · |accuracy_b − mean confidence_b|.
Disagreement of a family with K members uses Δ of shape (N, K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, *, margin: Tensor | None = None,
                       center_coef: float = 0.0, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bradley–Terry loss for B pairs scored by K heads (K=1 for a single reward model).

    chosen_rewards, rejected_rewards: (B,) or (B, K); margin: (B,) per-pair m, shared by heads;
    weights: (B, K) per-head example weights (bootstrap counts of a multi-head family).
    Returns (loss (), losses (B, K)):
        losses[b, k] = −log σ(r_w − r_l − m_b) + c·(r_w + r_l)²
        loss = mean_k [ Σ_b weights[b, k] · losses[b, k] / B ]   (weights default to 1)
    Dividing by B (not by Σ weights) keeps a bootstrap head's loss an unbiased estimate of
    its resample's loss: the counts average 1 over the data.
    """
    rw, rl = chosen_rewards.float(), rejected_rewards.float()
    if rw.dim() == 1:
        rw, rl = rw[:, None], rl[:, None]                      # (B, 1)
    diff = rw - rl                                             # (B, K)
    if margin is not None:
        diff = diff - margin.float()[:, None]
    losses = -F.logsigmoid(diff)                               # (B, K)
    if center_coef:
        losses = losses + center_coef * (rw + rl) ** 2
    if weights is not None:
        loss = (weights.float() * losses).sum(dim=0).mean() / losses.shape[0]
    else:
        loss = losses.mean()
    return loss, losses


def pairwise_accuracy(delta: Tensor) -> float:
    """Fraction of pairs with Δ > 0; a tie (Δ = 0) counts 1/2."""
    delta = delta.float()
    return ((delta > 0).float() + 0.5 * (delta == 0).float()).mean().item()


def brier_score(delta: Tensor) -> float:
    """mean (1 − σ(Δ))²."""
    return ((1 - torch.sigmoid(delta.float())) ** 2).mean().item()


def expected_calibration_error(delta: Tensor, bins: int = 10) -> float:
    """Top-label ECE over equal-width confidence bins of [0.5, 1] (confidence σ(|Δ|))."""
    delta = delta.float()
    confidence = torch.sigmoid(delta.abs())                               # (N,)
    correct = (delta > 0).float() + 0.5 * (delta == 0).float()            # (N,)
    # Bin b covers [0.5 + b·w, 0.5 + (b+1)·w), the last bin also holds confidence 1.
    which = ((confidence - 0.5) / (0.5 / bins)).floor().clamp(0, bins - 1).long()
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        n = int(in_bin.sum())
        if n:
            ece += n / len(delta) * abs(correct[in_bin].mean().item() - confidence[in_bin].mean().item())
    return ece


def reward_metrics(delta: Tensor, bins: int = 10) -> dict[str, float]:
    """Held-out metrics of one reward model from Δ (N,)."""
    delta = delta.float()
    return {"pairs": int(delta.numel()), "accuracy": pairwise_accuracy(delta), "mean_margin": delta.mean().item(),
            "ece": expected_calibration_error(delta, bins), "brier": brier_score(delta)}


def disagreement(delta: Tensor) -> dict[str, float]:
    """How much K members disagree on N pairs, from Δ (N, K).

    - delta_std: mean over pairs of the (population) standard deviation of Δ across members;
    - split_decisions: fraction of pairs on which the members do not all pick the same winner;
    - pairwise_flip_rate: mean over member pairs (j < k) of the fraction of pairs where j and k
      pick different winners.
    """
    delta = delta.float()
    K = delta.shape[1]
    wins = delta > 0                                                     # (N, K)
    out = {"members": K, "delta_std": delta.std(dim=1, unbiased=False).mean().item(),
           "split_decisions": (wins.any(dim=1) & ~wins.all(dim=1)).float().mean().item()}
    flips = [(wins[:, j] != wins[:, k]).float().mean().item() for j in range(K) for k in range(j + 1, K)]
    out["pairwise_flip_rate"] = sum(flips) / len(flips) if flips else 0.0
    return out


def family_metrics(delta: Tensor, names: list[str], bins: int = 10) -> dict:
    """Per-member metrics, the metrics of the family mean Δ̄ = mean_k Δ_k, and disagreement."""
    return {"members": {n: reward_metrics(delta[:, k], bins) for k, n in enumerate(names)},
            "mean_of_members": reward_metrics(delta.mean(dim=1), bins),
            "disagreement": disagreement(delta)}

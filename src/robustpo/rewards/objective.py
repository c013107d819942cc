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
                       center_coef: float = 0.0, weights: Tensor | None = None,
                       confound_logit: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bradley–Terry loss for B pairs scored by K heads (K=1 for a single reward model).

    chosen_rewards, rejected_rewards: (B,) or (B, K); margin: (B,) per-pair m, shared by heads;
    weights: (B, K) per-head example weights (bootstrap counts of a multi-head family, or the
    importance weights of a `reweight` member); confound_logit: (B, K) the confound expert's
    b_k·(φ(w) − φ(l)), added to the logit (product of experts, train/reward.py).
    Returns (loss (), losses (B, K)):
        losses[b, k] = −log σ(r_w − r_l + b_k·Δφ_b − m_b) + c·(r_w + r_l)²
        loss = mean_k [ Σ_b weights[b, k] · losses[b, k] / B ]   (weights default to 1)
    Dividing by B (not by Σ weights) keeps a bootstrap head's loss an unbiased estimate of
    its resample's loss: the counts average 1 over the data.
    """
    rw, rl = chosen_rewards.float(), rejected_rewards.float()
    if rw.dim() == 1:
        rw, rl = rw[:, None], rl[:, None]                      # (B, 1)
    diff = rw - rl                                             # (B, K)
    if confound_logit is not None:
        diff = diff + confound_logit.float()
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


def decorrelation_penalty(rewards: Tensor, confound: Tensor, eps: float = 1e-8) -> Tensor:
    """mean_k corr(r_k, φ)² over the S responses of a batch (ODIN-style, Chen et al. 2024, arXiv 2402.07319).

    rewards: (S, K) r_θ of every response of the batch (chosen and rejected pooled); confound:
    (S,) their standardised φ. Population moments; `eps` keeps a constant column finite (its
    correlation is then 0). The penalty pushes r_θ to carry no linear trace of φ, so that what
    φ explains in the labels has to go through the confound expert b·Δφ.
    """
    r = rewards.float() - rewards.float().mean(dim=0, keepdim=True)          # (S, K)
    phi = (confound.float() - confound.float().mean())[:, None]              # (S, 1)
    cov = (r * phi).mean(dim=0)                                              # (K,)
    var_r, var_phi = (r ** 2).mean(dim=0), (phi ** 2).mean()                 # (K,), ()
    corr = cov / torch.sqrt(var_r * var_phi + eps)                           # (K,)
    return (corr ** 2).mean()


def fit_logistic(features: Tensor, weights: Tensor | None = None, l2: float = 1e-3, steps: int = 50) -> list[float]:
    """θ maximising Σ_i w_i·log σ(x_i·θ) − (l2/2)·|θ|², by Newton's method (no intercept).

    features: (N, d), one row per training pair, oriented chosen − rejected (the label is
    always "the first wins", so there is no intercept: swapping a pair flips x and the label).
    The reward trainer starts its learned scalars here: the confound expert's b from Δφ alone
    (the bias-only model that product-of-experts debiasing fits first, Clark et al. 2019), and
    the `lm` head's scale jointly with b. A scalar trained with Adam moves about one learning
    rate per step, so from 0 (or 1) it would not get far in a short reward-model run. The small
    `l2` keeps θ finite when the data are separable (every pair favours the confound).
    """
    x = features.double()
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.double()
    theta = torch.zeros(x.shape[1], dtype=torch.float64)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(x @ theta)                                       # (N,)
        grad = x.T @ (w * (1 - p)) - l2 * theta                           # (d,)
        hess = -(x.T * (w * p * (1 - p))) @ x - l2 * eye                   # (d, d)
        step = torch.linalg.solve(hess, grad)
        theta = theta - step
        if step.abs().max() < 1e-10:
            break
    return theta.tolist()


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two (N,) tensors (0 when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = torch.sqrt((x ** 2).sum() * (y ** 2).sum())
    return (x * y).sum().item() / denom.item() if denom.item() > 0 else 0.0


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


def reward_metrics(delta: Tensor, bins: int = 10, confound_delta: Tensor | None = None) -> dict[str, float]:
    """Held-out metrics of one reward model from Δ (N,); with Δφ (N,), also corr(Δr, Δφ):
    how much of the member's margin the confound explains (its square is the share of the
    margin's variance a linear function of Δφ accounts for)."""
    delta = delta.float()
    out = {"pairs": int(delta.numel()), "accuracy": pairwise_accuracy(delta), "mean_margin": delta.mean().item(),
           "ece": expected_calibration_error(delta, bins), "brier": brier_score(delta)}
    if confound_delta is not None:
        out["confound_corr"] = pearson(delta, confound_delta)
    return out


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


def family_metrics(delta: Tensor, names: list[str], bins: int = 10, confound_delta: Tensor | None = None) -> dict:
    """Per-member metrics, the metrics of the family mean Δ̄ = mean_k Δ_k, and disagreement.
    delta: (N, K); confound_delta: (N,) Δφ = φ(w) − φ(l), when a confound is named."""
    return {"members": {n: reward_metrics(delta[:, k], bins, confound_delta) for k, n in enumerate(names)},
            "mean_of_members": reward_metrics(delta.mean(dim=1), bins, confound_delta),
            "disagreement": disagreement(delta)}

"""The objective catalogue of DESIGN.md: pure functions (their registry, LOSSES, is loss_spec.py).

Every function takes the four sequence log-prob tensors, each (B,) and summed over
response tokens, positionally (the reference pair is None for a spec with
`needs_reference=False`):

    fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
       *, <inputs the spec asks for>, <hyperparameters>) -> LossOutput

Notation: Δ(y) = logp_θ(y) − logp_ref(y), h = Δ(w) − Δ(l), implicit reward β·Δ(y).
Inputs beyond the log-probs are keyword-only and requested through the spec:
`chosen_rewards` / `rejected_rewards` (B, K) from a reward-model family,
`chosen_lengths` / `rejected_lengths` (B,) response token counts n(y), and
`kl_policy_logps` / `kl_reference_logps` (B, M) log-probs of extra reference samples.

The training loop reads each objective's `LossSpec` (loss_spec.py) to decide what to compute
and feed; it never branches on a loss name. All maths runs in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from robustpo.errors import ConfigError

Tensor = torch.Tensor


@dataclass
class LossOutput:
    loss: Tensor                            # () scalar to backpropagate
    losses: Tensor | None = None            # (B,) per-example terms when the objective decomposes
    chosen_rewards: Tensor | None = None    # (B,) detached β·Δ(w)
    rejected_rewards: Tensor | None = None  # (B,) detached β·Δ(l)
    metrics: dict[str, float] = field(default_factory=dict)


def _f32(*xs):
    return [x.float() if x is not None else None for x in xs]


def _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
    """(Δ(w), Δ(l)) = (logp_θ(w) − logp_ref(w), logp_θ(l) − logp_ref(l)), in float32."""
    policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps = _f32(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    return policy_chosen_logps - reference_chosen_logps, policy_rejected_logps - reference_rejected_logps  # (B,), (B,)


def _pair_output(losses: Tensor, scale: float, dw: Tensor, dl: Tensor, **metrics) -> LossOutput:
    return LossOutput(loss=losses.mean(), losses=losses, chosen_rewards=(scale * dw).detach(),
                      rejected_rewards=(scale * dl).detach(), metrics=metrics)


def kl_hat(dw: Tensor, dl: Tensor, kl_policy_logps: Tensor | None = None,
           kl_reference_logps: Tensor | None = None) -> Tensor:
    """Forward-KL estimate KL(π_ref ‖ π_θ) = E_{y~π_ref}[−Δ(y)].

    Offline, the dataset's chosen and rejected responses are treated as samples of the
    reference policy (Fisch et al. 2024, §4), so KL̂ = mean_b −(Δ(w_b) + Δ(l_b))/2. That is
    only as good as the assumption; when the data carry true reference samples
    (`kl_policy_logps`, `kl_reference_logps`, each (B, M)), they are used instead.
    """
    if kl_policy_logps is not None and kl_reference_logps is not None:
        kp, kr = _f32(kl_policy_logps, kl_reference_logps)
        return -(kp - kr).mean()
    return -(dw + dl).mean() / 2


# --------------------------------------------------------------------------- DPO family


def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        *, beta: float = 0.1) -> LossOutput:
    """DPO (Rafailov et al. 2023, eq. 7): −log σ(β h)."""
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    h = dw - dl                                              # (B,)
    return _pair_output(-F.logsigmoid(beta * h), beta, dw, dl)


def cdpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
         *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """Conservative DPO (Mitchell 2023): −(1−ε) log σ(βh) − ε log σ(−βh)."""
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    z = beta * (dw - dl)                                     # (B,)
    eps = label_smoothing
    return _pair_output(-(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z), beta, dw, dl)


def rdpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
         *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """Robust DPO (Chowdhury et al. 2024, eq. 9), unbiased under label-flip rate ε < 0.5:
    [−(1−ε) log σ(βh) + ε log σ(−βh)] / (1−2ε)."""
    if not 0 <= label_smoothing < 0.5:
        raise ConfigError(f"rdpo: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    z = beta * (dw - dl)                                     # (B,)
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    return _pair_output(losses, beta, dw, dl)


def ipo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        *, chosen_lengths=None, rejected_lengths=None, tau: float = 0.1,
        length_normalize: bool = False) -> LossOutput:
    """IPO (Azar et al. 2023, eq. 17): (h − 1/(2τ))².

    `length_normalize` replaces each Δ by its per-token mean Δ/n, as TRL's `ipo` does. τ also
    scales the reported implicit rewards (it plays β's role).
    """
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    if length_normalize:
        if chosen_lengths is None or rejected_lengths is None:
            raise ConfigError("ipo: length_normalize needs chosen_lengths and rejected_lengths")
        dw = dw / chosen_lengths.float().clamp(min=1)
        dl = dl / rejected_lengths.float().clamp(min=1)
    return _pair_output((dw - dl - 1 / (2 * tau)) ** 2, tau, dw, dl)


def hinge(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
          *, beta: float = 0.1) -> LossOutput:
    """SLiC-HF hinge (Zhao et al. 2023) on the DPO log-ratio: max(0, 1 − βh)."""
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    return _pair_output(torch.relu(1 - beta * (dw - dl)), beta, dw, dl)


def minor_dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
              *, beta: float = 0.1) -> LossOutput:
    """MinorDPO (Xie et al. 2024, arXiv 2408.09834): −log σ(β(Δ(w) − max(0, Δ(l)))).

    The rejected response is pushed down only while it is still above the reference, so
    the loss cannot be lowered forever by collapsing the rejected (and, with it, the chosen)
    likelihood.
    """
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    losses = -F.logsigmoid(beta * (dw - torch.clamp(dl, min=0)))
    return _pair_output(losses, beta, dw, dl, **{"minor/rejected_below_ref": (dl < 0).float().mean().item()})


def dpop(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
         *, beta: float = 0.1, dpop_lambda: float = 50.0) -> LossOutput:
    """DPOP / Smaug (Pal et al. 2024, eq. 3): −log σ(β(h − λ·max(0, −Δ(w))))."""
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    penalty = torch.clamp(-dw, min=0)                        # (B,) nats the chosen lost
    losses = -F.logsigmoid(beta * (dw - dl - dpop_lambda * penalty))
    return _pair_output(losses, beta, dw, dl, **{"dpop/penalty": penalty.mean().item()})


def length_dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
               *, chosen_lengths, rejected_lengths, beta: float = 0.1,
               alpha: float = 0.01) -> LossOutput:
    """R-DPO, length-regularized DPO (Park et al. 2024, arXiv 2403.19159; not `rdpo`):
    −log σ(βh + α·(n(w) − n(l))).

    Maximizing E_π[r − α·n(y)] − β·KL(π‖π_ref) gives r = β·Δ(y) + α·n(y) + const, so the
    Bradley–Terry likelihood of a pair is σ(βh + α·(n(w) − n(l))): the length term explains
    the part of a preference that length can, and the policy's margin is not pushed to learn
    it. This is the paper's sign (its loss adds α(|y_w| − |y_l|) inside the log-sigmoid);
    DESIGN.md and issue 10 wrote −α, the same family with α negated. α > 0 counters a
    longer-wins bias (the usual one); α < 0 a shorter-wins bias, like the testbed's ρ < 0.5
    sets, so α may take either sign. α = 0.01, the low end of the α ≈ 0.01–0.05 used with
    β = 0.1, a conservative start: a 10-token gap then moves the logit as much as h = 1 nat does.
    """
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    gap = chosen_lengths.float() - rejected_lengths.float()      # (B,) n(w) − n(l)
    return _pair_output(-F.logsigmoid(beta * (dw - dl) + alpha * gap), beta, dw, dl)


# ----------------------------------------------------------------------- reference-free


def simpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps=None, reference_rejected_logps=None,
          *, chosen_lengths, rejected_lengths, beta: float = 2.0, target_margin: float = 0.5) -> LossOutput:
    """SimPO (Meng et al. 2024, arXiv 2405.14734), reference-free:
    −log σ(β·logp_θ(w)/n(w) − β·logp_θ(l)/n(l) − γ_m).

    The implicit reward is the length-normalized likelihood β·logp_θ(y)/n(y) (reported as the
    chosen/rejected rewards); the chosen must beat the rejected by the target margin γ_m
    (`target_margin`). The reference log-probs are ignored: the spec needs no reference, and
    none is loaded. TRL's `CPOTrainer(loss_type="simpo", cpo_alpha=0)` with `simpo_gamma` = γ_m is the same
    loss. β = 2.0 is the low end of the β the paper's setups use (2 to 10); γ_m = 0.5 is
    TRL's `simpo_gamma` default.
    """
    policy_chosen_logps, policy_rejected_logps = _f32(policy_chosen_logps, policy_rejected_logps)
    chosen = beta * policy_chosen_logps / chosen_lengths.float().clamp(min=1)         # (B,)
    rejected = beta * policy_rejected_logps / rejected_lengths.float().clamp(min=1)   # (B,)
    losses = -F.logsigmoid(chosen - rejected - target_margin)
    return LossOutput(loss=losses.mean(), losses=losses, chosen_rewards=chosen.detach(),
                      rejected_rewards=rejected.detach())


# ------------------------------------------------------------------------ distillation


def _reward_margins(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """(B, K) rewards of each member -> (B, K) margins Δr_k."""
    cr, rr_ = _f32(chosen_rewards, rejected_rewards)
    if cr.dim() == 1:
        cr, rr_ = cr[:, None], rr_[:, None]
    return cr - rr_


def _ensemble_metrics(margins: Tensor) -> dict[str, float]:
    if margins.shape[1] < 2:
        return {}
    return {"ensemble/disagreement": margins.std(dim=1).mean().item()}


def distill(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
            *, chosen_rewards, rejected_rewards, beta: float = 0.1) -> LossOutput:
    """Reward-model distillation, d-DPO (Fisch et al. 2024, eq. 7): (βh − Δr)².

    Δr is the reward margin of one reward model, or the family mean when K > 1. The policy's
    implicit reward margin is regressed onto it, so the optimum is bounded (no run-off to
    infinity on pairs with a single annotation).
    """
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    margins = _reward_margins(chosen_rewards, rejected_rewards)   # (B, K)
    losses = (beta * (dw - dl) - margins.mean(dim=1)) ** 2        # (B,)
    return _pair_output(losses, beta, dw, dl, **_ensemble_metrics(margins))


def distill_soft(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                 *, chosen_rewards, rejected_rewards, beta: float = 0.1,
                 temperature: float = 1.0) -> LossOutput:
    """Soft-label distillation: −[p log σ(βh) + (1−p) log σ(−βh)], p = σ(Δr / T).

    Cross-entropy against the preference probability the reward model (family mean) induces.
    """
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    margins = _reward_margins(chosen_rewards, rejected_rewards)   # (B, K)
    p = torch.sigmoid(margins.mean(dim=1) / temperature)          # (B,)
    z = beta * (dw - dl)                                          # (B,)
    losses = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))
    return _pair_output(losses, beta, dw, dl, **_ensemble_metrics(margins))


def e_dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
          *, chosen_rewards, rejected_rewards, kl_policy_logps=None,
          kl_reference_logps=None, beta: float = 0.1, gamma: float = 0.1,
          ensemble_reduce: str = "batch_min") -> LossOutput:
    """Pessimistic ensemble distillation, e-DPO (Fisch et al. 2024, eq. 11). Batch objective.

        min_k mean_b (β h_b − Δr_{k,b})² + γ·KL̂

    The max-min policy over a reward family is the optimum of the member whose π*_r lies
    closest to π_ref; distilling toward the member the policy currently fits best, while
    paying γ·KL(π_ref‖π_θ), is the practical relaxation (see kl_hat for the estimate).
    `ensemble_reduce`: `batch_min` (min over members of the batch mean, the paper's form),
    `example_min` (min per example, then mean), `mean` (no pessimism: average member loss).
    """
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    margins = _reward_margins(chosen_rewards, rejected_rewards)   # (B, K)
    sq = (beta * (dw - dl)[:, None] - margins) ** 2               # (B, K)
    per_member = sq.mean(dim=0)                                   # (K,)
    if ensemble_reduce == "batch_min":
        distill_term = per_member.min()
    elif ensemble_reduce == "example_min":
        distill_term = sq.min(dim=1).values.mean()
    elif ensemble_reduce == "mean":
        distill_term = per_member.mean()
    else:
        raise ConfigError(f"e_dpo: ensemble_reduce must be batch_min, example_min or mean, got '{ensemble_reduce}'")
    kl = kl_hat(dw, dl, kl_policy_logps, kl_reference_logps)
    metrics = {"e_dpo/member": float(per_member.argmin().item()), "e_dpo/kl_hat": kl.item(),
               **_ensemble_metrics(margins)}
    return LossOutput(loss=distill_term + gamma * kl, losses=None, chosen_rewards=(beta * dw).detach(),
                      rejected_rewards=(beta * dl).detach(), metrics=metrics)


def p_dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
          *, kl_policy_logps=None, kl_reference_logps=None, beta: float = 0.1,
          gamma: float = 0.1) -> LossOutput:
    """Pessimistic DPO, p-DPO (Fisch et al. 2024, §4): dpo + γ·KL̂."""
    base = dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta=beta)
    dw, dl = _log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    kl = kl_hat(dw, dl, kl_policy_logps, kl_reference_logps)
    # losses=None: the KL term is a batch quantity, so the sum no longer decomposes per example
    return LossOutput(loss=base.loss + gamma * kl, losses=None, chosen_rewards=base.chosen_rewards,
                      rejected_rewards=base.rejected_rewards, metrics={**base.metrics, "p_dpo/kl_hat": kl.item()})


# ------------------------------------------------------------------------ regularizers


def nll(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        *, chosen_lengths, weight: float = 1.0) -> LossOutput:
    """RPO / SFT term (Pang et al. 2024; Liu et al. 2024): α · (−logp_θ(w) / n(w))."""
    (policy_chosen_logps,) = _f32(policy_chosen_logps)
    per_token = -policy_chosen_logps / chosen_lengths.float().clamp(min=1)        # (B,)
    return LossOutput(loss=weight * per_token.mean(), losses=weight * per_token,
                      metrics={"nll/chosen": per_token.mean().item()})


def bcr(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        *, chosen_lengths, weight: float = 1.0, budget: float = 0.1,
        normalize: bool = True) -> LossOutput:
    """Budget-controlled regularization (Chen et al. 2024, arXiv 2411.05875, §4):
    λ · max(0, (logp_ref(w) − logp_θ(w)) / n(w) − δ).

    The chosen response may lose up to δ nats (per token, or per sequence with
    `normalize: false`) before any penalty: δ=0 forbids any drop, δ→∞ is plain DPO.
    """
    policy_chosen_logps, reference_chosen_logps = _f32(policy_chosen_logps, reference_chosen_logps)
    drop = reference_chosen_logps - policy_chosen_logps          # (B,) nats lost
    if normalize:
        drop = drop / chosen_lengths.float().clamp(min=1)
    losses = weight * torch.clamp(drop - budget, min=0)           # (B,)
    return LossOutput(loss=losses.mean(), losses=losses,
                      metrics={"bcr/over_budget": (drop > budget).float().mean().item()})

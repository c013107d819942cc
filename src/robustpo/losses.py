"""The objective catalogue of DESIGN.md: pure functions plus the LOSSES registry.

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

The training loop reads `LossSpec` to decide what to compute and feed; it never branches on
a loss name. Each spec also declares its hyperparameters' allowed values (`Param`): their
types come from the function's defaults, and `LossSpec.resolve` coerces and checks a
recipe's values when it loads. All maths runs in float32.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from robustpo.errors import ConfigError, NonFiniteError
from robustpo.params import Param  # noqa: F401  (the allowed values of a hyperparameter)

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


# ---------------------------------------------------------------------------- registry


INPUTS = {"chosen_rewards", "rejected_rewards", "chosen_lengths", "rejected_lengths", "kl_policy_logps",
          "kl_reference_logps"}


POSITIVE, NON_NEGATIVE, ANY = Param(low=0, open_low=True), Param(low=0), Param()


def _coerce_like(value, default):
    """`value` as the type of `default`, or None: YAML 1.1 reads `1e-1` as a string, and an int
    stands for a float; bools stay bools (True is not 1.0) and numbers must be finite."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else None


TYPE_NAMES = {bool: "true or false", float: "a finite number", int: "an integer", str: "a string"}


@dataclass(frozen=True)
class LossSpec:
    """What the training loop must compute and feed for a loss (it never reads `name`), and
    the allowed values of its hyperparameters (`hparams`: name -> Param)."""

    name: str
    fn: Callable[..., LossOutput]
    kind: str = "objective"            # "objective" or "regularizer"
    needs_reference: bool = True       # reference log-probs (cached or on the fly)
    needs_rewards: bool = False        # chosen_rewards / rejected_rewards columns, (B, K)
    min_members: int = 0               # smallest K the objective makes sense with
    needs_lengths: bool = False        # chosen_lengths / rejected_lengths
    uses_reference_samples: bool = False  # accepts kl_policy_logps / kl_reference_logps
    batch_level: bool = False          # does not decompose into per-example terms (`losses` is None)
    summary: str = ""
    hparams: dict[str, Param] = field(default_factory=dict, hash=False)
    # The loss as one line of math in the notation of DESIGN.md (model cards print it; the
    # code is the authority where the two differ, as length_dpo's sign of α documents).
    formula: str = ""

    def __post_init__(self):
        # The declarations must match the function, so that the loop can trust them.
        accepted = inspect.signature(self.fn).parameters
        for flag, arg in [("needs_rewards", "chosen_rewards"), ("needs_lengths", "chosen_lengths"),
                          ("uses_reference_samples", "kl_policy_logps")]:
            if getattr(self, flag) != (arg in accepted):
                raise TypeError(f"LossSpec '{self.name}': {flag}={getattr(self, flag)} but {self.fn.__name__} "
                                f"{'takes' if arg in accepted else 'does not take'} {arg}")
        for key, default in self.defaults.items():
            if type(default) not in TYPE_NAMES:
                raise TypeError(f"LossSpec '{self.name}': hyperparameter '{key}' needs a bool/int/float/str default")
        if set(self.hparams) - set(self.defaults):
            raise TypeError(f"LossSpec '{self.name}': {sorted(set(self.hparams) - set(self.defaults))} "
                            f"are not hyperparameters of {self.fn.__name__}")

    @property
    def defaults(self) -> dict:
        """Hyperparameters and their defaults, read from the function's signature."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in INPUTS}

    def call(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
             inputs: dict, hparams: dict) -> LossOutput:
        """Call the function with the inputs it accepts (from those the loop computed) and `hparams`.

        Every tensor it is given must be finite: a NaN or ±inf log-prob, reward or length raises
        NonFiniteError naming the input and the batch rows that hold one, instead of a NaN loss."""
        accepted = inspect.signature(self.fn).parameters
        given = {k: v for k, v in inputs.items() if k in accepted}
        check_finite(self, {"policy_chosen_logps": policy_chosen_logps,
                            "policy_rejected_logps": policy_rejected_logps,
                            "reference_chosen_logps": reference_chosen_logps,
                            "reference_rejected_logps": reference_rejected_logps, **given})
        return self.fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                       **given, **hparams)

    def check_hparams(self, hparams: dict) -> None:
        """Raise ConfigError for a hyperparameter this loss does not take, with a suggestion."""
        known = self.defaults
        for key in hparams:
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; it takes: {', '.join(known) or 'none'}"
                raise ConfigError(f"loss '{self.name}' has no hyperparameter '{key}'{hint}")

    def resolve(self, hparams: dict, where: str = "loss") -> dict:
        """Every hyperparameter, in signature order: the given value coerced to its default's
        type (or the default), checked against its `Param`. Errors name `where.key`."""
        try:
            self.check_hparams(hparams)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        out = {}
        for key, default in self.defaults.items():
            raw = hparams.get(key, default)
            value, allowed = _coerce_like(raw, default), self.hparams.get(key)
            if value is None or (allowed is not None and not allowed.allows(value)):
                need = str(allowed) if value is not None or (allowed and allowed.choices) else TYPE_NAMES[type(default)]
                raise ConfigError(f"{where}.{key} must be {need} ({self.kind} '{self.name}'), got {raw!r}")
            out[key] = value
        return out


def check_finite(spec: LossSpec, tensors: dict) -> None:
    """NonFiniteError naming the first input of `spec` holding a NaN or ±inf, and its rows.
    Each tensor is (B,) or (B, ·), rows first."""
    tensors = {k: t for k, t in tensors.items() if isinstance(t, Tensor) and t.is_floating_point()}
    flags = [torch.isfinite(t).all() for t in tensors.values()]
    if len({f.device for f in flags}) > 1:
        flags = [f.cpu() for f in flags]
    if not flags or bool(torch.stack(flags).all()):
        return   # one device sync per call, whatever the number of inputs
    for name, t in tensors.items():
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        bad_rows = (~finite).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist() if t.dim() else [0]
        value = t[~finite].flatten()[0].item()
        what = f"{spec.kind} '{spec.name}' was given non-finite {name} ({value})"
        raise NonFiniteError(f"{what} at batch position{'s' if len(bad_rows) > 1 else ''} "
                             f"{', '.join(map(str, bad_rows))}", positions=tuple(bad_rows), what=what)


BETA = {"beta": POSITIVE}
LOSSES: dict[str, LossSpec] = {s.name: s for s in [
    LossSpec("dpo", dpo, formula="−log σ(β·h)",
             summary="−log σ(βh)", hparams=BETA),
    LossSpec("cdpo", cdpo, formula="−(1−ε)·log σ(β·h) − ε·log σ(−β·h), ε = label_smoothing",
             summary="label-smoothed DPO",
             hparams={**BETA, "label_smoothing": Param(0, 1)}),
    LossSpec("rdpo", rdpo, formula="[−(1−ε)·log σ(β·h) + ε·log σ(−β·h)] / (1−2ε), ε = label_smoothing < 0.5",
             summary="robust DPO, unbiased under label noise ε",
             hparams={**BETA, "label_smoothing": Param(0, 0.5, open_high=True)}),
    LossSpec("ipo", ipo, formula="(h − 1/(2τ))², τ = tau; length_normalize: each Δ(y) replaced by Δ(y)/n(y)",
             needs_lengths=True, summary="(h − 1/(2τ))²", hparams={"tau": POSITIVE}),
    LossSpec("hinge", hinge, formula="max(0, 1 − β·h)",
             summary="max(0, 1 − βh)", hparams=BETA),
    LossSpec("minor_dpo", minor_dpo, formula="−log σ(β·(Δ(w) − max(0, Δ(l))))",
             summary="rejected pushed down only while above the reference", hparams=BETA),
    LossSpec("dpop", dpop, formula="−log σ(β·(h − λ·max(0, −Δ(w)))), λ = dpop_lambda",
             summary="DPO with a penalty when the chosen drops below the reference",
             hparams={**BETA, "dpop_lambda": NON_NEGATIVE}),
    LossSpec("distill", distill, formula="(β·h − Δr)², Δr the reward margin (family mean when K > 1)",
             needs_rewards=True, min_members=1, summary="(βh − Δr)², d-DPO", hparams=BETA),
    LossSpec("distill_soft", distill_soft,
             formula="−[p·log σ(β·h) + (1−p)·log σ(−β·h)], p = σ(Δr / T), T = temperature",
             needs_rewards=True, min_members=1,
             summary="cross-entropy to σ(Δr/T)", hparams={**BETA, "temperature": POSITIVE}),
    LossSpec("e_dpo", e_dpo,
             formula=("min_k mean_b (β·h_b − Δr_{k,b})² + γ·KL̂"
                      " (ensemble_reduce: batch_min; example_min: mean_b min_k; mean: mean_k)"),
             needs_rewards=True, min_members=1, uses_reference_samples=True,
             batch_level=True, summary="pessimistic ensemble distillation + γ·KL̂",
             hparams={**BETA, "gamma": NON_NEGATIVE,
                      "ensemble_reduce": Param(choices=("batch_min", "example_min", "mean"))}),
    LossSpec("p_dpo", p_dpo, formula="−log σ(β·h) + γ·KL̂",
             uses_reference_samples=True, batch_level=True, summary="DPO + γ·KL̂",
             hparams={**BETA, "gamma": NON_NEGATIVE}),
    LossSpec("length_dpo", length_dpo, formula="−log σ(β·h + α·(n(w) − n(l)))",
             needs_lengths=True, summary="R-DPO: −log σ(βh + α·(n(w) − n(l)))",
             hparams={**BETA, "alpha": ANY}),
    LossSpec("simpo", simpo, formula="−log σ(β·logp_θ(w)/n(w) − β·logp_θ(l)/n(l) − γ_m), γ_m = target_margin",
             needs_reference=False, needs_lengths=True,
             summary="reference-free: −log σ(β·logp(w)/n(w) − β·logp(l)/n(l) − γ_m)",
             hparams={**BETA, "target_margin": NON_NEGATIVE}),
    LossSpec("nll", nll, formula="α·(−logp_θ(w) / n(w)), α = weight",
             kind="regularizer", needs_reference=False, needs_lengths=True,
             summary="α · per-token NLL of the chosen", hparams={"weight": NON_NEGATIVE}),
    LossSpec("bcr", bcr,
             formula=("λ·max(0, (logp_ref(w) − logp_θ(w))/n(w) − δ), λ = weight, δ = budget"
                      " (normalize: false drops the /n(w))"),
             kind="regularizer", needs_lengths=True,
             summary="penalty once the chosen loses more than δ nats/token",
             hparams={"weight": NON_NEGATIVE, "budget": NON_NEGATIVE}),
]}


def get_loss(name: str, kind: str | None = None) -> LossSpec:
    """Look up a spec by name; unknown names get a 'did you mean'."""
    names = [n for n, s in LOSSES.items() if kind is None or s.kind == kind]
    if not isinstance(name, str):
        raise ConfigError(f"{kind or 'loss'} name must be a string, got {name!r}")
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; choose from: {', '.join(names)}"
        raise ConfigError(f"unknown {kind or 'loss'} '{name}'{hint}")
    return LOSSES[name]

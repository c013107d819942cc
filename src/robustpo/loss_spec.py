"""The LOSSES registry: what the training loop computes and feeds for each objective of
losses.py, and the allowed values of its hyperparameters.

The training loop reads `LossSpec` to decide what to compute and feed; it never branches on
a loss name. Each spec also declares its hyperparameters' allowed values (`Param`): their
types come from the function's defaults, and `LossSpec.resolve` coerces and checks a
recipe's values when it loads. `robustpo losses` prints this catalogue.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from robustpo.errors import ConfigError, NonFiniteError
from robustpo.losses import (LossOutput, bcr, cdpo, distill, distill_soft, dpo, dpop, e_dpo, hinge, ipo, length_dpo,
                             minor_dpo, nll, p_dpo, rdpo, simpo)
from robustpo.params import Param

Tensor = torch.Tensor


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

"""What the robustness grid trains: methods, reward families, their sweeps, and the run configs.

A *method* is an objective (with regularizers) and, for the distillation objectives, the
reward family whose scores it distills: `distill@span` is d-DPO on the span family's mean,
`e_dpo@reweight` e-DPO over the reweight family's members. Every method has a sweep of
hyperparameters (β, γ, the BCR budget, R-DPO's α, the family's weights or targets) that the
grid scores on the unbiased validation prompts at the first seed; the winner runs at every seed.
"""

from __future__ import annotations

import itertools

from robustpo.testbed import demo

BETAS = (0.03, 0.1, 0.3, 1.0)
GAMMAS = (0.03, 0.1, 0.3)
BUDGETS = (0.0, 0.1, 0.5)
ALPHAS = (-0.05, -0.01, 0.01)           # R-DPO: α < 0 counters the shorter-wins bias of ρ < 0.5
SIMPO_BETAS = (0.5, 1.0, 2.0, 4.0)       # SimPO's β multiplies per-token log-likelihoods: a larger scale
SIMPO_MARGINS = (0.0, 0.5)

BASELINES: dict[str, dict] = {
    "dpo": {"loss": {"name": "dpo"}},
    "ipo": {"loss": {"name": "ipo"}, "strength": "tau"},
    "minor_dpo": {"loss": {"name": "minor_dpo"}},
    "dpo_bcr": {"loss": {"name": "dpo"}, "regularizers": [{"name": "bcr", "weight": 1.0}]},
    "p_dpo": {"loss": {"name": "p_dpo"}},
    "cdpo": {"loss": {"name": "cdpo", "label_smoothing": 0.1}},
    "dpo_nll": {"loss": {"name": "dpo"}, "regularizers": [{"name": "nll", "weight": 1.0}]},
    "length_dpo": {"loss": {"name": "length_dpo"}},
    "simpo": {"loss": {"name": "simpo"}},
}

# Family variants: the construction's own hyperparameters (weights, targets, λ), swept with β/γ.
FAMILY_VARIANTS: dict[str, dict[str, dict]] = {
    "bootstrap": {"": demo.FAMILIES["bootstrap"]},
    # the ablation: the likelihood reward model of the confound-aware families, without the
    # confound (3 bootstrap members), to tell the reward model's share of a gain from the construction's
    "lm_bootstrap": {"": demo.merged(demo.LM_RM, {"reward": {"family": {"size": 3, "mode": "bootstrap"}}})},
    "debiased": {"λ=1": demo.FAMILIES["debiased"],
                 "λ=0": demo.merged(demo.FAMILIES["debiased"], {"reward": {"confound": {"decorrelate": 0.0}}})},
    "span": {"w=0,.5,1": demo.FAMILIES["span"],
             "w=-1,0,1": demo.merged(demo.FAMILIES["span"], {"reward": {"family": {"weights": [-1.0, 0.0, 1.0]}}})},
    "reweight": {"t=.2,.5,.8": demo.FAMILIES["reweight"],
                 "t=.5,.65,.8": demo.merged(demo.FAMILIES["reweight"],
                                            {"reward": {"family": {"targets": [0.5, 0.65, 0.8]}}})},
}
FAMILY_METHODS: dict[str, dict] = {
    f"{obj}@{fam}": {"loss": {"name": obj}, "family": fam}
    for fam in FAMILY_VARIANTS for obj in ("distill", "e_dpo") if not (obj == "e_dpo" and fam == "debiased")
}
METHODS = {**BASELINES, **FAMILY_METHODS}

# The reward-model budget dimension: epochs × backbone width of the debiased reward model
# (distill@debiased); 2 epochs on the 64-wide reference is its recipe in every other cell.
BUDGET_EPOCHS = (1, 2, 4)
BUDGET_WIDTHS = (64, 128)
DEFAULT_EPOCHS = 2


def sweep(method: str, quick: bool) -> list[dict]:
    """Every setting of `method`'s sweep: {"variant": family variant, "loss": {...}, "bcr": {...}}."""
    spec = METHODS[method]
    loss = spec["loss"]["name"]
    if quick:
        betas, gammas, budgets, alphas = (0.1,), (0.1,), (0.1,), (-0.01,)
        simpo = [{"beta": 2.0, "target_margin": 0.5}]
    else:
        betas, gammas, budgets, alphas = BETAS, GAMMAS, BUDGETS, ALPHAS
        simpo = [{"beta": b, "target_margin": m} for b, m in itertools.product(SIMPO_BETAS, SIMPO_MARGINS)]
    if loss == "simpo":
        settings = [{"loss": s} for s in simpo]
    else:
        settings = [{"loss": {spec.get("strength", "beta"): b}} for b in betas]
    if loss in ("e_dpo", "p_dpo"):
        settings = [{"loss": {**s["loss"], "gamma": g}} for s in settings for g in gammas]
    if loss == "length_dpo":
        settings = [{"loss": {**s["loss"], "alpha": a}} for s in settings for a in alphas]
    if any(r["name"] == "bcr" for r in spec.get("regularizers", [])):
        settings = [{**s, "bcr": {"budget": d}} for s in settings for d in budgets]
    variants = list(FAMILY_VARIANTS[spec["family"]]) if "family" in spec else [""]
    return [{"variant": v, **s} for v in (variants[:1] if quick else variants) for s in settings]


def label(setting: dict) -> str:
    parts = [setting["variant"]] if setting.get("variant") else []
    parts += [f"{k}={v:g}" for key in ("loss", "bcr") for k, v in setting.get(key, {}).items()]
    return " ".join(parts)


def method_spec(method: str, setting: dict) -> dict:
    """A demo.METHODS-style entry: the method's loss and regularizers with `setting` applied."""
    spec = METHODS[method]
    regs = [demo.merged(r, setting.get(r["name"], {})) for r in spec.get("regularizers", [])]
    return {"loss": {**spec["loss"], **setting.get("loss", {})}, "regularizers": regs}


def family_recipe(family: str, variant: str, *, epochs: int | None = None) -> dict:
    recipe = FAMILY_VARIANTS[family][variant]
    return demo.merged(recipe, {"train": {"epochs": epochs}}) if epochs else recipe

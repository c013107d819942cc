"""What the robustness grid trains: methods, reward families, their sweeps, and the run configs.

A *method* is an objective (with regularizers) and, for the distillation objectives, the
reward family whose scores it distills: `distill@span` is d-DPO on the span family's mean,
`e_dpo@reweight` e-DPO over the reweight family's members. Every method has a sweep of
hyperparameters (β, γ, the BCR budget, R-DPO's α, the family's weights or targets) that the
grid scores on the unbiased validation prompts at the first seed, in two stages (`sweep`,
then `refine` at the stage-1 winner); the winner runs at every seed.
"""

from __future__ import annotations

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


# The sweep is a coordinate search, the same for every method: stage 1 tries every strength
# (β, τ; SimPO's β) × family variant with the method's second hyperparameter at its middle
# value; stage 2 tries the other values of that second hyperparameter (γ, α, the BCR budget,
# SimPO's margin) at the stage-1 winner. The full product cost a third more runs and did not
# fit the grid in its hour.
SECOND: dict[str, tuple[str, str, tuple, float]] = {   # loss name -> (section, key, values, middle)
    "e_dpo": ("loss", "gamma", GAMMAS, 0.1),
    "p_dpo": ("loss", "gamma", GAMMAS, 0.1),
    "length_dpo": ("loss", "alpha", ALPHAS, -0.01),
    "simpo": ("loss", "target_margin", SIMPO_MARGINS, 0.5),
}


def _second(method: str):
    spec = METHODS[method]
    if any(r["name"] == "bcr" for r in spec.get("regularizers", [])):
        return "bcr", "budget", BUDGETS, 0.1
    return SECOND.get(spec["loss"]["name"])


def sweep(method: str, quick: bool) -> list[dict]:
    """Stage 1 of `method`'s sweep: {"variant": family variant, "loss": {...}, "bcr": {...}} settings."""
    spec = METHODS[method]
    loss = spec["loss"]["name"]
    key = spec.get("strength", "beta")
    strengths = ((2.0 if loss == "simpo" else 0.1),) if quick else (SIMPO_BETAS if loss == "simpo" else BETAS)
    settings = [{"loss": {key: b}} for b in strengths]
    second = _second(method)
    if second:
        section, name, _, middle = second
        settings = [{**st, section: {**st.get(section, {}), name: middle}} for st in settings]
    variants = list(FAMILY_VARIANTS[spec["family"]]) if "family" in spec else [""]
    return [{"variant": v, **st} for v in (variants[:1] if quick else variants) for st in settings]


def refine(method: str, best: dict, quick: bool) -> list[dict]:
    """Stage 2: the second hyperparameter's other values at the stage-1 winner `best` (none when quick)."""
    second = _second(method)
    if quick or not second:
        return []
    section, name, values, middle = second
    return [{**best, section: {**best[section], name: v}} for v in values if v != middle]


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

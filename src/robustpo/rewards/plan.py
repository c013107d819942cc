"""Reward-run configs and the plan of a family: which model is trained on which pairs, how.

Family modes (`reward.family.mode`), each member trained on:
- seed:      all training pairs, its own seed (score-head init and data order);
- bootstrap: N pairs drawn with replacement from the N training pairs (its own draw);
- subsets:   a disjoint 1/K share of the pairs;
- multihead: ONE model, a shared backbone with K score heads (num_labels=K), head k weighting
             each pair by its count in bootstrap draw k (the same draws `bootstrap` makes);
- span:      `size` confound-debiased fits (all pairs for one fit, bootstrap draws for more),
             each giving one member per `weights` entry w: r = r_θ + w·ĉ·φ̃, ĉ the confound's
             effect measured on the training data (`span_scale`: the fitted b̂, or the slope of a
             plain model's Δr on Δφ̃); scoring writes one column per member;
- reweight:  one member per `targets` entry t, trained with per-pair importance weights that
             make the weighted share of confound-favoured pairs (φ(w) > φ(l)) equal t.
`span` and `reweight` need `reward.confound`. A size-1 `seed` family is a single reward model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from robustpo.config import AT_LEAST_1, NON_NEGATIVE, PRECISION, DataConfig, ModelConfig, TrainConfig
from robustpo.errors import ConfigError, DataError
from robustpo.rewards.confound import ConfoundConfig
from robustpo.params import Rule

MODES = ("seed", "bootstrap", "subsets", "multihead", "span", "reweight")
SPAN_SCALES = ("fitted", "slope")


@dataclass
class FamilyConfig:
    size: int = 1
    mode: str = "seed"                  # one of MODES
    weights: list = field(default_factory=lambda: [0.0, 0.5, 1.0])    # span: w_k of r_θ + w_k·ĉ·φ̃
    span_scale: str = "fitted"          # span: ĉ = the fitted b̂ | the slope of a plain model's Δr on Δφ̃
    targets: list = field(default_factory=lambda: [0.2, 0.5, 0.8])    # reweight: confound-favoured shares


KINDS = ("bradley_terry", "pairwise")   # pairwise: P(A ≻ B) from one joint reading (rewards/pairwise.py)


@dataclass
class RewardConfig:
    kind: str = "bradley_terry"          # one of KINDS
    use_margin: bool = False             # subtract each row's `margin` inside the BT logistic
    center_coef: float = 0.0             # c of c·(r(w) + r(l))²
    head: str = "score"                  # score (sequence classification) | lm (scaled log-likelihood)
    pooling: str = "last"                # last | mean | sum over the response (rewards/pooling.py)
    confound: ConfoundConfig | None = None
    scalar_learning_rate: float = 0.02  # of the learned scalars (b, the lm head's scale): see train/reward.py
    heldout: str | None = None           # held-out pairs file; default: a split of data.train
    heldout_fraction: float = 0.1        # share of data.train held out when `heldout` is unset
    family: FamilyConfig = field(default_factory=FamilyConfig)
    eval_batch_size: int = 32
    calibration_bins: int = 10

    ALLOWED: ClassVar[dict] = {"center_coef": NON_NEGATIVE, "eval_batch_size": AT_LEAST_1,
                               "calibration_bins": AT_LEAST_1}


@dataclass
class RewardRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/reward", learning_rate=1e-5))
    reward: RewardConfig = field(default_factory=RewardConfig)

    # data.eval / eval_fraction and train.eval_steps / save_best are the policy trainer's
    # evaluation; a reward run holds out reward.heldout / reward.heldout_fraction instead.
    RULES: ClassVar[tuple] = (PRECISION, *(
        Rule(key, lambda c, key=key: getattr(getattr(c, key.split(".")[0]), key.split(".")[1]) in (None, 0),
             "be unset in a reward recipe (use reward.heldout or reward.heldout_fraction)")
        for key in ("data.eval", "data.eval_fraction", "train.eval_steps", "train.save_best")))


@dataclass
class MemberPlan:
    """One model to train. A span fit yields several members; a multihead model K of them."""

    name: str
    seed: int
    items: list            # tokenized pairs (bootstrap: with repeats; reweight: with `pair_weight`)
    num_labels: int = 1
    data: dict = field(default_factory=dict)
    debias: bool = False   # learn the confound expert b (per head)
    role: str = "member"   # member | span-fit | slope-probe (a plain model that only measures ĉ)


def check_config(cfg: RewardRunConfig) -> None:
    """Every refusal that needs no data, before any model or data work."""
    from robustpo.rewards.confound import check_feature
    from robustpo.rewards.pooling import HEADS, POOLINGS

    fam, r = cfg.reward.family, cfg.reward
    if fam.mode not in MODES:
        raise ConfigError(f"reward.family.mode must be one of {', '.join(MODES)}, got '{fam.mode}'")
    if fam.size < 1:
        raise ConfigError(f"reward.family.size must be at least 1, got {fam.size}")
    if not cfg.data.train:
        raise ConfigError("data.train is required (a file, a saved dataset folder or a hub id)")
    if not 0.0 <= r.heldout_fraction < 1.0:
        raise ConfigError(f"reward.heldout_fraction must lie in [0, 1), got {r.heldout_fraction}")
    if r.kind not in KINDS:
        raise ConfigError(f"reward.kind must be one of {', '.join(KINDS)}, got '{r.kind}'")
    if r.kind == "pairwise":
        if fam.mode not in ("seed", "bootstrap"):
            raise ConfigError(f"reward.kind pairwise trains seed or bootstrap families, got reward.family.mode "
                              f"'{fam.mode}'")
        changed = [k for k, v in (("head", r.head != "score"), ("pooling", r.pooling != "last"),
                                  ("confound", r.confound is not None), ("use_margin", r.use_margin),
                                  ("center_coef", r.center_coef != 0)) if v]
        if changed:
            raise ConfigError(f"reward.kind pairwise reads one score at the end of the joint sequence: "
                              f"reward.{changed[0]} applies to Bradley–Terry models only; leave it unset")
    if r.head not in HEADS:
        raise ConfigError(f"reward.head must be one of {', '.join(HEADS)}, got '{r.head}'")
    if r.pooling not in POOLINGS:
        raise ConfigError(f"reward.pooling must be one of {', '.join(POOLINGS)}, got '{r.pooling}'")
    if not r.scalar_learning_rate > 0:
        raise ConfigError(f"reward.scalar_learning_rate must be > 0, got {r.scalar_learning_rate}")
    if r.head == "lm" and r.pooling == "last":
        raise ConfigError("reward.head lm scores the response's token log-probabilities: reward.pooling must be "
                          "mean or sum")
    if r.head == "lm" and fam.mode == "multihead":
        raise ConfigError("reward.family.mode multihead needs reward.head score (one model with K score heads)")
    if fam.mode in ("span", "reweight") and r.confound is None:
        raise ConfigError(f"reward.family.mode {fam.mode} needs reward.confound (e.g. {{feature: length}})")
    if r.confound is not None:
        check_feature(r.confound.feature)
        if not r.confound.decorrelate >= 0:
            raise ConfigError(f"reward.confound.decorrelate must be ≥ 0, got {r.confound.decorrelate}")
    if fam.mode == "span":
        _check_numbers("reward.family.weights", fam.weights)
        if fam.span_scale not in SPAN_SCALES:
            raise ConfigError(f"reward.family.span_scale must be one of {', '.join(SPAN_SCALES)}, "
                              f"got '{fam.span_scale}'")
        if fam.span_scale == "fitted" and not r.confound.debias:
            raise ConfigError("reward.family.span_scale: fitted scales by the fitted b̂, which needs "
                              "reward.confound.debias: true (or use span_scale: slope)")
        if not r.confound.debias and not r.confound.decorrelate:
            raise ConfigError("reward.family.mode span adds w·ĉ·φ back to a debiased fit: set reward.confound.debias: "
                              "true or reward.confound.decorrelate > 0")
    if fam.mode == "reweight":
        _check_numbers("reward.family.targets", fam.targets)
        bad = [t for t in fam.targets if not 0.0 < t < 1.0]
        if bad:
            raise ConfigError(f"reward.family.targets must lie strictly between 0 and 1, got {bad[0]}")
        if fam.size not in (1, len(fam.targets)):
            raise ConfigError(f"reward.family.size={fam.size}: a reweight family has one member per target "
                              f"({len(fam.targets)}); leave size at 1 or set it to {len(fam.targets)}")


def _check_numbers(where: str, values) -> None:
    if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and np.isfinite(v) for v in values):
        raise ConfigError(f"{where} must be a non-empty list of finite numbers, got {values!r}")


def split_heldout(rows: list, fraction: float, seed: int, key: str = "reward.heldout_fraction") -> tuple[list, list]:
    """(train, held-out): a seeded random `fraction` of the rows held out (at least one if > 0);
    `key` names the setting in the error when no training rows would be left."""
    if fraction <= 0:
        return rows, []
    n_held = max(1, round(fraction * len(rows)))
    if n_held >= len(rows):
        raise ConfigError(f"{key}={fraction} leaves no training pairs out of {len(rows)}")
    perm = np.random.default_rng([seed, 7919]).permutation(len(rows))
    held = set(perm[:n_held].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def bootstrap_counts(n: int, seed: int, member: int) -> np.ndarray:
    """How often each of n pairs appears in bootstrap draw `member` (n draws with replacement)."""
    draw = np.random.default_rng([seed, 104729, member]).integers(0, n, n)
    return np.bincount(draw, minlength=n)


def reweight_weights(favoured: np.ndarray, disfavoured: np.ndarray, target: float) -> np.ndarray:
    """Per-pair importance weights whose weighted share of confound-favoured pairs is `target`.

    favoured, disfavoured: (N,) booleans (φ(w) > φ(l), φ(w) < φ(l)); pairs with φ(w) = φ(l) say
    nothing about the confound and keep weight 1. With F favoured, D disfavoured, U = F + D:
    favoured pairs weigh t·U/F and disfavoured ones (1 − t)·U/D, so the unequal pairs keep their
    total weight U (the loss scale does not change) and Σ_fav w / Σ_unequal w = t exactly.
    """
    n_fav, n_dis = int(favoured.sum()), int(disfavoured.sum())
    weights = np.ones(len(favoured))
    weights[favoured] = target * (n_fav + n_dis) / n_fav
    weights[disfavoured] = (1 - target) * (n_fav + n_dis) / n_dis
    return weights


def plan_members(items: list, cfg: RewardRunConfig, source: str | None = None) -> list[MemberPlan]:
    """The models to train, in order. Items carry `chosen_confound`/`rejected_confound` when a
    confound is named (train/reward.py attaches them)."""
    fam, seed = cfg.reward.family, cfg.train.seed
    K, n = fam.size, len(items)
    debias = cfg.reward.confound is not None and cfg.reward.confound.debias

    def describe(chosen):
        rows = [items[i]["index"] for i in chosen]
        return {"pairs": len(rows), "unique_pairs": len(set(rows))}, rows

    def plan(name, member_seed, chosen, **kw):
        data, rows = describe(chosen)
        return MemberPlan(name, member_seed, [items[i] for i in chosen], data={**data, "rows": rows}, **kw)

    if fam.mode == "multihead":
        counts = np.stack([bootstrap_counts(n, seed, k) for k in range(K)], axis=1)        # (n, K)
        weighted = [{**it, "head_weights": counts[i].tolist()} for i, it in enumerate(items)]
        data = {"pairs": n, "unique_pairs_per_head": [int((counts[:, k] > 0).sum()) for k in range(K)]}
        return [MemberPlan("multihead", seed, weighted, num_labels=K, data=data, debias=debias)]
    if fam.mode == "subsets" and K > n:
        raise ConfigError(f"reward.family.size={K} disjoint subsets need at least {K} training pairs, have {n}")
    if fam.mode == "reweight":
        return _reweight_plans(items, fam.targets, seed, debias, source, describe)
    plans = []
    for k in range(K):
        if fam.mode == "seed" or (fam.mode == "span" and K == 1):
            chosen = list(range(n))
        elif fam.mode in ("bootstrap", "span"):
            chosen = np.repeat(np.arange(n), bootstrap_counts(n, seed, k)).tolist()
        else:
            perm = np.random.default_rng([seed, 15485863]).permutation(n)
            chosen = sorted(np.array_split(perm, K)[k].tolist())
        if fam.mode == "span":
            plans.append(plan(f"fit-{k}", seed + k, chosen, debias=debias, role="span-fit"))
            if fam.span_scale == "slope":
                plans.append(plan(f"plain-{k}", seed + k, chosen, role="slope-probe"))
        else:
            plans.append(plan(f"member-{k}", seed + k, chosen, debias=debias))
    return plans


def _reweight_plans(items, targets, seed, debias, source, describe) -> list[MemberPlan]:
    dphi = np.array([it["chosen_confound"] - it["rejected_confound"] for it in items])
    favoured, disfavoured = dphi > 0, dphi < 0
    if not favoured.any() or not disfavoured.any():
        which = "no" if not favoured.any() else "every"
        raise DataError(f"reweight: {which} training pair with unequal confound has φ(chosen) > φ(rejected), so "
                        "no weighting can set the confound-favoured share; use another family mode", file=source)
    plans = []
    for k, t in enumerate(targets):
        w = reweight_weights(favoured, disfavoured, float(t))
        data, rows = describe(range(len(items)))
        data.update(target=float(t), favoured_pairs=int(favoured.sum()), disfavoured_pairs=int(disfavoured.sum()),
                    weight_favoured=float(w[favoured][0]), weight_disfavoured=float(w[disfavoured][0]))
        plans.append(MemberPlan(f"target-{t:g}", seed + k, [{**it, "pair_weight": float(w[i])}
                                                            for i, it in enumerate(items)],
                                data={**data, "rows": rows}, debias=debias))
    return plans

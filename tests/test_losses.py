"""Objective values against DESIGN.md's formulas, computed independently in scalar `math`.

The shared batch (B = 2), with β = 0.5:
    policy chosen   [-1.0, -2.0]   reference chosen   [-1.5, -1.5]   -> Δ(w) = [ 0.5, -0.5]
    policy rejected [-3.0, -1.0]   reference rejected [-2.0, -2.0]   -> Δ(l) = [-1.0,  1.0]
    h = Δ(w) − Δ(l) = [1.5, -1.5],   βh = [0.75, -0.75]
Hand values used below:
    −log σ(0.75)  = log(1 + e^−0.75) = log(1.472367) = 0.386871
    −log σ(−0.75) = log(1 + e^0.75)  = log(3.117000) = 1.136871
so DPO's mean loss is (0.386871 + 1.136871) / 2 = 0.761871.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from robustpo.config import load_config
from robustpo.errors import ConfigError
from robustpo.loss_spec import LOSSES, LossSpec, get_loss

PC = torch.tensor([-1.0, -2.0])
PR = torch.tensor([-3.0, -1.0])
RC = torch.tensor([-1.5, -1.5])
RR = torch.tensor([-2.0, -2.0])
DW = [0.5, -0.5]
DL = [-1.0, 1.0]
H = [1.5, -1.5]
BETA = 0.5


def softplus(x):
    """−log σ(−x) = log(1 + e^x), written out in scalar maths."""
    return math.log1p(math.exp(x))


def nls(x):
    """−log σ(x)."""
    return softplus(-x)


def mean(xs):
    return sum(xs) / len(xs)


def test_dpo_hand_values():
    out = LOSSES["dpo"].fn(PC, PR, RC, RR, beta=BETA)
    assert out.losses.tolist() == pytest.approx([0.386871, 1.136871], abs=1e-6)
    assert out.loss.item() == pytest.approx(0.761871, abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, -0.25])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])
    assert not out.chosen_rewards.requires_grad


def test_cdpo_and_rdpo():
    """ε = 0.2: cdpo = 0.8·nls(βh) + 0.2·nls(−βh); rdpo = [0.8·nls(βh) − 0.2·nls(−βh)] / 0.6.
    Row 1: cdpo = 0.8·0.386871 + 0.2·1.136871 = 0.536871; rdpo = (0.309497 − 0.227374)/0.6 = 0.136871."""
    eps = 0.2
    c = LOSSES["cdpo"].fn(PC, PR, RC, RR, beta=BETA, label_smoothing=eps)
    r = LOSSES["rdpo"].fn(PC, PR, RC, RR, beta=BETA, label_smoothing=eps)
    want_c = [(1 - eps) * nls(BETA * h) + eps * nls(-BETA * h) for h in H]
    want_r = [((1 - eps) * nls(BETA * h) - eps * nls(-BETA * h)) / (1 - 2 * eps) for h in H]
    assert c.losses.tolist() == pytest.approx(want_c, abs=1e-6)
    assert r.losses.tolist() == pytest.approx(want_r, abs=1e-6)
    assert c.losses[0].item() == pytest.approx(0.536871, abs=1e-6)
    assert r.losses[0].item() == pytest.approx(0.136871, abs=1e-6)
    with pytest.raises(ConfigError):
        LOSSES["rdpo"].fn(PC, PR, RC, RR, label_smoothing=0.5)


def test_cdpo_with_zero_smoothing_is_dpo():
    c = LOSSES["cdpo"].fn(PC, PR, RC, RR, beta=BETA, label_smoothing=0.0)
    d = LOSSES["dpo"].fn(PC, PR, RC, RR, beta=BETA)
    assert torch.allclose(c.losses, d.losses)


def test_ipo_plain_and_length_normalized():
    """τ = 0.25 -> 1/(2τ) = 2. Plain: (1.5 − 2)² = 0.25, (−1.5 − 2)² = 12.25.
    Normalized with n(w) = [2, 4], n(l) = [4, 2]: h = [0.25 + 0.25, −0.125 − 0.5] = [0.5, −0.625]
    -> (0.5 − 2)² = 2.25, (−0.625 − 2)² = 6.890625."""
    plain = LOSSES["ipo"].fn(PC, PR, RC, RR, tau=0.25)
    assert plain.losses.tolist() == pytest.approx([0.25, 12.25])
    norm = LOSSES["ipo"].fn(PC, PR, RC, RR, tau=0.25, length_normalize=True,
                            chosen_lengths=torch.tensor([2, 4]), rejected_lengths=torch.tensor([4, 2]))
    assert norm.losses.tolist() == pytest.approx([2.25, 6.890625])


def test_hinge():
    """max(0, 1 − βh) = [max(0, 0.25), max(0, 1.75)]."""
    out = LOSSES["hinge"].fn(PC, PR, RC, RR, beta=BETA)
    assert out.losses.tolist() == pytest.approx([0.25, 1.75])


def test_minor_dpo_values_and_special_cases():
    """Row 1 has Δ(l) = −1 < 0, so the rejected term is clamped: −log σ(0.5·0.5) = nls(0.25) = 0.575939.
    Row 2 has Δ(l) = 1 ≥ 0: it equals DPO's nls(−0.75) = 1.136871."""
    out = LOSSES["minor_dpo"].fn(PC, PR, RC, RR, beta=BETA)
    assert out.losses.tolist() == pytest.approx([0.575939, 1.136871], abs=1e-6)

    # Equals DPO when every Δ(l) ≥ 0.
    pr_up = torch.tensor([-1.0, -1.0])  # Δ(l) = [1, 1]
    assert torch.allclose(LOSSES["minor_dpo"].fn(PC, pr_up, RC, RR, beta=BETA).losses,
                          LOSSES["dpo"].fn(PC, pr_up, RC, RR, beta=BETA).losses)

    # No gradient through the rejected log-prob where Δ(l) < 0.
    pr = PR.clone().requires_grad_(True)
    LOSSES["minor_dpo"].fn(PC, pr, RC, RR, beta=BETA).loss.backward()
    assert pr.grad[0].item() == 0.0
    assert pr.grad[1].item() != 0.0


def test_dpop():
    """λ = 2: the penalty is max(0, −Δ(w)) = [0, 0.5]. Row 1 = DPO's 0.386871;
    row 2: −log σ(0.5·(−1.5 − 2·0.5)) = nls(−1.25) = 1.501929."""
    out = LOSSES["dpop"].fn(PC, PR, RC, RR, beta=BETA, dpop_lambda=2.0)
    assert out.losses.tolist() == pytest.approx([0.386871, 1.501929], abs=1e-6)


NW, NL = torch.tensor([2, 4]), torch.tensor([4, 2])   # n(w), n(l) for the shared batch


def test_length_dpo_hand_values():
    """β = 0.5, α = 0.1, n(w) − n(l) = [−2, 2]: logits βh + α·gap = [0.75 − 0.2, −0.75 + 0.2]
    = [0.55, −0.55]. −log σ(0.55) = log(1 + e^−0.55) = log(1.576950) = 0.455492;
    −log σ(−0.55) = log(1 + e^0.55) = log(2.733253) = 1.005492 (they differ by 0.55, as softplus
    does). Rewards are DPO's β·Δ; α = 0 is DPO."""
    out = LOSSES["length_dpo"].fn(PC, PR, RC, RR, chosen_lengths=NW, rejected_lengths=NL, beta=BETA, alpha=0.1)
    assert out.losses.tolist() == pytest.approx([0.455492, 1.005492], abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, -0.25])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])
    zero = LOSSES["length_dpo"].fn(PC, PR, RC, RR, chosen_lengths=NW, rejected_lengths=NL, beta=BETA, alpha=0.0)
    assert zero.loss.item() == pytest.approx(0.761871, abs=1e-6)


def test_simpo_hand_values_and_no_reference():
    """β = 2, γ_m = 0.5. Per-token log-probs: w = [−1/2, −2/4] = [−0.5, −0.5],
    l = [−3/4, −1/2] = [−0.75, −0.5]; rewards β·logp/n: chosen [−1, −1], rejected [−1.5, −1].
    Logits: [−1 + 1.5 − 0.5, −1 + 1 − 0.5] = [0, −0.5] -> losses [log 2, log(1 + e^0.5)]
    = [0.693147, 0.974077], mean 0.833612. The reference log-probs are not read: None, or any
    values, give the same."""
    f = LOSSES["simpo"].fn
    out = f(PC, PR, None, None, chosen_lengths=NW, rejected_lengths=NL, beta=2.0, target_margin=0.5)
    assert out.losses.tolist() == pytest.approx([0.693147, 0.974077], abs=1e-6)
    assert out.loss.item() == pytest.approx(0.833612, abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([-1.0, -1.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-1.5, -1.0])
    with_ref = f(PC, PR, RC + 7, RR - 3, chosen_lengths=NW, rejected_lengths=NL, beta=2.0, target_margin=0.5)
    assert torch.equal(with_ref.losses, out.losses)
    assert not LOSSES["simpo"].needs_reference and LOSSES["simpo"].needs_lengths


def rewards(margins_per_member):
    """(B, K) rewards whose margins are the given ones (rejected rewards all zero)."""
    c = torch.tensor(margins_per_member, dtype=torch.float32)
    return c, torch.zeros_like(c)


def test_distill_values_and_zero_exactly_at_target():
    """Family mean margins [0.5, 0.0]: (0.75 − 0.5)² = 0.0625, (−0.75 − 0)² = 0.5625."""
    cr, rr = rewards([[0.4, 0.6], [-0.5, 0.5]])
    out = LOSSES["distill"].fn(PC, PR, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA)
    assert out.losses.tolist() == pytest.approx([0.0625, 0.5625])
    # Zero exactly when βh = Δr.
    cr, rr = rewards([[0.75], [-0.75]])
    assert LOSSES["distill"].fn(PC, PR, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA).loss.item() == 0.0


def test_distill_soft():
    """T = 2, Δr = [2, −2] -> p = σ(1) = 0.731059, σ(−1) = 0.268941.
    loss_b = p·nls(βh) + (1−p)·nls(−βh)."""
    cr, rr = rewards([[2.0], [-2.0]])
    out = LOSSES["distill_soft"].fn(PC, PR, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA,
                                    temperature=2.0)
    p = [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))]
    want = [pb * nls(BETA * h) + (1 - pb) * nls(-BETA * h) for pb, h in zip(p, H)]
    assert out.losses.tolist() == pytest.approx(want, abs=1e-6)


def test_e_dpo_reductions_and_kl():
    """Members' margins: k=0: [0.75, 0.0], k=1: [0.0, −0.75]. βh = [0.75, −0.75].
    Squared errors: k=0: [0, 0.5625] -> mean 0.28125; k=1: [0.5625, 0] -> mean 0.28125.
    batch_min = 0.28125; example_min = mean(0, 0) = 0; mean = 0.28125.
    KL̂ = mean −(Δw + Δl)/2 = mean(−(0.5 − 1)/2, −(−0.5 + 1)/2) = mean(0.25, −0.25) = 0."""
    cr, rr = rewards([[0.75, 0.0], [0.0, -0.75]])
    f = LOSSES["e_dpo"].fn
    common = dict(chosen_rewards=cr, rejected_rewards=rr, beta=BETA, gamma=0.0)
    assert f(PC, PR, RC, RR, **common, ensemble_reduce="batch_min").loss.item() == pytest.approx(0.28125)
    assert f(PC, PR, RC, RR, **common, ensemble_reduce="example_min").loss.item() == pytest.approx(0.0)
    assert f(PC, PR, RC, RR, **common, ensemble_reduce="mean").loss.item() == pytest.approx(0.28125)

    # A KL term: shift the policy down by 1 nat everywhere -> Δ falls by 1 -> KL̂ = 1; h unchanged.
    out = f(PC - 1, PR - 1, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA, gamma=0.1)
    assert out.loss.item() == pytest.approx(0.28125 + 0.1 * 1.0)
    assert out.metrics["e_dpo/kl_hat"] == pytest.approx(1.0)

    # With reference samples, KL̂ = mean −(policy − reference) over them: here −(−3 − −1) = 2.
    out = f(PC, PR, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA, gamma=1.0,
            kl_policy_logps=torch.full((2, 3), -3.0), kl_reference_logps=torch.full((2, 3), -1.0))
    assert out.loss.item() == pytest.approx(0.28125 + 2.0)


def test_e_dpo_with_one_member_and_no_kl_is_distill():
    cr, rr = rewards([[0.3], [-1.2]])
    e = LOSSES["e_dpo"].fn(PC, PR, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA, gamma=0.0)
    d = LOSSES["distill"].fn(PC, PR, RC, RR, chosen_rewards=cr, rejected_rewards=rr, beta=BETA)
    assert e.loss.item() == pytest.approx(d.loss.item())


def test_p_dpo_is_dpo_plus_kl():
    """KL̂ of the shared batch is 0 (see e_dpo); shifting the policy by −2 makes it 2."""
    out = LOSSES["p_dpo"].fn(PC - 2, PR - 2, RC, RR, beta=BETA, gamma=0.5)
    assert out.loss.item() == pytest.approx(0.761871 + 0.5 * 2.0, abs=1e-6)


def test_nll_regularizer():
    """α = 2, n(w) = [2, 4]: 2 · mean(1/2, 2/4) = 1.0."""
    out = LOSSES["nll"].fn(PC, PR, None, None, chosen_lengths=torch.tensor([2, 4]), weight=2.0)
    assert out.loss.item() == pytest.approx(1.0)


def test_bcr_zero_inside_budget_and_linear_outside():
    """Drops per token: (ref − policy)/n = [(−1.5 + 1)/1, (−1.5 + 2)/1] = [−0.5, 0.5].
    δ = 0.6: both inside -> 0. δ = 0.2: [0, 0.3] -> λ=3 -> mean(0, 0.9) = 0.45.
    normalize=false with n = [10, 10] and δ = 0.2: the whole-sequence drop 0.5 is used, same 0.45;
    normalized it would be 0.05 per token, inside the budget."""
    n1 = torch.tensor([1, 1])
    f = LOSSES["bcr"].fn
    assert f(PC, PR, RC, RR, chosen_lengths=n1, weight=3.0, budget=0.6).loss.item() == 0.0
    assert f(PC, PR, RC, RR, chosen_lengths=n1, weight=3.0, budget=0.2).loss.item() == pytest.approx(0.45)
    n10 = torch.tensor([10, 10])
    assert f(PC, PR, RC, RR, chosen_lengths=n10, weight=3.0, budget=0.2, normalize=False).loss.item() == \
        pytest.approx(0.45)
    assert f(PC, PR, RC, RR, chosen_lengths=n10, weight=3.0, budget=0.2).loss.item() == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("margin", [1e4, -1e4])
def test_no_nan_or_inf_at_extreme_margins(name, margin):
    """Every objective stays finite, with finite gradients, at h = ±1e4 (β = 0.1 -> βh = ±1e3)."""
    pc = torch.tensor([margin / 2, 0.0], requires_grad=True)
    pr = torch.tensor([-margin / 2, 0.0], requires_grad=True)
    rc, rr = torch.zeros(2), torch.zeros(2)
    spec = LOSSES[name]
    inputs = {"chosen_lengths": torch.tensor([3, 3]), "rejected_lengths": torch.tensor([3, 3]),
              "chosen_rewards": torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "rejected_rewards": torch.zeros(2, 2)}
    out = spec.call(pc, pr, rc, rr, inputs, {})
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for grad in (pc.grad, pr.grad):  # regularizers do not touch the rejected side
        assert grad is None or torch.isfinite(grad).all()
    assert pc.grad is not None


def test_float32_maths_for_half_inputs():
    out = LOSSES["dpo"].fn(PC.bfloat16(), PR.bfloat16(), RC.bfloat16(), RR.bfloat16(), beta=BETA)
    assert out.loss.dtype == torch.float32


def test_registry_specs_and_unknown_names():
    assert set(LOSSES) == {"dpo", "cdpo", "rdpo", "ipo", "hinge", "minor_dpo", "dpop", "distill", "distill_soft",
                           "e_dpo", "p_dpo", "length_dpo", "simpo", "nll", "bcr"}
    assert LOSSES["e_dpo"].needs_rewards and LOSSES["e_dpo"].batch_level
    assert LOSSES["dpo"].defaults == {"beta": 0.1}
    assert LOSSES["e_dpo"].defaults == {"beta": 0.1, "gamma": 0.1, "ensemble_reduce": "batch_min"}
    assert LOSSES["dpop"].defaults["dpop_lambda"] == 50.0
    assert LOSSES["simpo"].defaults == {"beta": 2.0, "target_margin": 0.5}
    assert LOSSES["length_dpo"].defaults == {"beta": 0.1, "alpha": 0.01}
    assert [n for n, s in LOSSES.items() if not s.needs_reference] == ["simpo", "nll"]
    with pytest.raises(ConfigError, match="did you mean 'minor_dpo'"):
        get_loss("minordpo")
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        LOSSES["dpo"].check_hparams({"betta": 0.2})


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_batch_level_specs_alone_have_no_per_example_losses(name):
    spec = LOSSES[name]
    inputs = {"chosen_lengths": NW, "rejected_lengths": NL, "chosen_rewards": torch.tensor([[1.0], [0.5]]),
              "rejected_rewards": torch.zeros(2, 1)}
    out = spec.call(PC, PR, RC, RR, inputs, {})
    assert (out.losses is None) == spec.batch_level


def test_a_spec_must_declare_what_its_function_takes():
    with pytest.raises(TypeError, match="needs_lengths=False but simpo takes chosen_lengths"):
        LossSpec("x", LOSSES["simpo"].fn)
    with pytest.raises(TypeError, match=r"\['betta'\] are not hyperparameters"):
        LossSpec("x", LOSSES["dpo"].fn, hparams={"betta": LOSSES["dpo"].hparams["beta"]})


# ------------------------------------------------------- hyperparameter values, checked on load

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "dpo.yaml"
BETA_LOSSES = ["dpo", "cdpo", "rdpo", "hinge", "minor_dpo", "dpop", "distill", "distill_soft", "e_dpo", "p_dpo",
               "length_dpo", "simpo"]
# (loss, hyperparameter, the allowed values as the error states them, refused values, accepted edge values):
# the ranges of DESIGN.md and the papers, written out here independently of the registry.
RANGES = [(name, "beta", "> 0", [0, -0.1], [1e-6, 5]) for name in BETA_LOSSES] + [
    ("cdpo", "label_smoothing", "in [0, 1]", [-0.1, 1.1], [0, 1]),
    ("rdpo", "label_smoothing", "in [0, 0.5)", [-0.1, 0.5], [0, 0.49]),
    ("ipo", "tau", "> 0", [0, -1], [1e-6]),
    ("dpop", "dpop_lambda", ">= 0", [-1], [0]),
    ("distill_soft", "temperature", "> 0", [0, -2], [1e-6]),
    ("e_dpo", "gamma", ">= 0", [-0.1], [0]),
    ("e_dpo", "ensemble_reduce", "one of batch_min|example_min|mean", ["bogus", "min", 1],
     ["batch_min", "example_min", "mean"]),
    ("p_dpo", "gamma", ">= 0", [-0.1], [0]),
    ("length_dpo", "alpha", "any finite number", [], [-0.05, 0, 0.05]),   # either sign (see length_dpo)
    ("simpo", "target_margin", ">= 0", [-0.5], [0]),
    ("nll", "weight", ">= 0", [-1], [0]),
    ("bcr", "weight", ">= 0", [-1], [0]),
    ("bcr", "budget", ">= 0", [-0.1], [0]),
]


def loss_override(name: str, key: str, value) -> tuple[str, str]:
    """The override that sets `key` of loss `name` (as an objective or a regularizer) and the key path it names."""
    entry = f"{{name: {name}, {key}: {json.dumps(value)}}}"
    if LOSSES[name].kind == "regularizer":
        return f"--regularizers=[{entry}]", f"regularizers[0].{key}"
    return f"--loss={entry}", f"loss.{key}"


@pytest.mark.parametrize("name,key,allowed,refused,accepted", RANGES, ids=[f"{r[0]}.{r[1]}" for r in RANGES])
def test_out_of_range_values_are_refused_when_the_recipe_loads(name, key, allowed, refused, accepted):
    for value in refused:
        override, path = loss_override(name, key, value)
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
        assert str(e.value) == f"{path} must be {allowed} ({LOSSES[name].kind} '{name}'), got {value!r}"
    for value in accepted:
        cfg = load_config(None, [loss_override(name, key, value)[0]])
        loss = cfg.regularizers[0] if LOSSES[name].kind == "regularizer" else cfg.loss
        assert loss.params[key] == value


def test_every_declared_range_is_tested_above():
    declared = {(n, k) for n, s in LOSSES.items() for k in s.hparams}
    assert declared == {(r[0], r[1]) for r in RANGES}
    # Every hyperparameter but the booleans has a declared range or choice.
    assert declared == {(n, k) for n, s in LOSSES.items() for k, d in s.defaults.items() if not isinstance(d, bool)}


def test_recipe_values_are_coerced_to_the_defaults_types():
    """YAML 1.1 reads `1e-1` (no dot) as the string '1e-1': it is the float 0.1. An int stands for a float."""
    beta = load_config(RECIPE, overrides=["--loss.beta=1e-1"]).loss.params["beta"]
    assert beta == 0.1 and type(beta) is float
    assert type(load_config(RECIPE, ["--loss.beta=1"]).loss.params["beta"]) is float
    for override, message in [
        ("--loss.beta=abc", "loss.beta must be a finite number (objective 'dpo'), got 'abc'"),
        ("--loss.beta=true", "loss.beta must be a finite number (objective 'dpo'), got True"),
        ("--loss.beta=.inf", "loss.beta must be a finite number (objective 'dpo'), got inf"),
        ("--loss={name: ipo, length_normalize: 1}", "loss.length_normalize must be true or false (objective 'ipo'), "
                                                    "got 1"),
        ("--regularizers=[{name: bcr, normalize: 'no'}]",
         "regularizers[0].normalize must be true or false (regularizer 'bcr'), got 'no'"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(RECIPE, [override])
        assert str(e.value) == f"{RECIPE}: {message}"


def test_resolved_params_fill_in_the_defaults_and_round_trip_through_config_yaml(tmp_path):
    """`config.yaml` holds every value the run used, flat, and loads back to the same config."""
    import yaml

    from robustpo.config import to_dict

    cfg = load_config(None, ["--loss={name: e_dpo, gamma: 1}", "--regularizers=[{name: bcr, budget: 2e-1}]"])
    assert cfg.loss.params == {"beta": 0.1, "gamma": 1.0, "ensemble_reduce": "batch_min"}
    assert cfg.regularizers[0].params == {"weight": 1.0, "budget": 0.2, "normalize": True}
    saved = to_dict(cfg)
    assert saved["loss"] == {"name": "e_dpo", "beta": 0.1, "gamma": 1.0, "ensemble_reduce": "batch_min"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert to_dict(load_config(tmp_path / "config.yaml")) == saved
    assert all(s.resolve({}) == s.defaults for s in LOSSES.values())  # every default lies in its own range

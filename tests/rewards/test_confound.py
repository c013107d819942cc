"""Confound-aware reward families: debiased Bradley–Terry, span, reweight, the precondition metrics."""

import json
import math

import numpy as np
import pytest
import torch

from confoundtesting import confounded_pairs, content_ordered, words
from rewardtesting import reward_config, write_rows
from robustpo.errors import ConfigError, DataError
from robustpo.rewards import load_family
from robustpo.rewards.objective import decorrelation_penalty, fit_logistic
from robustpo.train.reward import train_reward_family


def manifest(family_dir):
    return json.loads((family_dir / "family.json").read_text())


def confound_config(out, data, **reward):
    cfg = reward_config(out, data, size=1, mode="seed", epochs=6, heldout_fraction=0.0, **reward)
    cfg.train.batch_size = 32
    return cfg


@pytest.fixture(scope="module")
def confounded(tmp_path_factory):
    """1,600 training pairs with labels σ(content gap + 1.0·Δwords)."""
    rows = confounded_pairs(1600, c=1.0, seed=0)
    return rows, write_rows(tmp_path_factory.mktemp("conf") / "pairs.jsonl", rows)


def test_debiased_bradley_terry_recovers_the_confound_weight(confounded, tmp_path):
    """Labels drawn from σ(g + c·Δφ), g = content gap, φ = words, c = 1 per word. The trainer
    standardises φ, so the expert's b should equal c·σ_φ (σ_φ: std of words over the 3,200
    training responses, computed here from the data). Tolerance: 4 standard errors of the
    maximum-likelihood b given the true content logits, se = 1/sqrt(Σ p(1−p)·Δφ̃²) with p the
    generator's own probabilities (about 0.04 here), so a correct fit fails with odds < 1e-4.
    Measured (seed 0): b̂ = 1.569 against c·σ_φ = 1.568.

    The debiased reward then ranks by content: on 600 fresh pairs ordered by content alone
    (chosen = more positive words), measured 0.98 for r_θ against 0.78 for the plain fit,
    which absorbed length (its Δr correlates 0.91 with Δwords)."""
    rows, data = confounded
    lengths = np.array([words(r[s]) for r in rows for s in ("chosen", "rejected")], dtype=float)
    sigma = lengths.std()
    dphi = np.array([words(r["chosen"]) - words(r["rejected"]) for r in rows]) / sigma
    p = np.array([r["meta"]["p_chosen"] for r in rows])
    se = 1 / math.sqrt(float((p * (1 - p) * dphi ** 2).sum()))
    debiased = train_reward_family(confound_config(tmp_path / "debiased", data, pooling="sum",
                                                   confound={"feature": "words", "decorrelate": 1.0}))
    plain = train_reward_family(confound_config(tmp_path / "plain", data, pooling="sum"))
    made = manifest(debiased)["members"][0]["made"]
    assert abs(made["confound_coef_fitted"] - 1.0 * sigma) < 4 * se, (made["confound_coef_fitted"], sigma, se)
    assert manifest(debiased)["confound"]["std"] == pytest.approx(sigma)
    assert abs(made["confound_corr_train"]) < 0.2     # r_θ carries almost nothing of φ

    from robustpo.rewards.evaluate import evaluate_family

    test = content_ordered(confounded_pairs(600, c=0.0, seed=1))
    acc = {name: evaluate_family(d, test)["members"]["member-0"]["accuracy"]
           for name, d in (("debiased", debiased), ("plain", plain))}
    assert acc["debiased"] >= 0.9 and acc["plain"] <= acc["debiased"] - 0.1, acc


def test_decorrelation_penalty_value_and_gradient_by_hand():
    """S = 4 responses, K = 2 columns; φ = [0, 0, 1, 1] (centred ±0.5, variance 0.25).
    Column 0, r = [1, 2, 3, 4]: centred [−1.5, −0.5, 0.5, 1.5], var 1.25, cov(r, φ) = 0.5, so
    corr² = 0.25 / (1.25·0.25) = 0.8. Column 1, r = [1, −1, 1, −1]: cov 0, corr² 0. Penalty =
    mean over columns = 0.4. Gradient of corr² in r_j: [2·cov·φ̃_j/S·var_r − cov²·2·r̃_j/S] /
    (var_r²·var_φ) = (0.3125·φ̃_j − 0.125·r̃_j) / 0.390625 = [0.08, −0.24, 0.24, −0.08]; halved by
    the mean over columns: [0.04, −0.12, 0.12, −0.04]. Column 1's gradient is 2·corr·∂corr = 0."""
    r = torch.tensor([[1.0, 1.0], [2.0, -1.0], [3.0, 1.0], [4.0, -1.0]], requires_grad=True)
    phi = torch.tensor([0.0, 0.0, 1.0, 1.0])
    penalty = decorrelation_penalty(r, phi)
    assert penalty.item() == pytest.approx(0.4, abs=1e-6)
    penalty.backward()
    assert r.grad[:, 0].tolist() == pytest.approx([0.04, -0.12, 0.12, -0.04], abs=1e-6)
    assert r.grad[:, 1].tolist() == pytest.approx([0.0] * 4, abs=1e-6)


def test_logistic_fit_that_starts_the_scalars():
    """x = [1, 1, 1, −1]: Σ x(1 − σ(θx)) = 3 − 4σ(θ) = 0 at σ(θ) = 3/4, θ = log 3. Second
    feature on its own rows, x = [2, 2, −2]: 4 − 6σ(2θ) = 0, σ(2θ) = 2/3, θ = log(2)/2."""
    x = torch.tensor([[1.0, 0], [1, 0], [1, 0], [-1, 0], [0, 2], [0, 2], [0, -2]])
    theta = fit_logistic(x, l2=0.0)
    assert theta == pytest.approx([math.log(3), math.log(2) / 2], abs=1e-9)
    # Separable data stay finite thanks to the small ridge.
    (b,) = fit_logistic(torch.tensor([[1.0], [2.0]]))
    assert math.isfinite(b) and b > 1


def test_reweight_weights_set_each_target_share():
    """Σ_fav w / Σ_unequal w = t to 1e-6, for each target, on pairs with ties (weight 1)."""
    from robustpo.rewards.plan import plan_members

    rng = np.random.default_rng(0)
    dphi = rng.normal(size=200).round(1)      # some exact ties at 0
    items = [{"index": i, "chosen_confound": float(d), "rejected_confound": 0.0} for i, d in enumerate(dphi)]
    cfg = reward_config("unused", "unused", size=1, mode="reweight", confound={"feature": "length"})
    cfg.reward.family.targets = [0.2, 0.5, 0.8, 0.05]
    plans = plan_members(items, cfg)
    assert [p.name for p in plans] == ["target-0.2", "target-0.5", "target-0.8", "target-0.05"]
    for plan, t in zip(plans, cfg.reward.family.targets):
        w = np.array([it["pair_weight"] for it in plan.items])
        fav, dis = dphi > 0, dphi < 0
        assert w[fav].sum() / (w[fav].sum() + w[dis].sum()) == pytest.approx(t, abs=1e-6)
        assert w[fav | dis].sum() == pytest.approx((fav | dis).sum())   # the unequal pairs keep their total weight
        assert (w[dphi == 0] == 1).all() and (dphi == 0).any()


@pytest.fixture(scope="module")
def span_family(confounded, tmp_path_factory):
    rows, data = confounded
    cfg = reward_config(tmp_path_factory.mktemp("span") / "family", data, size=1, mode="span", epochs=2,
                        heldout_fraction=0.0, confound={"feature": "words", "decorrelate": 1.0})
    cfg.reward.family.weights = [0.0, 0.5, 1.0, -1.0]
    cfg.train.batch_size = 32
    return train_reward_family(cfg)


def test_span_members_are_the_debiased_fit_plus_a_share_of_the_confound(span_family):
    """Every member's margin equals Δr_θ + w_k·ĉ·Δφ̃, recomputed from the parts: r_θ with plain
    transformers on the fit's folder (last token: prompt + response + EOS), φ̃ = (words − μ)/σ
    with the statistics in family.json, ĉ = the fitted b̂ recorded there."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    m = manifest(span_family)
    assert [x["name"] for x in m["members"]] == ["w0", "w0.5", "w1", "w-1"]
    assert len({x["path"] for x in m["members"]}) == 1                 # one model, four members
    fit = span_family / m["members"][0]["path"]
    tok, model = AutoTokenizer.from_pretrained(fit), AutoModelForSequenceClassification.from_pretrained(fit).eval()
    stats, c_hat = m["confound"], m["members"][0]["made"]["confound_coef_fitted"]
    rows = confounded_pairs(6, c=1.0, seed=7)

    def r_theta(prompt, response):
        ids = tok(prompt, add_special_tokens=False)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids + [tok.eos_token_id]])).logits[0, 0].item()

    family = load_family(span_family)
    from robustpo.rewards.evaluate import pair_deltas

    margins = pair_deltas(family, rows)                                  # (6, 4)
    for i, r in enumerate(rows):
        d_theta = r_theta(r["prompt"], r["chosen"]) - r_theta(r["prompt"], r["rejected"])
        d_phi = (words(r["chosen"]) - words(r["rejected"])) / stats["std"]
        for k, member in enumerate(m["members"]):
            w = member["made"]["span"]["weight"]
            assert margins[i, k].item() == pytest.approx(d_theta + w * c_hat * d_phi, abs=1e-4)


def test_precondition_metrics_per_member(span_family, tmp_path, capsys):
    """`robustpo reward eval` prints each member's accuracy, ECE, corr(Δr, Δφ) and b̂; the JSON
    holds them. corr is recomputed here from the members' margins."""
    from robustpo.cli import main
    from robustpo.rewards.evaluate import confound_deltas, pair_deltas
    from robustpo.rewards.objective import pearson

    rows = confounded_pairs(200, c=1.0, seed=3)
    data = write_rows(tmp_path / "eval.jsonl", rows)
    assert main(["reward", "eval", "--family", str(span_family), "--data", str(data), "--json",
                 str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "corr(Δr,Δφ)" in out and "b̂" in out and "φ = words" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    family = load_family(span_family)
    delta, dphi = pair_deltas(family, rows), confound_deltas(family, rows)
    for k, name in enumerate(family.names):
        got = metrics["members"][name]
        assert got["confound_corr"] == pytest.approx(pearson(delta[:, k], dphi), abs=1e-6)
        assert got["confound_coef_fitted"] == family.members[k]["made"]["confound_coef_fitted"]
        assert name in out and f"{got['accuracy']:.3f}" in out
    # w = 1 adds the confound back, w = −1 takes it out twice: their margins follow Δφ in opposite directions.
    assert metrics["members"]["w1"]["confound_corr"] > metrics["members"]["w-1"]["confound_corr"]


def test_reward_pooling_and_likelihood_head_match_plain_transformers(tmp_path):
    """mean/sum pooling = the mean/sum over response positions t of the score a plain
    `model(prefix).logits` gives for the prefix ending at t (a causal model's position t sees
    only tokens ≤ t). The lm head = scale × mean of log softmax(logits)[next token] over the
    response tokens, from a plain AutoModelForCausalLM and the scale in config.json."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    data = write_rows(tmp_path / "d.jsonl", confounded_pairs(64, c=0.5, seed=2))
    rows = confounded_pairs(3, c=0.5, seed=9)
    for pooling, head in (("sum", "score"), ("mean", "score"), ("mean", "lm")):
        cfg = reward_config(tmp_path / f"{head}-{pooling}", data, size=1, mode="seed", epochs=1,
                            heldout_fraction=0.0, pooling=pooling, head=head)
        out = train_reward_family(cfg)
        folder = out / manifest(out)["members"][0]["path"]
        tok = AutoTokenizer.from_pretrained(folder)
        auto = AutoModelForCausalLM if head == "lm" else AutoModelForSequenceClassification
        model = auto.from_pretrained(folder).eval()
        got = load_family(out).score([r["prompt"] for r in rows], [r["chosen"] for r in rows])[:, 0]
        for i, r in enumerate(rows):
            p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
            ids = p + tok(r["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            with torch.no_grad():
                if head == "lm":
                    logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
                    per_token = [logp[t - 1, ids[t]].item() for t in range(len(p), len(ids))]
                    expected = model.config.robustpo_reward["scale"] * sum(per_token) / len(per_token)
                else:
                    per_token = [model(input_ids=torch.tensor([ids[:t + 1]])).logits[0, 0].item()
                                 for t in range(len(p), len(ids))]
                    expected = sum(per_token) / (len(per_token) if pooling == "mean" else 1)
            assert got[i].item() == pytest.approx(expected, abs=1e-4), (head, pooling)


def test_a_user_feature_end_to_end(tmp_path):
    """`module:function` as the confound: reweight family -> score -> e_dpo trains on the columns."""
    from pathlib import Path

    from robustpo.config import load_config
    from robustpo.rewards import score_dataset
    from robustpo.train.preference import train_preference

    pairs = write_rows(tmp_path / "pairs.jsonl", confounded_pairs(64, c=1.0, seed=4))
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "e_dpo.yaml"
    cfg = reward_config(tmp_path / "family", pairs, size=1, mode="reweight", epochs=1, heldout_fraction=0.0,
                        confound={"feature": "confound_features:characters", "debias": False})
    cfg.reward.family.targets = [0.3, 0.7]
    family = train_reward_family(cfg)
    m = manifest(family)
    assert m["confound"]["feature"] == "confound_features:characters" and m["size"] == 2
    scored = tmp_path / "scored.jsonl"
    score_dataset(family, pairs, scored, normalize="standardize", progress=False)
    assert all(len(json.loads(line)["chosen_rewards"]) == 2 for line in scored.read_text().splitlines())
    run = load_config(recipe, [f"--data.train={scored}", f"--train.output_dir={tmp_path / 'run'}",
                                                  "--train.max_steps=3", "--train.save_steps=0"])
    result = train_preference(run)
    assert result.steps == 3 and (result.final_dir / "config.json").exists()


def test_removing_meta_changes_no_trained_weight(tmp_path):
    """Gold diagnostics in `meta` never reach reward training: the same rows with and without
    meta train bit-identical weights (a debiased, decorrelated, reweighted family: every path)."""
    from safetensors.torch import load_file

    rows = confounded_pairs(96, c=1.0, seed=5)
    with_meta = write_rows(tmp_path / "with.jsonl", rows)
    without = write_rows(tmp_path / "without.jsonl", [{k: v for k, v in r.items() if k != "meta"} for r in rows])
    folders = []
    for name, data in (("a", with_meta), ("b", without)):
        cfg = reward_config(tmp_path / name, data, size=1, mode="reweight", epochs=1, heldout_fraction=0.0,
                            confound={"feature": "words", "decorrelate": 0.5})
        cfg.reward.family.targets = [0.5]
        folders.append(train_reward_family(cfg) / "members" / "target-0.5")
    a, b = (load_file(f / "model.safetensors") for f in folders)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("reward,error,message", [
    ({"confound": {"feature": "lenght"}}, ConfigError, "unknown feature 'lenght'; did you mean 'length'?"),
    ({"confound": {"feature": "no_such_module:f"}}, ConfigError, "cannot import 'no_such_module:f'"),
    ({"confound": {"feature": "confound_features:missing"}}, ConfigError, "cannot import 'confound_features:missing'"),
    ({"confound": {"feature": "confound_features:NOT_CALLABLE"}}, ConfigError, "is not callable"),
    ({"family": {"mode": "reweight"}}, ConfigError, "reweight needs reward.confound"),
    ({"family": {"mode": "reweight", "targets": [0.5, 1.0]}, "confound": {"feature": "words"}}, ConfigError,
     "targets must lie strictly between 0 and 1, got 1.0"),
    ({"family": {"mode": "reweight", "targets": [0.0]}, "confound": {"feature": "words"}}, ConfigError,
     "strictly between 0 and 1, got 0.0"),
    ({"family": {"mode": "span"}, "confound": {"feature": "words", "debias": False}}, ConfigError,
     "needs reward.confound.debias: true"),
    ({"head": "lm", "pooling": "last"}, ConfigError, "reward.pooling must be mean or sum"),
    ({"pooling": "max"}, ConfigError, "reward.pooling must be one of last, mean, sum"),
])
def test_bad_confound_settings_are_refused_before_any_work(tmp_path, reward, error, message):
    data = write_rows(tmp_path / "d.jsonl", confounded_pairs(20, c=1.0, seed=0))
    family = reward.pop("family", {})
    cfg = reward_config(tmp_path / "family", data, size=1, mode=family.pop("mode", "seed"), **reward)
    for key, value in family.items():
        setattr(cfg.reward.family, key, value)
    with pytest.raises(error) as e:
        train_reward_family(cfg)
    assert message in str(e.value)
    assert not (tmp_path / "family").exists()


@pytest.mark.parametrize("feature,message", [
    ("confound_features:raises_on_marker", "confound feature 'confound_features:raises_on_marker' raised ValueError: "
                                           "cannot score zzbad"),
    ("confound_features:one_value", "returned 1 values for 40 responses"),
    ("confound_features:nan_on_marker", "gave nan, not a finite number"),
])
def test_a_broken_feature_function_names_itself_and_the_row(tmp_path, feature, message):
    rows = confounded_pairs(20, c=1.0, seed=0)
    rows[6]["rejected"] = " a zzbad review."
    data = write_rows(tmp_path / "d.jsonl", rows)
    cfg = reward_config(tmp_path / "family", data, size=1, mode="seed", heldout_fraction=0.0,
                        confound={"feature": feature})
    with pytest.raises(DataError) as e:
        train_reward_family(cfg)
    assert message in str(e.value) and str(data) in str(e.value)
    if "one_value" not in feature:
        assert "row 7" in str(e.value)
    assert not (tmp_path / "family" / "members").exists()


@pytest.mark.parametrize("which", ["no", "every"])
def test_reweight_needs_pairs_on_both_sides_of_the_confound(tmp_path, which):
    rows = confounded_pairs(40, c=1.0, seed=0)
    flip = (lambda r: words(r["chosen"]) < words(r["rejected"])) if which == "every" else \
        (lambda r: words(r["chosen"]) > words(r["rejected"]))
    rows = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} if flip(r) else r for r in rows]
    data = write_rows(tmp_path / "d.jsonl", rows)
    cfg = reward_config(tmp_path / "family", data, size=1, mode="reweight", heldout_fraction=0.0,
                        confound={"feature": "words"})
    with pytest.raises(DataError, match=f"reweight: {which} training pair"):
        train_reward_family(cfg)
    assert not (tmp_path / "family" / "members").exists()


def test_confound_recipe_and_precondition_commands(tmp_path, capsys):
    """The README's two commands: `reward train recipes/reward/confound.yaml` prints the held-out
    precondition table (with corr(Δr,Δφ) and b̂), `reward eval` prints it on any pairs."""
    from pathlib import Path

    from robustpo.cli import main

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "fam"
    assert main(["reward", "train", str(repo / "recipes/reward/confound.yaml"), f"--train.output_dir={out}",
                 "--train.epochs=1", f"--data.train={repo / 'recipes/reward/data/reviews.jsonl'}"]) == 0
    printed = capsys.readouterr().out
    m = manifest(out)
    assert m["mode"] == "span" and [x["name"] for x in m["members"]] == ["w0", "w0.5", "w1"]
    assert "corr(Δr,Δφ)" in printed and "φ = length" in printed
    for member in m["members"]:
        assert f"{member['heldout']['confound_corr']:.3f}" in printed
    assert main(["reward", "eval", "--family", str(out), "--data", str(repo / "recipes/reward/data/reviews.jsonl")]) == 0
    assert "b̂" in capsys.readouterr().out


def test_span_scale_slope_is_a_plain_models_slope_on_the_confound(tmp_path):
    """`span_scale: slope`: ĉ = Σ Δr·Δφ̃ / Σ Δφ̃² (least squares through the origin) of a plain
    model's margins on the training pairs, recomputed here with plain transformers on the plain
    model's folder (members/plain-0) and φ̃ = (words − μ)/σ from family.json."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = confounded_pairs(200, c=1.0, seed=11)
    data = write_rows(tmp_path / "d.jsonl", rows)
    cfg = reward_config(tmp_path / "family", data, size=1, mode="span", epochs=1, heldout_fraction=0.0,
                        confound={"feature": "words", "debias": False, "decorrelate": 1.0})
    cfg.reward.family.span_scale = "slope"
    family = train_reward_family(cfg)
    m = manifest(family)
    assert [x["name"] for x in m["members"]] == ["w0", "w0.5", "w1"]
    plain = family / "members" / "plain-0"
    tok, model = AutoTokenizer.from_pretrained(plain), AutoModelForSequenceClassification.from_pretrained(plain).eval()

    def r(prompt, response):
        ids = tok(prompt, add_special_tokens=False)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids + [tok.eos_token_id]])).logits[0, 0].item()

    dr = np.array([r(x["prompt"], x["chosen"]) - r(x["prompt"], x["rejected"]) for x in rows])
    dphi = np.array([words(x["chosen"]) - words(x["rejected"]) for x in rows]) / m["confound"]["std"]
    slope = float((dr * dphi).sum() / (dphi ** 2).sum())
    for member in m["members"]:
        assert member["made"]["span"]["scale"] == pytest.approx(slope, rel=1e-4, abs=1e-5)
        assert member["confound_coef"] == pytest.approx(member["made"]["span"]["weight"] * slope, rel=1e-4, abs=1e-5)

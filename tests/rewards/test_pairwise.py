"""Pairwise preference models (reward.kind: pairwise) and the pairwise: judge."""

import json
import math

import numpy as np
import pytest
import torch

from pairwisetesting import GOOD, count_pairs, count_response, rps_pairs
from rewardtesting import reward_config, write_rows
from robustpo.errors import ConfigError


def train(out_dir, data, kind, epochs=6, size=1, mode="seed", **kw):
    from robustpo.train.reward import train_reward_family

    cfg = reward_config(out_dir, data, size=size, mode=mode, epochs=epochs, heldout_fraction=0.2, kind=kind, **kw)
    cfg.train.batch_size, cfg.train.learning_rate = 16, 3e-3
    return train_reward_family(cfg)


@pytest.fixture(scope="module")
def rps(tmp_path_factory):
    """A pairwise model and a Bradley–Terry model of the same backbone and budget on the same pairs."""
    root = tmp_path_factory.mktemp("rps")
    data = write_rows(root / "rps.jsonl", rps_pairs(600, seed=0))
    return train(root / "pairwise", data, "pairwise"), train(root / "bt", data, "bradley_terry")


def heldout_accuracy(family_dir):
    return json.loads((family_dir / "family.json").read_text())["heldout"]["mean_of_members"]["accuracy"]


def test_pairwise_beats_bradley_terry_on_a_cyclic_relation(rps):
    """Rock-paper-scissors: chosen = the hand that beats the other (rock > scissors > paper > rock).

    Why no pointwise score can express it: a Bradley–Terry model prefers a over b iff r(a) > r(b),
    a transitive relation. The label depends only on the two hands (the noise words are
    independent of it), and any transitive order of the three hands contradicts at least one of
    the three cyclic relations. Every unordered hand pair is equally frequent, so a pointwise
    model's held-out accuracy is at most 2/3 (plus sampling noise), whereas reading both hands
    at once can reach 1. Measured (seed 0, 480 training / 120 held-out pairs, 6 epochs):
    pairwise 1.00, Bradley–Terry 0.51."""
    pairwise_dir, bt_dir = rps
    m = json.loads((pairwise_dir / "family.json").read_text())
    assert m["kind"] == "pairwise" and m["members"][0]["heldout"]["pairs"] == 120
    member = m["members"][0]["heldout"]
    assert {"accuracy", "ece", "brier"} <= set(member)
    assert heldout_accuracy(pairwise_dir) >= 0.9
    assert heldout_accuracy(bt_dir) <= 0.75
    assert heldout_accuracy(pairwise_dir) > heldout_accuracy(bt_dir) + 0.2


def test_antisymmetric_by_construction(rps):
    from robustpo.rewards.pairwise import PairwiseFamily

    fam = PairwiseFamily(rps[0], batch_size=3)
    rows = rps_pairs(20, seed=5)
    p, a, b = [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] + " go" * i for i, r in
                                                                       enumerate(rows)]
    ab, ba = fam.logits(p, a, b), fam.logits(p, b, a)     # separate calls, different batches and padding
    probs = torch.sigmoid(ab.double()) + torch.sigmoid(ba.double())
    assert torch.allclose(probs, torch.ones_like(probs), atol=1e-6)
    assert fam.logits(p, a, a).abs().max() < 1e-6        # a response against itself: exactly a tie


def test_reload_with_plain_transformers(rps):
    """A by-hand forward of the documented template with plain transformers gives the judge's P."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from robustpo.judges import load_judge

    folder = rps[0] / "members" / "member-0"
    spec = json.loads((folder / "robustpo_pairwise.json").read_text())
    assert spec["logit"] == "f(x, A, B) - f(x, B, A)"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()

    def f(prompt, x, y):
        ids = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) else []
        ids += tok(prompt, add_special_tokens=False)["input_ids"]
        ids += tok(x, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids += tok(y, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
            return model.score(hidden[:, -1]).item()

    judge = load_judge(f"pairwise:{folder}", batch_size=4)
    rows = rps_pairs(6, seed=9)
    probs = judge.compare([r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
    for r, prob in zip(rows, probs):
        logit = f(r["prompt"], r["chosen"], r["rejected"]) - f(r["prompt"], r["rejected"], r["chosen"])
        assert prob == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)


def test_bad_input(rps, tmp_path):
    from robustpo.judges import JudgeError, load_judge
    from robustpo.rewards import FamilyError, load_family

    pairwise_dir, bt_dir = rps
    with pytest.raises(FamilyError, match="pairwise preference model: it compares two responses and has no "
                                          "pointwise score"):
        load_family(pairwise_dir)                           # what `robustpo reward score` / `reward eval` load
    with pytest.raises(FamilyError, match="no pointwise score"):
        load_family(pairwise_dir / "members" / "member-0")
    with pytest.raises(JudgeError, match="not a pairwise preference model"):
        load_judge(f"pairwise:{bt_dir}")
    with pytest.raises(JudgeError, match="not a pairwise preference model"):
        load_judge(f"pairwise-family:{bt_dir / 'members' / 'member-0'}")
    # Too long for the judge: cut by the documented rule, counted, flagged per verdict.
    judge = load_judge(f"pairwise-family:{pairwise_dir}", max_length=12)
    long = " ".join(["rock", "ok"] * 10)
    verdicts = judge.compare_detailed(["play a hand:"] * 2, [long, "rock"], ["paper", "scissors"])
    assert [v.raw["truncated"] for v in verdicts] == [True, False]
    assert judge.truncation == {"pairs": 2, "prompt_truncated": 0, "responses_truncated": 1}
    from robustpo.rewards.plan import check_config

    with pytest.raises(ConfigError, match="seed or bootstrap"):
        check_config(reward_config(tmp_path, tmp_path / "x.jsonl", mode="multihead", kind="pairwise"))
    with pytest.raises(ConfigError, match="reward.kind must be one of"):
        check_config(reward_config(tmp_path, tmp_path / "x.jsonl", kind="pointwise"))


def test_truncation_rule_is_symmetric():
    from robustpo.rewards.pairwise import join_pair

    def cut(a, b, max_length=10):
        ids, pc, rc = join_pair([7, 7], a, b, bos=None, add_bos=False, eos=2, max_length=max_length,
                                max_prompt_length=4)
        return ids, rc
    short, long = [5], [9] * 20
    assert cut(short, long)[0] == [7, 7, 5, 2] + [9] * 6 and cut(short, long)[1]   # shorter kept whole
    assert sorted(cut(long, short)[0]) == sorted(cut(short, long)[0])
    ids, _ = cut([8] * 9, [9] * 9)
    assert ids == [7, 7] + [8] * 4 + [9] * 4                                       # both get room // 2
    assert cut([5], [6]) == ([7, 7, 5, 2, 6, 2], False)


@pytest.fixture(scope="module")
def count_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("count")
    return train(root / "pairwise", write_rows(root / "count.jsonl", count_pairs(480, seed=1)), "pairwise", epochs=5,
                 size=2, mode="bootstrap")


def test_bootstrap_family_of_pairwise_models(count_model):
    """Families work as for Bradley–Terry models: each member its own bootstrap draw, held-out
    metrics per member and for the mean logit, a member alone as pairwise-family:PATH member=K."""
    from robustpo.judges import load_judge

    m = json.loads((count_model / "family.json").read_text())
    assert m["kind"] == "pairwise" and m["mode"] == "bootstrap" and m["size"] == 2
    rows = [json.loads((count_model / e["data"]["rows_file"]).read_text())["rows"] for e in m["members"]]
    assert rows[0] != rows[1] and all(0.5 < e["data"]["unique_pairs"] / e["data"]["pairs"] < 0.75
                                      for e in m["members"])
    for e in m["members"]:
        assert e["heldout"]["accuracy"] >= 0.85 and e["made"]["kind"] == "pairwise"
    assert m["heldout"]["mean_of_members"]["accuracy"] >= 0.85 and "disagreement" in m["heldout"]
    p, a, b = ["rate it:"] * 2, ["great great meh meh meh", "meh meh meh meh meh"], ["meh"] * 2
    both, one = load_judge(f"pairwise-family:{count_model}"), load_judge(f"pairwise-family:{count_model}", member=1)
    assert one.name.endswith("[1]") and both.compare(p, a, b) != one.compare(p, a, b)


@pytest.mark.parametrize("strategy", ["tournament", "insertion"])
def test_rank_recovers_a_known_order(count_model, tmp_path, strategy):
    """Completions with 0..5 GOOD words (the task the model was trained on): IPR with the
    pairwise judge recovers the order, with the comparisons each strategy promises."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "generate"))
    from genhelpers import read_jsonl, run_cli, write_jsonl

    from robustpo.generate.ranking import insertion_bound

    rng = np.random.default_rng(3)
    rows = []
    for p in range(3):
        ks = rng.permutation(6).tolist()
        rows.append({"prompt": "rate it:", "completions": [count_response(rng, k) for k in ks], "ks": ks})
    src = write_jsonl(tmp_path / "samples.jsonl", [{k: v for k, v in r.items() if k != "ks"} for r in rows])
    out = tmp_path / "pairs.jsonl"
    assert run_cli(["rank", "--judge", f"pairwise:{count_model}", "--in", src, "--out", out, "--strategy", strategy,
                    "--no-progress"]) == 0
    pairs = read_jsonl(out)
    assert len(pairs) == 3
    for row, pair in zip(rows, pairs):
        m = pair["meta"]
        assert pair["chosen"].count(GOOD) == 5 and pair["rejected"].count(GOOD) == 0
        if strategy == "tournament":
            assert m["comparisons"] == 2 * 6 - 3
        else:
            assert [row["ks"][i] for i in m["ranking"]] == [5, 4, 3, 2, 1, 0]
            assert 5 <= m["comparisons"] <= insertion_bound(6)
        assert m["judge_calls"] == 2 * m["comparisons"] and m["disagreements"] == 0   # antisymmetric
    log = read_jsonl(str(out) + ".judgments.jsonl")
    assert len(log) == 2 * sum(p["meta"]["comparisons"] for p in pairs)
    assert {r["judge"] for r in log} == {f"pairwise:{count_model}"} and {r["order"] for r in log} == {"ab", "ba"}


def test_label_with_the_pairwise_judge(count_model, tmp_path, capsys):
    """`robustpo label --judge pairwise:PATH` swaps mislabelled pairs, logs both orders, reports truncation."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "generate"))
    from genhelpers import read_jsonl, run_cli, write_jsonl

    rng = np.random.default_rng(4)
    rows = [{"prompt": "rate it:", "chosen": count_response(rng, lo), "rejected": count_response(rng, hi)}
            for lo, hi in [(0, 5), (1, 4), (5, 0)]]          # the first two mislabelled, the third right
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "labelled.jsonl"
    assert run_cli(["label", "--judge", f"pairwise:{count_model}", "--in", src, "--out", out, "--no-progress"]) == 0
    labelled = read_jsonl(out)
    assert [r["meta"]["label"]["swapped"] for r in labelled] == [True, True, False]
    assert all(r["chosen"].count(GOOD) > r["rejected"].count(GOOD) for r in labelled)
    log = read_jsonl(str(out) + ".judgments.jsonl")
    assert len(log) == 6 and all(r["raw"]["truncated"] is False for r in log)
    # rows 0 and 2 hold the same two texts (all GOOD, all BAD): one comparison, in either order
    assert 'label: judge truncation {"pairs": 2, "prompt_truncated": 0, "responses_truncated": 0}' in \
        capsys.readouterr().err


def test_mismatched_tokenizers_in_a_pairwise_family(rps, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from robustpo.judges import JudgeError, load_judge
    from robustpo.rewards.family import member_entry, write_manifest

    src = rps[0] / "members" / "member-0"
    a, b = shutil.copytree(src, tmp_path / "a"), shutil.copytree(src, tmp_path / "b")
    tok = AutoTokenizer.from_pretrained(b)
    tok.add_tokens(["<other>"])
    tok.save_pretrained(b)
    write_manifest(tmp_path, {"kind": "pairwise", "mode": "assembled", "size": 2, "max_length": 40,
                              "max_prompt_length": 16,
                              "members": [member_entry(tmp_path, a, 0, "a"), member_entry(tmp_path, b, 0, "b")]})
    with pytest.raises(JudgeError, match="mismatched tokenizers"):
        load_judge(f"pairwise-family:{tmp_path}")


def test_member_cards_name_the_pairwise_objective_and_metrics(count_model):
    """Each member's README.md (model card) is a pairwise card: its tag, its both-orders
    objective, and the held-out accuracy family.json records for it, as a JSON cell."""
    m = json.loads((count_model / "family.json").read_text())
    for e in m["members"]:
        card = (count_model / e["path"] / "README.md").read_text()
        assert "pairwise-preference" in card and "bradley-terry" not in card
        assert "σ(f(x, A, B) − f(x, B, A))" in card and "a pairwise preference model trained by robustpo" in card
        assert json.dumps(e["heldout"]) in card


def test_assembled_pairwise_family_matches_the_trained_one(count_model, rps, tmp_path):
    """`reward family` on the two member folders rebuilds the family: the same logits (the same
    weights), and `reward eval` measures it like any family; mixing kinds is refused. A member
    folder alone, and the assembled family, keep the lengths the members were trained with
    (rewardtesting: max_length 40, max_prompt_length 16; not the defaults 512/256)."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "generate"))
    from genhelpers import run_cli

    from robustpo.rewards.family import FamilyError, assemble_family
    from robustpo.rewards.pairwise import PairwiseFamily

    members = [str(count_model / "members" / n) for n in ("member-0", "member-1")]
    out = tmp_path / "assembled"
    assert run_cli(["reward", "family", "--members", *members, "--out", out, "--heldout",
                    write_rows(tmp_path / "held.jsonl", count_pairs(60, seed=9))]) == 0
    m = json.loads((out / "family.json").read_text())
    assert m["kind"] == "pairwise" and m["mode"] == "assembled" and m["size"] == 2
    assert m["heldout"]["mean_of_members"]["accuracy"] >= 0.85
    assert (m["max_length"], m["max_prompt_length"]) == (40, 16)
    alone = PairwiseFamily(members[0])
    assert (alone.max_length, alone.encoder.max_prompt_length, alone.names) == (40, 16, ["pairwise"])
    p, a, b = ["rate it:"] * 2, ["great great meh meh meh", "meh meh meh meh meh"], ["meh", "great meh"]
    assert torch.equal(PairwiseFamily(out).logits(p, a, b), PairwiseFamily(count_model).logits(p, a, b))
    with pytest.raises(FamilyError, match="cannot assemble Bradley–Terry and pairwise"):
        assemble_family([members[0], rps[1] / "members" / "member-0"], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()

"""Function, reward-model, family and local-LM judges, and both-order judging.

Expected values are computed independently of the judge code: by hand, or by a separate
unbatched forward pass of the same model on the exact text.
"""

import json
import math

import pytest
import torch

from robustpo.errors import ConfigError
from robustpo.judges import ComparisonLog, judge_both_orders, load_judge, text_hash
from robustpo.judges.base import JudgeError
from robustpo.judges.function import FunctionJudge
from robustpo.judges.reward import FamilyJudge


def prefers_first_position(prompts, first, second):
    return [1.0] * len(prompts)


def longer_is_better(prompts, first, second):
    return [1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5 for a, b in zip(first, second)]


def test_both_orders_cancel_position_bias_and_record_every_comparison(tmp_path):
    judge = FunctionJudge(prefers_first_position, name="always-first")
    log = ComparisonLog(tmp_path / "log.jsonl")
    both = judge_both_orders(judge, ["p", "q"], ["x", "y"], ["yy", "x"], log=log)
    log.close()
    # (a, b) says 1 for a; (b, a) says 1 for b, i.e. 0 for a: the mean is 0.5, the orders always disagree.
    assert both.probs == [0.5, 0.5] and both.disagreement_rate == 1.0
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["order"], r["first_hash"]) for r in rows] == [
        ("ab", text_hash("x")), ("ba", text_hash("yy")), ("ab", text_hash("y")), ("ba", text_hash("x"))]
    assert all(r["judge"] == "always-first" and r["prob_first"] == 1.0 for r in rows)


def test_both_orders_keep_a_consistent_judge():
    both = judge_both_orders(FunctionJudge(longer_is_better, "len"), ["p"] * 3, ["aaa", "a", "aa"],
                             ["a", "aaa", "bb"])
    assert both.probs == [1.0, 0.0, 0.5] and both.disagreement_rate == 0.0


def test_load_function_judge_by_module_and_file(tmp_path):
    judge = load_judge("function:test_local_judges:longer_is_better")
    assert judge.compare(["p"], ["long"], ["s"]) == [1.0]
    f = tmp_path / "rules.py"
    f.write_text("def shorter(prompts, a, b):\n    return [len(x) < len(y) for x, y in zip(a, b)]\n")
    assert load_judge(f"function:{f}:shorter").compare(["p", "p"], ["ab", "a"], ["a", "ab"]) == [0.0, 1.0]


def test_bad_judges_are_reported_clearly(tmp_path):
    with pytest.raises(ConfigError, match="unknown judge spec"):
        load_judge("nonsense:x")
    with pytest.raises(ConfigError, match="has no attribute"):
        load_judge("function:test_local_judges:missing")
    bad = FunctionJudge(lambda p, a, b: [1.5] * len(p), "bad")
    with pytest.raises(JudgeError, match="probability in"):
        judge_both_orders(bad, ["p"], ["a"], ["b"])


class KnownFamily:
    """Three members with fixed rewards per response text (a stand-in for issue 3's family)."""

    name = "known"
    table = {"good": [2.0, 1.0, 0.0], "bad": [0.0, 0.0, 3.0]}

    def score(self, prompts, responses):
        return torch.tensor([self.table[r] for r in responses])


def test_family_judge_uses_the_mean_or_one_member():
    mean = FamilyJudge(KnownFamily()).compare(["p"], ["good"], ["bad"])[0]
    # mean rewards: good 1.0, bad 1.0 -> sigma(0) = 0.5
    assert mean == pytest.approx(0.5)
    # member 0: sigma(2 - 0); member 2: sigma(0 - 3)
    assert FamilyJudge(KnownFamily(), member=0).compare(["p"], ["good"], ["bad"])[0] == pytest.approx(
        1 / (1 + math.exp(-2)))
    assert FamilyJudge(KnownFamily(), member=2).compare(["p"], ["good"], ["bad"])[0] == pytest.approx(
        1 / (1 + math.exp(3)))


def test_reward_model_judge_is_sigmoid_of_the_reward_difference(tiny_reward_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    judge = load_judge(f"reward:{tiny_reward_dir}", batch_size=3)
    prompts = ["the cat", "a dog", "two plus"]
    a = [" sat on the mat", " ran", " two is four and more"]
    b = [" ran in the park today", " sat", " four"]
    got = judge.compare(prompts, a, b)
    # Independent reference, one text at a time with no padding, by the training rule for
    # string rows: ids(prompt) + ids(response) + [EOS] (this tokenizer adds no BOS).
    tok = AutoTokenizer.from_pretrained(tiny_reward_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_dir).eval()

    def r(prompt, response):
        ids = (tok(prompt, add_special_tokens=False).input_ids + tok(response, add_special_tokens=False).input_ids
               + [tok.eos_token_id])
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

    expected = [1 / (1 + math.exp(-(r(p, x) - r(p, y)))) for p, x, y in zip(prompts, a, b)]
    assert got == pytest.approx(expected, abs=1e-4)
    assert judge.score(prompts, a) == pytest.approx([r(p, x) for p, x in zip(prompts, a)], abs=1e-4)
    assert judge.name == f"reward:{tiny_reward_dir}"


def test_family_folder_judge_mean_and_member(tiny_family_dir, tiny_reward_dir):
    """Family scores against the members' single-model scores (checked above by hand)."""
    family_dir, second_dir = tiny_family_dir
    prompts, a, b = ["the cat", "a dog"], [" sat on the mat", " ran"], [" ran in the park", " sat"]
    r0 = load_judge(f"reward:{tiny_reward_dir}")
    r1 = load_judge(f"reward:{second_dir}")
    ra0, rb0, ra1, rb1 = r0.score(prompts, a), r0.score(prompts, b), r1.score(prompts, a), r1.score(prompts, b)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    mean = load_judge(f"family:{family_dir}").compare(prompts, a, b)
    assert mean == pytest.approx([sig((ra0[i] + ra1[i]) / 2 - (rb0[i] + rb1[i]) / 2) for i in range(2)], abs=1e-4)
    member1 = load_judge(f"family:{family_dir}", member=1).compare(prompts, a, b)
    assert member1 == pytest.approx([sig(ra1[i] - rb1[i]) for i in range(2)], abs=1e-4)


def test_lm_judge_reads_label_probabilities(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    judge = load_judge(f"lm:{tiny_lm_dir}", chat="false", batch_size=4)
    prompts, a, b = ["the cat", "two plus two"], ["sat on the mat", "is four"], ["ran", "is five or six"]
    got = judge.compare(prompts, a, b)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    # This tokenizer has single tokens for "A", " A", "B" and " B" (its corpus has "Answer: A").
    ids_a = {tok(x, add_special_tokens=False).input_ids[0] for x in ("A", " A")}
    ids_b = {tok(x, add_special_tokens=False).input_ids[0] for x in ("B", " B")}
    assert len(ids_a) == len(ids_b) == 2 and all(len(tok(x).input_ids) == 1 for x in ("A", " A", "B", " B"))
    expected = []
    for p, x, y in zip(prompts, a, b):
        text = (f"Which response answers the prompt better?\n\nPrompt:\n{p}\n\nResponse A:\n{x}\n\n"
                f"Response B:\n{y}\n\nAnswer with a single letter, A or B.\nAnswer:")
        with torch.no_grad():
            probs = torch.softmax(model(**tok(text, return_tensors="pt")).logits[0, -1].double(), -1)
        pa, pb = probs[list(ids_a)].sum().item(), probs[list(ids_b)].sum().item()
        expected.append(pa / (pa + pb))
    assert got == pytest.approx(expected, abs=1e-4)  # left-padded batch == one at a time


def test_a_judge_returning_the_wrong_number_of_verdicts_is_an_error():
    with pytest.raises(JudgeError, match="returned 1 verdicts for 2"):
        judge_both_orders(FunctionJudge(lambda p, a, b: [1.0], "short"), ["p"], ["a"], ["b"])


def test_lm_judge_wraps_its_prompt_in_the_chat_template_when_it_has_one(tiny_lm_dir):
    judge = load_judge(f"lm:{tiny_lm_dir}")  # chat=auto, and robustpo.tiny tokenizers carry a template
    text = judge.render("the cat", "sat", "ran")
    assert text.startswith("<|user|>Which response answers the prompt better?") and text.endswith("<|assistant|>")
    with pytest.raises(ConfigError, match="must contain"):
        load_judge(f"lm:{tiny_lm_dir}", template="no placeholders")


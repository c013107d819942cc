"""The gold reward, the prompt generator and the demonstrator (pure Python, fast)."""

import math

import numpy as np
import pytest

from robustpo.testbed import task
from robustpo.testbed.task import (DEMO_LENGTHS, FILLERS, ITEMS, ITEMS_PER_DOC, DOC_LENGTHS, LENGTH_BONUS,
                                   document_items, generate_prompts, gold_judge, gold_reward, seeded_rng)

PROMPT = "document: the apple of river stone a summary:"


def test_gold_reward_by_hand():
    """Items of the document: apple, river, stone (3).

    "apple river river tiger the": covered {apple, river} = 2, one repeat (river), one
    invented item (tiger), 5 words:  4·2/3 − 1·1 − 0.5·1 + 0.25·5 = 2.6667 − 1.5 + 1.25 = 2.4167.
    "apple river stone": 4·3/3 + 0.25·3 = 4.75.  "" : 0.
    """
    assert gold_reward(PROMPT, "apple river river tiger the") == pytest.approx(2.4166667, abs=1e-6)
    assert gold_reward(PROMPT, "apple river stone") == pytest.approx(4.75)
    assert gold_reward(PROMPT, "") == 0.0
    # A word that is neither an item nor a filler (here a template word) counts as invented.
    assert gold_reward(PROMPT, "summary") == pytest.approx(-1.0 + 0.25)


def test_content_dominates_length():
    """A filler word adds exactly LENGTH_BONUS (0.25); one more item is worth 4/|items| ≥ 1 on top."""
    base = gold_reward(PROMPT, "apple")
    assert gold_reward(PROMPT, "apple the") - base == pytest.approx(LENGTH_BONUS)
    assert gold_reward(PROMPT, "apple river") - base > 4 * LENGTH_BONUS
    # An invented item costs more than the length it adds: a padded-with-junk answer loses.
    assert gold_reward(PROMPT, "apple tiger") < base


def test_gold_judge_is_the_bradley_terry_probability():
    a, b = "apple river stone", "apple"
    delta = (4 * 3 / 3 + 0.75) - (4 * 1 / 3 + 0.25)  # by hand from the reward's definition
    p = gold_judge([PROMPT, PROMPT], [a, b], [b, a])
    assert p[0] == pytest.approx(1 / (1 + math.exp(-delta)))
    assert p[0] + p[1] == pytest.approx(1.0)  # symmetric: both-order judging cannot disagree


def test_prompts_respect_the_generator_ranges():
    prompts = generate_prompts(300, seeded_rng(1, "t"))
    for p in prompts:
        words = task.document_words(p)
        items = document_items(p)
        assert DOC_LENGTHS[0] <= len(words) <= DOC_LENGTHS[1]
        assert ITEMS_PER_DOC[0] <= len(items) <= ITEMS_PER_DOC[1]
        assert len(set(items)) == len(items)  # distinct
        assert all(w in ITEMS or w in FILLERS for w in words)
    # Seeded: the same stream gives the same prompts, another stream different ones.
    assert generate_prompts(5, seeded_rng(1, "t")) == prompts[:5]
    assert generate_prompts(5, seeded_rng(1, "u")) != prompts[:5]


def test_demonstrations_vary_in_length_and_quality_and_carry_the_length_confound():
    rng = seeded_rng(0, "demo-test")
    prompts = generate_prompts(4000, rng)
    first = [task.demonstration(p, rng) for p in prompts]
    second = [task.demonstration(p, rng) for p in prompts]
    lengths = np.array([len(d.split()) for d in first])
    # Every length in range occurs, roughly uniformly (expected 4000/6 ≈ 667 each).
    counts = np.bincount(lengths, minlength=DEMO_LENGTHS[1] + 1)[DEMO_LENGTHS[0]:]
    assert len(counts) == DEMO_LENGTHS[1] - DEMO_LENGTHS[0] + 1 and counts.min() > 550
    r1, r2 = np.array(task.gold_rewards(prompts, first)), np.array(task.gold_rewards(prompts, second))
    # Quality varies a lot at fixed length: the spread within length 4 exceeds 1 nat.
    assert r1[lengths == 4].std() > 1.0
    # Demonstrations beat random responses on average.
    random = np.array(task.gold_rewards(prompts, [task.random_response(rng) for _ in prompts]))
    assert r1.mean() - random.mean() > 2.0
    # The confound is present but slight: P(longer preferred) under gold BT in (0.52, 0.7).
    l1, l2 = lengths, np.array([len(d.split()) for d in second])
    unequal = l1 != l2
    p_first = 1 / (1 + np.exp(-(r1 - r2)))
    p_longer = np.where(l1 > l2, p_first, 1 - p_first)[unequal].mean()
    assert 0.52 < p_longer < 0.7


def test_tokenizer_is_word_level_and_boundary_proof():
    from robustpo.testbed.reference import build_tokenizer

    tok = build_tokenizer()
    ids = tok(PROMPT + " apple river", add_special_tokens=False)["input_ids"]
    assert ids == tok(PROMPT + "apple river", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("document : the apple of river stone a summary : apple river".split())
    assert tok.unk_token_id not in ids
    assert tok.decode(tok("apple river the", add_special_tokens=False)["input_ids"]) == "apple river the"
    assert len(tok) == 4 + 3 + len(ITEMS) + len(FILLERS)

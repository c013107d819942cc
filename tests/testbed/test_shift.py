"""The testbed's out-of-distribution prompts, and that adding them changed nothing in distribution."""

import hashlib
import json

from robustpo.testbed import task


def test_in_distribution_generators_unchanged():
    """A fixed seed's prompts, demonstrations and gold rewards, hashed before the shift was added."""
    ps = task.generate_prompts(50, task.seeded_rng(0, "test"))
    rng = task.seeded_rng(1, "demo")
    demos = [task.demonstration(p, rng) for p in ps]
    gold = [round(g, 9) for g in task.gold_rewards(ps, demos)]
    digest = hashlib.sha256(json.dumps([ps, demos, gold]).encode()).hexdigest()
    assert ps[0] == "document: the tiger stone the with of to summary:"
    assert digest == "5e8885d9f0cd000a497138a4756032632449c173d4a5013c59b3201e0efd84b3"


def test_shifted_prompts_follow_the_documented_shift():
    prompts = task.shifted_test_prompts(0, 200)
    assert prompts == task.shifted_test_prompts(0, 200) and prompts != task.shifted_test_prompts(1, 200)
    assert not set(task.SHIFT_FILLERS) & (set(task.FILLERS) | set(task.ITEMS) | set(task.TEMPLATE_WORDS))
    lengths, counts = set(), set()
    for p in prompts:
        words, items = task.document_words(p), task.document_items(p)
        lengths.add(len(words))
        counts.add(len(items))
        assert len(set(items)) == len(items)
        assert all(w in task.SHIFT_FILLERS for w in words if w not in items)      # never a training filler
        # Gold is unchanged: the ideal summary is still every item once.
        assert task.gold_reward(p, task.ideal_response(p)) == task.COVERAGE_WEIGHT + task.LENGTH_BONUS * len(items)
    assert lengths == set(range(task.SHIFT_DOC_LENGTHS[0], task.SHIFT_DOC_LENGTHS[1] + 1))
    assert counts == set(range(task.SHIFT_ITEMS_PER_DOC[0], task.SHIFT_ITEMS_PER_DOC[1] + 1))
    in_dist = task.generate_prompts(200, task.seeded_rng(0, "test"))
    assert min(map(len, map(task.document_words, prompts))) > max(map(len, map(task.document_words, in_dist)))


def test_reference_tokenizer_reads_shift_fillers_as_unknown():
    from robustpo.testbed.reference import build_tokenizer

    tok = build_tokenizer()
    p = task.shifted_test_prompts(0, 1)[0]
    ids = tok(p, add_special_tokens=False)["input_ids"]
    n_fillers = sum(w in task.SHIFT_FILLERS for w in task.document_words(p))
    assert ids.count(tok.unk_token_id) == n_fillers > 0

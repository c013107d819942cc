"""The truncation rule and the collated batch layout."""

import pytest

from robustpo.data.collate import collate_pairs
from robustpo.data.schema import validate_rows
from robustpo.data.tokenize import tokenize_pairs
from robustpo.logprobs import IGNORE_INDEX


def _tok(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_truncation_prompt_left_first_then_responses(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt = "Question: what is 1 plus 2?\nAnswer: " * 6
    rows, _ = validate_rows([{"prompt": prompt, "chosen": " 1 plus 2 is 3." * 4, "rejected": " no."}], source="x")
    p, c = _tok(tok, prompt), _tok(tok, " 1 plus 2 is 3." * 4) + [tok.eos_token_id]
    max_length, max_prompt = 24, 10
    assert len(p) > max_prompt and len(c) > max_length - max_prompt  # both rules apply
    items, stats = tokenize_pairs(rows, tok, max_length=max_length, max_prompt_length=max_prompt)
    it = items[0]
    assert it["prompt_ids"] == p[-max_prompt:]          # left-truncated: the end of the prompt survives
    assert it["chosen_ids"] == c[:max_length - max_prompt]  # right-truncated
    assert it["rejected_ids"] == _tok(tok, " no.") + [tok.eos_token_id]  # short enough: untouched
    assert (stats.prompt_truncated, stats.response_truncated) == (1, 1)


def test_pairs_identical_after_truncation_are_dropped(tiny_tokenizer):
    rows, _ = validate_rows([{"prompt": "Q", "chosen": " same start then A", "rejected": " same start then B"},
                             {"prompt": "Q", "chosen": " a", "rejected": " b"}], source="x")
    items, stats = tokenize_pairs(rows, tiny_tokenizer, max_length=3, max_prompt_length=1)
    assert stats.dropped_identical_after_truncation == 1 and [i["index"] for i in items] == [1]


def test_collated_layout(tiny_tokenizer):
    """Rows 0..B-1 are prompt+chosen, B..2B-1 prompt+rejected; labels only on responses."""
    rows, _ = validate_rows([{"prompt": "Q one", "chosen": " yes", "rejected": " no thanks",
                              "chosen_rewards": [1.0, 2.0], "rejected_rewards": [0.0, 0.5]},
                             {"prompt": "Q two longer", "chosen": " a", "rejected": " b"}
                             | {"chosen_rewards": [0.0, 0.0], "rejected_rewards": [1.0, 1.0]}], source="x")
    items, _ = tokenize_pairs(rows, tiny_tokenizer, max_length=32, max_prompt_length=16)
    batch = collate_pairs(items, tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    for i, it in enumerate(items):
        for row, side in ((i, "chosen_ids"), (i + 2, "rejected_ids")):
            seq = it["prompt_ids"] + it[side]
            assert batch["input_ids"][row, :len(seq)].tolist() == seq
            labels = batch["labels"][row].tolist()
            assert labels[:len(it["prompt_ids"])] == [IGNORE_INDEX] * len(it["prompt_ids"])
            assert labels[len(it["prompt_ids"]):len(seq)] == it[side]
            assert set(labels[len(seq):]) <= {IGNORE_INDEX}
    assert batch["chosen_rewards"].tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert batch["chosen_lengths"].tolist() == [len(it["chosen_ids"]) for it in items]


def test_conversational_rows_use_the_chat_template(tiny_tokenizer):
    rows, _ = validate_rows([{"prompt": [{"role": "user", "content": "hi"}],
                              "chosen": [{"role": "assistant", "content": "hello"}],
                              "rejected": [{"role": "assistant", "content": "bye"}]}], source="x")
    items, _ = tokenize_pairs(rows, tiny_tokenizer, max_length=64, max_prompt_length=32)
    assert tiny_tokenizer.decode(items[0]["prompt_ids"]) == "<|user|>hi</s><|assistant|>"
    assert tiny_tokenizer.decode(items[0]["chosen_ids"]) == "hello</s>"


def test_max_prompt_length_must_leave_room(tiny_tokenizer):
    from robustpo.errors import ConfigError

    rows, _ = validate_rows([{"prompt": "Q", "chosen": "a", "rejected": "b"}], source="x")
    with pytest.raises(ConfigError, match="max_prompt_length"):
        tokenize_pairs(rows, tiny_tokenizer, max_length=8, max_prompt_length=8)


class _Specials:
    """The fixture tokenizer with other special-token settings (a BOS-adding or an EOS-less one)."""

    def __init__(self, tokenizer, *, add_bos_token: bool, eos: bool):
        self._tok, self.add_bos_token = tokenizer, add_bos_token
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id if eos else None
        self.chat_template = getattr(tokenizer, "chat_template", None)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)


@pytest.mark.parametrize("add_bos_token,eos", [(False, True), (True, True), (False, False), (True, False)])
def test_training_pairs_and_family_texts_get_the_same_ids(tiny_tokenizer, add_bos_token, eos):
    """tokenize_pairs (training) and rewards.family.encode_texts (scoring) share one rule: the
    longer response of a pair comes out with the same ids both ways, truncated or not."""
    from robustpo.rewards.family import encode_texts

    tok = _Specials(tiny_tokenizer, add_bos_token=add_bos_token, eos=eos)
    long_prompt = "Question: what is 1 plus 2?\nAnswer: " * 6
    raw = [{"prompt": long_prompt, "chosen": " 1 plus 2 is 3." * 4, "rejected": " no."},   # both rules apply
           {"prompt": "Q one", "chosen": " yes it is, very much so", "rejected": " no"},  # response cut only
           {"prompt": long_prompt, "chosen": " a", "rejected": " b"},                     # prompt cut only
           {"prompt": "Q", "chosen": " fits", "rejected": " also"}]                       # untouched
    rows, _ = validate_rows(raw, source="x")
    max_length, max_prompt = 24, 10
    items, stats = tokenize_pairs(rows, tok, max_length=max_length, max_prompt_length=max_prompt)
    assert stats.prompt_truncated >= 2 and stats.response_truncated >= 2
    ids, prompt_lengths = encode_texts(tok, [r["prompt"] for r in raw], [r["chosen"] for r in raw],
                                       max_length=max_length, max_prompt_length=max_prompt, with_prompt_lengths=True)
    assert ids == [it["prompt_ids"] + it["chosen_ids"] for it in items]
    assert prompt_lengths == [len(it["prompt_ids"]) for it in items]
    starts_with_bos = [it["prompt_ids"][0] == tok.bos_token_id for it in items]
    assert all(starts_with_bos) if add_bos_token else not any(starts_with_bos)
    assert all((it["rejected_ids"][-1] == tiny_tokenizer.eos_token_id) == eos for it in items[1:])

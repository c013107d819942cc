"""Formats, canonical rows, and every bad input named by file, row and field."""

import pytest

from robustpo.data.formats import split_implicit
from robustpo.data.schema import load_preferences
from robustpo.errors import DataError

from testdata import HH_DATA, needs_hh_data

GOOD = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}


def test_implicit_prompt_split_reproduces_both_texts():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: fine thanks"
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: go away"
    prompt, c, r = split_implicit(chosen, rejected)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:"
    assert (c, r) == (" fine thanks", " go away")
    # Responses that start alike: the split is still at the Assistant marker, not mid-word.
    prompt, c, r = split_implicit("\n\nHuman: x\n\nAssistant: I am sure", "\n\nHuman: x\n\nAssistant: I am not")
    assert prompt.endswith("Assistant:") and c == " I am sure"


@needs_hh_data
def test_real_hh_rlhf_file():
    """2,312 pairs; 4 have an empty chosen reply (an error unless drop_empty)."""
    with pytest.raises(DataError, match=r"row 87, field 'chosen': empty response"):
        load_preferences(str(HH_DATA))
    rows, report = load_preferences(str(HH_DATA), drop_empty=True)
    assert report.rows_read == 2312 and report.dropped_empty == 4 and len(rows) == 2308
    assert report.formats == {"implicit": 2308}
    assert all(r["prompt"].endswith("\n\nAssistant:") for r in rows)


def test_three_formats_are_detected(write_jsonl):
    msgs = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    path = write_jsonl([
        GOOD,
        {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": msgs("a"), "rejected": msgs("b")},
        {"chosen": [{"role": "user", "content": "q"}, *msgs("a")],
         "rejected": [{"role": "user", "content": "q"}, *msgs("b")]},
    ])
    rows, report = load_preferences(str(path))
    assert report.formats == {"explicit": 1, "implicit": 1, "conversational": 2}
    assert rows[3]["prompt"] == [{"role": "user", "content": "q"}]
    assert rows[3]["chosen"] == msgs("a")


@pytest.mark.parametrize("bad,row_no,field,message", [
    ({"prompt": "Q?", "rejected": "no"}, 2, "chosen", "missing field"),
    ({"prompt": "Q?", "chosen": 3, "rejected": "no"}, 2, "chosen", "expected a string"),
    ({"prompt": "Q?", "chosen": "   ", "rejected": "no"}, 2, "chosen", "empty response"),
    ({"prompt": "Q?", "chosen": "a", "rejected": "b", "chosen_rewards": [1.0]}, 2, "rejected_rewards", "missing field"),
    ({"prompt": "Q?", "chosen": "a", "rejected": "b", "chosen_rewards": [1.0, float("nan")],
      "rejected_rewards": [0.0, 0.0]}, 2, "chosen_rewards", "finite"),
    ({"prompt": "Q?", "chosen": "a", "rejected": "b", "chosen_rewards": ["x"], "rejected_rewards": [0.0]},
     2, "chosen_rewards", "finite"),
    ({"chosen": "just text", "rejected": "other text"}, 2, "prompt", "no 'prompt' field"),
    ({"prompt": "Q?", "chosen": [{"role": "assistant"}], "rejected": "b"}, 2, "chosen", "message 0"),
])
def test_bad_rows_name_file_row_and_field(write_jsonl, bad, row_no, field, message):
    path = write_jsonl([GOOD, bad])
    with pytest.raises(DataError) as e:
        load_preferences(str(path))
    text = str(e.value)
    assert text.startswith(f"{path}, row {row_no}, field '{field}': ")
    assert message in text
    assert "\n" not in text


def test_rewards_of_inconsistent_length(write_jsonl):
    path = write_jsonl([{**GOOD, "chosen_rewards": [1, 2], "rejected_rewards": [0, 0]},
                        {**GOOD, "chosen_rewards": [1, 2, 3], "rejected_rewards": [0, 0, 0]}])
    with pytest.raises(DataError, match=r"row 2, field 'chosen_rewards': has 3 rewards, earlier rows have K=2"):
        load_preferences(str(path))


def test_identical_pairs_dropped_with_count_or_error_when_strict(write_jsonl):
    path = write_jsonl([GOOD, {"prompt": "Q?", "chosen": "same", "rejected": "same"}])
    rows, report = load_preferences(str(path))
    assert len(rows) == 1 and report.dropped_identical == 1
    with pytest.raises(DataError, match=r"row 2, field 'rejected': chosen and rejected are identical"):
        load_preferences(str(path), strict=True)


def test_single_number_rewards_mean_one_member(write_jsonl):
    rows, report = load_preferences(str(write_jsonl([{**GOOD, "chosen_rewards": 1.5, "rejected_rewards": -1}])))
    assert report.num_members == 1 and rows[0]["chosen_rewards"] == [1.5]

"""The collated batch, on a hand-built example: 2 pairs, 2 reference samples each.

Every expected tensor below is written out by hand from these items (P = the tiny tokenizer's
pad id, I = IGNORE_INDEX). tests/data/test_tokenize.py::test_collated_layout covers the
chosen/rejected rows of tokenized text; tests/test_prefix_sharing.py that both layouts give
the same log-probs through a model.

    pair 0: prompt [11, 12]  chosen [21, 22, 23]  rejected [31]            samples [41], [42, 43]
    pair 1: prompt [13]      chosen [24]          rejected [32, 33, 34, 35] samples [44, 45, 46], [47]

The layout, B = 2 pairs, M = 2 samples: sequence 0, 1 = chosen of pair 0, 1; 2, 3 = rejected;
4, 5 = the samples of pair 0; 6, 7 = those of pair 1.
"""

import pytest
import torch

from robustpo.data.collate import collate_pairs, collate_shared, sequence_index, split_sequences
from robustpo.logprobs import IGNORE_INDEX as I


def hand_items(samples=True):
    items = [{"index": 7, "prompt_ids": [11, 12], "chosen_ids": [21, 22, 23], "rejected_ids": [31],
              "reference_sample_ids": [[41], [42, 43]], "chosen_rewards": [1.0, 2.0], "rejected_rewards": [0.5, 0.0]},
             {"index": 3, "prompt_ids": [13], "chosen_ids": [24], "rejected_ids": [32, 33, 34, 35],
              "reference_sample_ids": [[44, 45, 46], [47]], "chosen_rewards": [3.0, 4.0], "rejected_rewards": [1.5, 1.0]}]
    if not samples:
        for it in items:
            del it["reference_sample_ids"]
    return items


def test_one_row_per_sequence_padding_masks_and_labels(tiny_tokenizer):
    P = tiny_tokenizer.pad_token_id
    batch = collate_pairs(hand_items(), P)
    # T = 5, the longest sequence (prompt + chosen of pair 0, prompt + rejected of pair 1): right-padded
    assert batch["input_ids"].tolist() == [
        [11, 12, 21, 22, 23],   # chosen 0
        [13, 24, P, P, P],      # chosen 1
        [11, 12, 31, P, P],     # rejected 0
        [13, 32, 33, 34, 35],   # rejected 1
        [11, 12, 41, P, P],     # sample 0 of pair 0
        [11, 12, 42, 43, P],    # sample 1 of pair 0
        [13, 44, 45, 46, P],    # sample 0 of pair 1
        [13, 47, P, P, P],      # sample 1 of pair 1
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                                                [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]
    # labels: the response tokens only; the prompt and the padding are ignored
    assert batch["labels"].tolist() == [[I, I, 21, 22, 23], [I, 24, I, I, I], [I, I, 31, I, I], [I, 32, 33, 34, 35],
                                        [I, I, 41, I, I], [I, I, 42, 43, I], [I, 44, 45, 46, I], [I, 47, I, I, I]]
    # each response token is predicted by the position before it: flat index row·T + (position − 1)
    T = 5
    want = [(0, 1, 21), (0, 2, 22), (0, 3, 23), (1, 0, 24), (2, 1, 31), (3, 0, 32), (3, 1, 33), (3, 2, 34),
            (3, 3, 35), (4, 1, 41), (5, 1, 42), (5, 2, 43), (6, 0, 44), (6, 1, 45), (6, 2, 46), (7, 0, 47)]
    got = sorted(zip(batch["segment"].tolist(), batch["pred_index"].tolist(), batch["targets"].tolist()))
    assert got == [(row, row * T + pos, tok) for row, pos, tok in want]
    assert batch["num_sequences"] == 8 and batch["num_reference_samples"] == 2


def test_side_fields_ride_along_per_pair(tiny_tokenizer):
    batch = collate_pairs(hand_items(), tiny_tokenizer.pad_token_id)
    assert batch["index"].tolist() == [7, 3]
    assert batch["chosen_lengths"].tolist() == [3, 1] and batch["rejected_lengths"].tolist() == [1, 4]
    assert batch["chosen_rewards"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert batch["rejected_rewards"].tolist() == [[0.5, 0.0], [1.5, 1.0]]


def test_without_samples_only_chosen_then_rejected_rows(tiny_tokenizer):
    P = tiny_tokenizer.pad_token_id
    batch = collate_pairs(hand_items(samples=False), P)
    assert batch["input_ids"].tolist() == [[11, 12, 21, 22, 23], [13, 24, P, P, P], [11, 12, 31, P, P],
                                           [13, 32, 33, 34, 35]]
    assert batch["num_sequences"] == 4 and batch["num_reference_samples"] == 0


def test_samples_must_be_equally_many(tiny_tokenizer):
    items = hand_items()
    items[1]["reference_sample_ids"] = [[44]]
    with pytest.raises(ValueError, match="same number of reference samples"):
        collate_pairs(items, tiny_tokenizer.pad_token_id)


def test_prefix_shared_row_positions_and_block_mask(tiny_tokenizer):
    P = tiny_tokenizer.pad_token_id
    batch = collate_shared(hand_items(), P)
    # one row per pair: prompt, chosen, rejected, sample 0, sample 1; T = 10 (pair 1: 1 + 1 + 4 + 3 + 1)
    assert batch["input_ids"].tolist() == [[11, 12, 21, 22, 23, 31, 41, 42, 43, P],
                                           [13, 24, 32, 33, 34, 35, 44, 45, 46, 47]]
    # each response restarts right after its prompt
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 2, 2, 3, 0], [0, 1, 1, 2, 3, 4, 1, 2, 3, 1]]
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 10, 10) and mask.dtype == torch.bool
    m = mask[0, 0]
    # pair 0: the prompt is 0-1, chosen 2-4, rejected 5, samples 6 and 7-8, padding 9
    assert m[1].nonzero().flatten().tolist() == [0, 1]             # the prompt: causal
    assert m[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]    # last chosen token: prompt + chosen
    assert m[5].nonzero().flatten().tolist() == [0, 1, 5]          # rejected: prompt + itself, no chosen
    assert m[8].nonzero().flatten().tolist() == [0, 1, 7, 8]       # sample 1: prompt + itself
    assert m[9].nonzero().flatten().tolist() == [9]                # padding: itself only
    # targets: the first token of a block is predicted by the last prompt position (1 in row 0, 0 in row 1)
    T = 10
    got = sorted(zip(batch["segment"].tolist(), batch["pred_index"].tolist(), batch["targets"].tolist()))
    want = [(0, 1, 21), (0, 2, 22), (0, 3, 23), (2, 1, 31), (4, 1, 41), (5, 1, 42), (5, 7, 43),
            (1, T + 0, 24), (3, T + 0, 32), (3, T + 2, 33), (3, T + 3, 34), (3, T + 4, 35),
            (6, T + 0, 44), (6, T + 6, 45), (6, T + 7, 46), (7, T + 0, 47)]
    assert got == sorted(want)
    assert batch["num_sequences"] == 8


def test_both_layouts_number_the_sequences_alike(tiny_tokenizer):
    """Sequence s holds the same response tokens, in the same order, in either layout."""
    unshared, shared = (f(hand_items(), tiny_tokenizer.pad_token_id) for f in (collate_pairs, collate_shared))
    for s in range(8):
        a = unshared["targets"][unshared["segment"] == s].tolist()
        b = shared["targets"][shared["segment"] == s].tolist()
        assert a == b and a, s


def test_split_sequences_gives_chosen_rejected_samples(tiny_tokenizer):
    """Per-sequence values split by pair: here each sequence's sum of response token ids, from
    the labels, against the same sums of the hand-built items."""
    for layout in (collate_pairs, collate_shared):
        batch = layout(hand_items(), tiny_tokenizer.pad_token_id)
        sums = torch.zeros(8, dtype=torch.long).index_add(0, batch["segment"], batch["targets"])   # (S,)
        chosen, rejected, samples = split_sequences(sums, batch)
        assert chosen.tolist() == [21 + 22 + 23, 24]
        assert rejected.tolist() == [31, 32 + 33 + 34 + 35]
        assert samples.tolist() == [[41, 42 + 43], [44 + 45 + 46, 47]]
    # trailing dimensions are kept: (S, K) -> (B, K), (B, K), (B, M, K)
    values = torch.arange(16.0).view(8, 2)
    chosen, rejected, samples = split_sequences(values, batch)
    assert chosen.tolist() == [[0, 1], [2, 3]] and rejected.tolist() == [[4, 5], [6, 7]]
    assert samples.shape == (2, 2, 2) and samples[1, 0].tolist() == [12, 13]


def test_split_without_samples_and_sequence_index(tiny_tokenizer):
    batch = collate_pairs(hand_items(samples=False), tiny_tokenizer.pad_token_id)
    chosen, rejected, samples = split_sequences(torch.tensor([5.0, 6.0, 7.0, 8.0]), batch)
    assert chosen.tolist() == [5.0, 6.0] and rejected.tolist() == [7.0, 8.0] and samples is None
    # B = 3, M = 2: chosen b -> b, rejected b -> 3 + b, sample m of pair b -> 6 + 2b + m
    assert [sequence_index(3, 2, b, k) for b in range(3) for k in range(4)] == \
        [0, 3, 6, 7, 1, 4, 8, 9, 2, 5, 10, 11]

"""Tokenized pairs -> one batch with chosen and rejected together (one forward for both).

Two layouts, both described to the model by flat response targets (logprobs.ResponseTargets:
`pred_index`, `targets`, `segment`, `num_sequences`); sequence s is chosen of pair b for
s = b, rejected for s = B + b, and reference sample m for s = 2B + b·M + m (`sequence_index`;
`split_sequences` splits per-sequence values back into chosen / rejected / samples;
`pair_layout` / `split_pairs` are the same layout without samples, for lists scored outside a batch).

- `collate_pairs`: one row per sequence (prompt + response), right-padded, 2-D attention mask.
- `collate_shared` (prefix sharing): one row per pair, prompt + chosen + rejected (+ samples),
  with a boolean 4-D block mask (True = may attend) in which each response sees the prompt and itself, never
  another response, and position ids that restart each response right after the prompt.
  The prompt, usually the longest part, is computed once instead of twice.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from robustpo.data.tokenize import TokenizedPair
from robustpo.logprobs import IGNORE_INDEX, shared_prefix_targets, targets_from_labels


def sequence_index(num_pairs: int, num_samples: int, pair: int, k: int) -> int:
    """The batch layout: the sequence that holds response `k` of pair `pair` (k = 0 chosen,
    1 rejected, 2 + m reference sample m), in a batch of B = `num_pairs` pairs with
    M = `num_samples` samples each: b, B + b, 2B + b·M + m. `split_sequences` is its inverse."""
    B, M = num_pairs, num_samples
    return pair if k == 0 else B + pair if k == 1 else 2 * B + pair * M + (k - 2)


class PairSequences(NamedTuple):
    chosen: torch.Tensor                 # (B, ...)
    rejected: torch.Tensor               # (B, ...)
    samples: torch.Tensor | None         # (B, M, ...), None when the batch has no reference samples


def split_sequences(values: torch.Tensor, batch: dict) -> PairSequences:
    """Per-sequence values of a collated batch (S, ...) (log-probs, rewards), S = (2 + M)·B, as
    (chosen (B, ...), rejected (B, ...), samples (B, M, ...) or None): the layout of
    `sequence_index`, with B and M read from the batch. Views, not copies."""
    B, M = batch["index"].shape[0], batch["num_reference_samples"]
    samples = values[2 * B:].view(B, M, *values.shape[1:]) if M else None
    return PairSequences(*split_pairs(values[:2 * B], B), samples)


# The same layout without samples (M = 0), for per-response lists built outside a batch (texts
# scored by a reward family, confound values): chosen of pair b at b, rejected at N + b.
def pair_layout(chosen: list, rejected: list) -> list:
    """Per-response values of N pairs in the batch layout: the N chosen, then the N rejected.
    Pass the same list twice for what both responses share (prompts, row numbers)."""
    return [*chosen, *rejected]


def split_pairs(values, num_pairs: int):
    """The inverse of `pair_layout`: values (2N, ...) (a tensor or a list) -> (chosen (N, ...),
    rejected (N, ...))."""
    if len(values) != 2 * num_pairs:
        raise ValueError(f"{len(values)} values for {num_pairs} pairs: expected {2 * num_pairs}")
    return values[:num_pairs], values[num_pairs:]


def _responses(it: TokenizedPair) -> list[list[int]]:
    return [it["chosen_ids"], it["rejected_ids"], *it.get("reference_sample_ids", [])]


def _num_samples(items: list[TokenizedPair]) -> int:
    m = len(items[0].get("reference_sample_ids", []))
    if any(len(it.get("reference_sample_ids", [])) != m for it in items):
        raise ValueError("every row of a batch must carry the same number of reference samples")
    return m


def _side_fields(items: list[TokenizedPair], M: int) -> dict:
    """Per-pair tensors that ride along: lengths, rewards, cached reference log-probs."""
    batch = {
        "index": torch.tensor([it["index"] for it in items]),                         # (B,)
        "chosen_lengths": torch.tensor([len(it["chosen_ids"]) for it in items]),      # (B,)
        "rejected_lengths": torch.tensor([len(it["rejected_ids"]) for it in items]),  # (B,)
        "num_reference_samples": M,
    }
    for key in ("chosen_rewards", "rejected_rewards", "reference_chosen_logps", "reference_rejected_logps",
                "reference_sample_logps"):
        if key in items[0]:
            batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)  # (B,) or (B, K|M)
    return batch


def _targets_fields(t) -> dict:
    return {"pred_index": t.pred_index, "targets": t.targets, "segment": t.segment,
            "num_sequences": t.num_sequences}


def collate_pairs(items: list[TokenizedPair], pad_id: int) -> dict:
    """One row per sequence: B chosen rows, B rejected rows, then B·M sample rows."""
    B, M = len(items), _num_samples(items)
    seqs: list[tuple[list[int], list[int]]] = [([], [])] * ((2 + M) * B)
    for b, it in enumerate(items):
        for k, response in enumerate(_responses(it)):
            seqs[sequence_index(B, M, b, k)] = (it["prompt_ids"], response)
    T = max(len(p) + len(r) for p, r in seqs)
    input_ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)     # (S, T)
    attention_mask = torch.zeros((len(seqs), T), dtype=torch.long)       # (S, T)
    labels = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)  # (S, T)
    for i, (p, r) in enumerate(seqs):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        attention_mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(r)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            **_targets_fields(targets_from_labels(labels)), **_side_fields(items, M)}


def collate_shared(items: list[TokenizedPair], pad_id: int) -> dict:
    """One row per pair: prompt, then each response block; additive 4-D block mask."""
    B, M = len(items), _num_samples(items)
    T = max(len(it["prompt_ids"]) + sum(map(len, _responses(it))) for it in items)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)             # (B, T)
    position_ids = torch.zeros((B, T), dtype=torch.long)                 # (B, T)
    allowed = torch.zeros((B, T, T), dtype=torch.bool)                   # (B, T, T) query x key
    causal = torch.ones((T, T), dtype=torch.bool).tril()                 # (T, T)
    for b, it in enumerate(items):
        p = len(it["prompt_ids"])
        input_ids[b, :p] = torch.tensor(it["prompt_ids"])
        position_ids[b, :p] = torch.arange(p)
        allowed[b, :p, :p] = causal[:p, :p]
        off = p
        for block in _responses(it):
            n = len(block)
            input_ids[b, off:off + n] = torch.tensor(block)
            position_ids[b, off:off + n] = torch.arange(p, p + n)
            allowed[b, off:off + n, :p] = True                               # sees the prompt
            allowed[b, off:off + n, off:off + n] = causal[:n, :n]            # and itself, causally
            off += n
        allowed[b, off:, off:] = torch.eye(T - off, dtype=torch.bool)        # padding: itself only (no NaN rows)

    def segment_of(b: int, k: int) -> int:
        return sequence_index(B, M, b, k)

    targets = shared_prefix_targets([len(it["prompt_ids"]) for it in items], [_responses(it) for it in items],
                                    T, (2 + M) * B, segment_of)
    return {"input_ids": input_ids, "attention_mask": allowed[:, None], "position_ids": position_ids,  # (B, 1, T, T)
            **_targets_fields(targets), **_side_fields(items, M)}

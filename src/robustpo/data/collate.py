"""Tokenized pairs -> one padded batch, chosen and rejected together.

Layout of a batch of B pairs (one forward for both sides):
  rows 0..B-1        prompt + chosen
  rows B..2B-1       prompt + rejected
  rows 2B..2B+B·M-1  prompt + reference sample (only when the data carry M reference samples)
Right padding; `labels` is -100 on prompt and padding (logprobs.IGNORE_INDEX).
"""

from __future__ import annotations

import torch

from robustpo.logprobs import IGNORE_INDEX


def _pad(seqs: list[list[int]], prompt_lens: list[int], pad_id: int):
    T = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)     # (N, T)
    attention_mask = torch.zeros((len(seqs), T), dtype=torch.long)       # (N, T)
    labels = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)  # (N, T)
    for i, (s, p) in enumerate(zip(seqs, prompt_lens)):
        input_ids[i, :len(s)] = torch.tensor(s)
        attention_mask[i, :len(s)] = 1
        labels[i, p:len(s)] = torch.tensor(s[p:])
    return input_ids, attention_mask, labels


def collate_pairs(items: list[dict], pad_id: int) -> dict:
    seqs, prompt_lens = [], []
    for side in ("chosen_ids", "rejected_ids"):
        for it in items:
            seqs.append(it["prompt_ids"] + it[side])
            prompt_lens.append(len(it["prompt_ids"]))
    n_samples = len(items[0].get("reference_sample_ids", []))
    for it in items:
        if len(it.get("reference_sample_ids", [])) != n_samples:
            raise ValueError("every row of a batch must carry the same number of reference samples")
        for s in it.get("reference_sample_ids", []):
            seqs.append(it["prompt_ids"] + s)
            prompt_lens.append(len(it["prompt_ids"]))
    input_ids, attention_mask, labels = _pad(seqs, prompt_lens, pad_id)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "index": torch.tensor([it["index"] for it in items]),                         # (B,)
        "chosen_lengths": torch.tensor([len(it["chosen_ids"]) for it in items]),      # (B,)
        "rejected_lengths": torch.tensor([len(it["rejected_ids"]) for it in items]),  # (B,)
        "num_reference_samples": n_samples,
    }
    for key in ("chosen_rewards", "rejected_rewards"):
        if key in items[0]:
            batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)   # (B, K)
    for key in ("reference_chosen_logps", "reference_rejected_logps"):
        if key in items[0]:
            batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)   # (B,)
    if "reference_sample_logps" in items[0]:
        batch["reference_sample_logps"] = torch.tensor(
            [it["reference_sample_logps"] for it in items], dtype=torch.float32)         # (B, M)
    return batch

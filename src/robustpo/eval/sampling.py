"""Sampling from, and scoring with, any `transformers` causal LM.

Two rules keep the numbers honest:
- Sampling is plain ancestral sampling (top_k=0, top_p=1 by default, the model's own
  generation config ignored), so that samples come from π itself and the Monte-Carlo KL
  estimate E_π[log π − log π_ref] is unbiased. With temperature ≠ 1 or top_p < 1 the
  samples come from a different distribution; the eval output says which settings it used.
- A response's log-probability is always recomputed by one scoring pass (prompt + response
  ids, right padded, `robustpo.logprobs.sequence_logps`), never read from `generate`'s
  scores: policy and reference are then scored by identical code on identical token ids.

Prompts are tokenised as the model would see them alone (`tokenizer(prompt)`, special tokens
included); responses without special tokens, followed by EOS when the response ended.
Chat prompts (lists of messages) go through the tokenizer's chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robustpo.errors import RobustpoError
from robustpo.logprobs import IGNORE_INDEX, sequence_logps


@dataclass
class Sample:
    prompt_index: int
    text: str
    token_ids: list[int]   # response ids, EOS included when `ended`
    ended: bool            # False: cut at max_new_tokens


def load_causal_lm(path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local folder or hub id, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)
    except OSError as e:
        raise RobustpoError(f"cannot load a causal LM from '{path}': {e}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Prompt ids as the training data path makes them (robustpo.data.tokenize)."""
    if isinstance(prompt, list):  # chat messages: the template brings its own special tokens
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def encode_prompts(tokenizer, prompts: list) -> list[list[int]]:
    """`encode_prompt` for many prompts; plain strings go through the tokenizer in one batch."""
    if all(isinstance(p, str) for p in prompts):
        return tokenizer(list(prompts))["input_ids"] if prompts else []
    return [encode_prompt(tokenizer, p) for p in prompts]


def encode_response(tokenizer, response: str, *, add_eos: bool = True) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if add_eos else ids


@torch.no_grad()
def sample_responses(model, tokenizer, prompts: list, *, n: int = 1, max_new_tokens: int = 64,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                     batch_size: int = 64) -> list[Sample]:
    """`n` samples per prompt (prompt-major order). temperature 0 means greedy."""
    from transformers import GenerationConfig

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen = GenerationConfig(
        do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        top_k=0 if temperature > 0 else None, top_p=top_p if temperature > 0 else None,
        max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
    encoded = encode_prompts(tokenizer, prompts)
    jobs = [(i, ids) for i, ids in enumerate(encoded) for _ in range(n)]
    device = next(model.parameters()).device
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            width = max(len(ids) for _, ids in batch)
            # Left padding: every prompt ends at the same column, where generation starts.
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in batch], device=device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch], device=device)
            out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen)
            for (index, _), row in zip(batch, out[:, width:].tolist()):
                ended = eos in row
                ids = row[:row.index(eos) + 1] if ended else row
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                samples.append(Sample(index, text, ids, ended))
    return samples


@torch.no_grad()
def score_logps(model, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                pad_token_id: int, batch_size: int = 64) -> torch.Tensor:
    """(N,) float32 sums of response-token log-probs, log π(y | x)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        pids, rids = prompt_ids[start:start + batch_size], response_ids[start:start + batch_size]
        width = max(len(p) + len(r) for p, r in zip(pids, rids))
        ids = torch.full((len(pids), width), pad_token_id, dtype=torch.long)
        labels = torch.full((len(pids), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(pids), width), dtype=torch.long)
        for b, (p, r) in enumerate(zip(pids, rids)):
            ids[b, :len(p) + len(r)] = torch.tensor(p + r)
            labels[b, len(p):len(p) + len(r)] = torch.tensor(r, dtype=torch.long)
            attention[b, :len(p) + len(r)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
        out.append(sequence_logps(logits, labels.to(device)).logps.cpu())
    return torch.cat(out) if out else torch.zeros(0)


def check_same_vocabulary(tokenizer_a, tokenizer_b, *, names=("policy", "reference")) -> None:
    """Log-ratios compare the same token ids under two models: the vocabularies must match."""
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise RobustpoError(f"the {names[0]} and {names[1]} tokenizers differ; "
                            "KL and log-ratios need one shared vocabulary")

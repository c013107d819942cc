"""The model forward the trainers use: token ids -> response log-probs, in one module.

Wrapping the language model in a module whose forward returns the log-probs lets
`accelerate` (DDP, FSDP, DeepSpeed) wrap one forward that covers everything with
gradients, and lets us project to the vocabulary only where a response token is predicted.
"""

from __future__ import annotations

import torch
from torch import nn

from robustpo.logprobs import response_positions_logps, sequence_logps
from robustpo.models import transformers_model

# Families whose causal-LM forward is exactly `lm_head(final hidden state)`: no logit
# scaling or soft-capping, so projecting selected positions gives the same log-probs.
PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "olmo", "olmo2",
                    "smollm3", "gemma", "starcoder2", "stablelm", "mixtral", "qwen2_moe", "qwen3_moe"}


def supports_response_only(lm) -> bool:
    hf = transformers_model(lm)
    return (getattr(hf.config, "model_type", None) in PLAIN_HEAD_TYPES
            and hasattr(hf, hf.base_model_prefix) and hf.get_output_embeddings() is not None)


class ResponseLogps(nn.Module):
    """forward(input_ids, attention_mask, labels) -> (logps (N,), lengths (N,))."""

    def __init__(self, lm, response_only_projection: bool = True):
        super().__init__()
        self.lm = lm
        self.response_only = response_only_projection and supports_response_only(lm)

    def forward(self, input_ids, attention_mask, labels, position_ids=None):
        if self.response_only:
            hf = transformers_model(self.lm)
            backbone = getattr(hf, hf.base_model_prefix)
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state                       # (N, T, H)
            out = response_positions_logps(hidden, labels, hf.get_output_embeddings())
        else:
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).logits                                   # (N, T, V)
            out = sequence_logps(logits, labels)
        return out.logps, out.lengths


@torch.no_grad()
def frozen_logps(module: ResponseLogps, batch: dict, device) -> torch.Tensor:
    """Log-probs of a frozen model (the reference) for a collated batch."""
    logps, _ = module(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                      batch["labels"].to(device))
    return logps

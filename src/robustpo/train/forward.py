"""The model forward the trainers use: a collated batch -> response log-probs, in one module.

Wrapping the language model in a module whose forward returns the log-probs lets
`accelerate` (DDP, FSDP, DeepSpeed) wrap one forward that covers everything with
gradients, and lets us project to the vocabulary only where a response token is predicted.
Both batch layouts of data/collate.py (one row per sequence, or prefix sharing with a 4-D
block mask) arrive as the same flat response targets.
"""

from __future__ import annotations

import torch
from torch import nn

from robustpo.logprobs import ResponseTargets, logits_logps, projected_logps
from robustpo.models import transformers_model

# Families whose causal-LM forward is exactly `lm_head(final hidden state)`: no logit
# scaling or soft-capping, so projecting selected positions gives the same log-probs.
PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "olmo", "olmo2",
                    "smollm3", "gemma", "starcoder2", "stablelm", "mixtral", "qwen2_moe", "qwen3_moe"}
# Attention kernels that take an arbitrary additive 4-D mask (prefix sharing needs one).
MASK_4D_ATTENTION = {"sdpa", "eager"}
MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "pred_index", "targets", "segment", "num_sequences")


def model_inputs(batch: dict) -> dict:
    """The part of a collated batch that the forward takes."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


def supports_response_only(lm) -> bool:
    hf = transformers_model(lm)
    return (getattr(hf.config, "model_type", None) in PLAIN_HEAD_TYPES
            and hasattr(hf, hf.base_model_prefix) and hf.get_output_embeddings() is not None)


def supports_prefix_sharing(lm) -> bool:
    """Tested per family in tests/test_prefix_sharing.py: SDPA and eager take our 4-D mask."""
    hf = transformers_model(lm)
    return getattr(hf.config, "_attn_implementation", None) in MASK_4D_ATTENTION


class ResponseLogps(nn.Module):
    """forward(**model_inputs(batch)) -> (logps (S,), lengths (S,)) for the S sequences of a batch."""

    def __init__(self, lm, response_only_projection: bool = True):
        super().__init__()
        self.lm = lm
        self.response_only = response_only_projection and supports_response_only(lm)

    def forward(self, input_ids, attention_mask, pred_index, targets, segment, num_sequences, position_ids=None):
        hf = transformers_model(self.lm)
        if attention_mask.dim() == 4 and hf.config._attn_implementation != "sdpa":
            # SDPA takes the boolean block mask as it is; eager attention adds its mask to the
            # scores, so it needs the additive form (0 where allowed, dtype-min elsewhere).
            dtype = next(hf.parameters()).dtype
            additive = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
            attention_mask = additive.masked_fill(~attention_mask, torch.finfo(dtype).min)
        response = ResponseTargets(pred_index, targets, segment, int(num_sequences))
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        if self.response_only:
            hidden = getattr(hf, hf.base_model_prefix)(**kwargs).last_hidden_state   # (R, T, H)
            return projected_logps(hidden, hf.get_output_embeddings(), response)
        # self.lm, not hf: with LoRA the PEFT wrapper's forward is the one that applies it.
        return logits_logps(self.lm(**kwargs).logits, response)                      # (R, T, V) inside


@torch.no_grad()
def frozen_logps(module: ResponseLogps, batch: dict, device) -> torch.Tensor:
    """Log-probs of a frozen model (the reference) for a collated batch."""
    inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in model_inputs(batch).items()}
    return module(**inputs)[0]

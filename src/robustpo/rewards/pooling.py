"""How a reward model's outputs become one reward per response: its head and its pooling.

Two heads (`reward.head`):
- `score` (the default): a sequence-classification model (`AutoModelForSequenceClassification`)
  whose `score` head maps each position's hidden state to K numbers;
- `lm`: a causal LM (`AutoModelForCausalLM`) whose per-token score is its own log-probability
  of the response token, log π_θ(y_t | x, y_<t), times a learned scale s: a likelihood reward,
  initialised from the policy's reference it starts from what the reference already knows
  about good responses (the same form as SimPO's implicit reward; Meng et al. 2024).

Pooling (`reward.pooling`) over the response's tokens (EOS included):
- `last`: the score at the last non-pad token, the transformers convention and what
  `model(...).logits` returns (score head only);
- `mean`: the mean of the per-token scores; `sum`: their sum.

A reward that adds up per-token evidence (an item named, a word invented, a repeat) is a sum
over positions; last-token pooling must squeeze all of it through one hidden state. `mean`,
`sum` and the `lm` head need the prompt/response boundary, which robustpo knows (it tokenizes
prompt and response separately) but a bare `model(...)` call does not, so a member's head,
pooling and scale are written into its `config.json` under `robustpo_reward` (absent for a
plain last-token score model) and applied by `robustpo.rewards.load_family(...).score`.
"""

from __future__ import annotations

import torch

HEADS = ("score", "lm")
POOLINGS = ("last", "mean", "sum")
CONFIG_KEY = "robustpo_reward"


def reward_spec(config) -> dict:
    """{"head", "pooling", "scale"} of a saved member (defaults: a last-token score model)."""
    spec = getattr(config, CONFIG_KEY, None) if not isinstance(config, dict) else config.get(CONFIG_KEY)
    return {"head": "score", "pooling": "last", "scale": 1.0, **(spec or {})}


def per_position_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(S, T, K) float32: the score head at every position of a sequence-classification model."""
    from robustpo.models import transformers_model

    hf = transformers_model(model)
    score = getattr(hf, "score", None)
    backbone = getattr(hf, getattr(hf, "base_model_prefix", ""), None)
    if score is None or backbone is None:
        raise ValueError(f"{type(hf).__name__} has no `score` head over a backbone: reward.pooling mean/sum needs "
                         "a decoder sequence-classification model (Llama, Qwen2, GPT-2, GPT-NeoX, ...); use last")
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state   # (S, T, H)
    return score(hidden).float()                                                               # (S, T, K)


def response_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                     *, head: str, pooling: str) -> torch.Tensor:
    """(S, K) float32 rewards before any scale. input_ids, attention_mask, response_mask: (S, T),
    right padded; response_mask is 1 on the response's tokens (EOS included)."""
    if head == "lm":
        from robustpo.logprobs import IGNORE_INDEX, sequence_logps

        labels = torch.where(response_mask.bool(), input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # (S, T)
        seq = sequence_logps(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)
        return (seq.mean_logps if pooling == "mean" else seq.logps)[:, None]                       # (S, 1)
    if pooling == "last":
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    scores = per_position_scores(model, input_ids, attention_mask)           # (S, T, K)
    mask = response_mask.to(scores.dtype)[..., None]                          # (S, T, 1)
    total = (scores * mask).sum(dim=1)                                        # (S, K)
    return total if pooling == "sum" else total / mask.sum(dim=1).clamp(min=1)

"""Logits + labels -> response log-probabilities.

This is the only place where labels are shifted and masked. Convention (the same as
`transformers`): `labels[b, t]` is the token at position t, or -100 where it is not a
response token (prompt, padding). The logit at position t−1 predicts the token at t, so
`token_logps[b, t-1] = log softmax(logits[b, t-1])[labels[b, t]]`.

All maths runs in float32 whatever the model dtype: a bf16 log-softmax summed over a few
hundred tokens loses whole nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class SequenceLogps:
    """Per-row response log-probs. `token_logps` is 0 wherever `mask` is False."""

    token_logps: torch.Tensor  # (B, T-1) float32
    mask: torch.Tensor         # (B, T-1) bool: True at response tokens
    logps: torch.Tensor        # (B,) sum over response tokens
    lengths: torch.Tensor      # (B,) number of response tokens n(y)

    @property
    def mean_logps(self) -> torch.Tensor:
        """(B,) per-token mean; 0 for a row with no response token (never NaN)."""
        return self.logps / self.lengths.clamp(min=1)


def gather_token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[targets] without materialising a second (N, V) float32 tensor.

    logits: (..., V), targets: (...) valid token ids. Returns (...) float32.
    logsumexp + gather needs one float32 copy of the logits instead of log_softmax's two.
    """
    logits = logits.float()                                           # (..., V)
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)  # (...)
    return picked - torch.logsumexp(logits, dim=-1)                   # (...)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> SequenceLogps:
    """Response log-probs of each row.

    logits: (B, T, V) for input positions 0..T-1; labels: (B, T) with IGNORE_INDEX off-response.
    """
    shift_logits = logits[:, :-1, :]                       # (B, T-1, V) predicts positions 1..T-1
    shift_labels = labels[:, 1:]                           # (B, T-1)
    mask = shift_labels != IGNORE_INDEX                    # (B, T-1)
    safe_labels = shift_labels.masked_fill(~mask, 0)       # (B, T-1) any valid id; masked below
    token_logps = gather_token_logps(shift_logits, safe_labels)  # (B, T-1)
    token_logps = token_logps.masked_fill(~mask, 0.0)      # (B, T-1)
    return SequenceLogps(
        token_logps=token_logps,
        mask=mask,
        logps=token_logps.sum(-1),                         # (B,)
        lengths=mask.sum(-1),                              # (B,)
    )


def response_positions_logps(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                             *, chunk_size: int = 4096) -> SequenceLogps:
    """Like `sequence_logps`, but projects to the vocabulary only at response positions.

    hidden: (B, T, H) final hidden states; the vocabulary projection is the largest matmul
    of a small model and most positions are prompt or padding, so we select the positions
    whose next token is a response token, then project those alone, in chunks to bound
    the (N, V) float32 memory.
    """
    B, T, _ = hidden.shape
    shift_labels = labels[:, 1:]                           # (B, T-1)
    mask = shift_labels != IGNORE_INDEX                    # (B, T-1)
    rows, cols = mask.nonzero(as_tuple=True)               # (N,), (N,)
    selected = hidden[:, :-1, :][rows, cols]               # (N, H)
    targets = shift_labels[rows, cols]                     # (N,)
    picked = []
    for start in range(0, selected.shape[0], chunk_size):
        logits = lm_head(selected[start:start + chunk_size])             # (n, V)
        picked.append(gather_token_logps(logits, targets[start:start + chunk_size]))
    flat = torch.cat(picked) if picked else hidden.new_zeros(0, dtype=torch.float32)  # (N,)
    token_logps = hidden.new_zeros(B, T - 1, dtype=torch.float32)        # (B, T-1)
    token_logps = token_logps.index_put((rows, cols), flat)              # (B, T-1)
    return SequenceLogps(token_logps=token_logps, mask=mask, logps=token_logps.sum(-1), lengths=mask.sum(-1))

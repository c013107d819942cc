"""Logits + labels -> response log-probabilities.

This is the only place where labels are shifted and masked. Convention (the same as
`transformers`): `labels[b, t]` is the token at position t, or -100 where it is not a
response token (prompt, padding). The logit at position t−1 predicts the token at t, so
`token_logps[b, t-1] = log softmax(logits[b, t-1])[labels[b, t]]`.

The trainers use a flat form of the same thing, `ResponseTargets`: for every response
token, the flat position whose output predicts it, the token, and which sequence it
belongs to. It describes both batch layouts: one row per sequence (`targets_from_labels`)
and prefix sharing, where prompt, chosen and rejected share one row and the first rejected
token is predicted from the last prompt position, not from the position before it
(`shared_prefix_targets`).

All maths runs in float32 whatever the model dtype: a bf16 log-softmax summed over a few
hundred tokens loses whole nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustpo.head_logps import recomputed_head_logps

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


@dataclass
class ResponseTargets:
    """Flat description of every response token of a batch (N tokens, S sequences)."""

    pred_index: torch.Tensor  # (N,) flat index (row * T + position) of the output that predicts the token
    targets: torch.Tensor     # (N,) the token id
    segment: torch.Tensor     # (N,) which sequence (0..S-1) the token belongs to
    num_sequences: int


def targets_from_labels(labels: torch.Tensor) -> ResponseTargets:
    """One row per sequence: position t−1 predicts labels[:, t]; row b is sequence b."""
    B, T = labels.shape
    mask = labels[:, 1:] != IGNORE_INDEX                   # (B, T-1)
    rows, cols = mask.nonzero(as_tuple=True)               # (N,), (N,)
    return ResponseTargets(pred_index=rows * T + cols, targets=labels[:, 1:][rows, cols], segment=rows,
                           num_sequences=B)


def shared_prefix_targets(prompt_lens: list[int], blocks: list[list[list[int]]], T: int,
                          num_sequences: int, segment_of) -> ResponseTargets:
    """Prefix sharing: row b holds prompt (length p) then blocks k = 0, 1, ... back to back.

    Token j of block k sits at position p + off_k + j; it is predicted by the position before
    it inside its block, and the block's first token by the last prompt position p − 1
    (a token with no predictor, when p = 0, is not scored, as in the unshared layout).
    `segment_of(b, k)` numbers the sequences.
    """
    pred, tgt, seg = [], [], []
    for b, (p, row_blocks) in enumerate(zip(prompt_lens, blocks)):
        off = p
        for k, block in enumerate(row_blocks):
            n = len(block)
            before = torch.arange(off - 1, off + n - 1)      # (n,) the position before each token
            if n:
                before[0] = p - 1                            # a block's first token follows the prompt
            keep = before >= 0
            pred.append(b * T + before[keep])
            tgt.append(torch.tensor(block, dtype=torch.long)[keep])
            seg.append(torch.full((int(keep.sum()),), segment_of(b, k), dtype=torch.long))
            off += n
    cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)  # noqa: E731
    return ResponseTargets(cat(pred), cat(tgt), cat(seg), num_sequences)


def segment_logps(token_logps: torch.Tensor, targets: ResponseTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) token log-probs -> per-sequence sums (S,) and token counts (S,); empty sequences give 0."""
    S = targets.num_sequences
    sums = token_logps.new_zeros(S).index_add(0, targets.segment, token_logps)           # (S,)
    lengths = torch.bincount(targets.segment, minlength=S)                                # (S,)
    return sums, lengths


# Above this many (response tokens × vocabulary) logits, `projected_logps` recomputes them in
# backward instead of keeping them (head_logps.py): 2**26 float32 = 256 MB, 2,048 response
# tokens at a 32k vocabulary or 512 at 128k. Under it the numbers are plain autograd's, as
# before; over it the kept logits would outweigh a small model's whole step.
RECOMPUTE_ABOVE = 2**26


def projected_logps(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: ResponseTargets,
                    *, chunk_size: int = 4096, recompute: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary projection only at the N predicting positions, in chunks; -> (sums, lengths).

    `recompute` None: when N × V > RECOMPUTE_ABOVE and the head is a plain `nn.Linear` whose
    whole weight is here. A LoRA-wrapped head keeps autograd, and so does a partitioned one
    (DeepSpeed ZeRO-3 gathers a weight only inside its module's own call, which the
    recomputing function does not make).
    """
    flat = hidden.flatten(0, 1)[targets.pred_index]                                       # (N, H)
    plain = (type(lm_head) is torch.nn.Linear and not hasattr(lm_head.weight, "ds_id")
             and tuple(lm_head.weight.shape) == (lm_head.out_features, lm_head.in_features))
    if recompute is None:
        recompute = plain and flat.shape[0] * lm_head.weight.shape[0] > RECOMPUTE_ABOVE
    if recompute:
        return segment_logps(recomputed_head_logps(flat, lm_head, targets.targets), targets)
    picked = [gather_token_logps(lm_head(flat[i:i + chunk_size]), targets.targets[i:i + chunk_size])
              for i in range(0, flat.shape[0], chunk_size)]
    token_logps = torch.cat(picked) if picked else hidden.new_zeros(0, dtype=torch.float32)  # (N,)
    return segment_logps(token_logps, targets)


def logits_logps(logits: torch.Tensor, targets: ResponseTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """Same from full logits (models whose head is not a plain projection); -> (sums, lengths)."""
    picked = gather_token_logps(logits.flatten(0, 1)[targets.pred_index], targets.targets)  # (N,)
    return segment_logps(picked, targets)

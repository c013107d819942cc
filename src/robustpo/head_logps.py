"""Token log-probs through the vocabulary projection, recomputed in backward.

Autograd through `log_softmax(hidden @ W.T)[target]` keeps every chunk's float32 logits
for the backward pass: (tokens × vocabulary) × 4 bytes, 1.6 GB for 3,200 response tokens
at a 128k vocabulary, more than the rest of a small model's step. This function keeps
only what the gradient needs besides the inputs: the per-token logsumexp. Backward
recomputes each chunk's logits (one more head matmul, +1/3 of the head's FLOPs) and uses

    d logp_i / d logits_i = onehot(target_i) − softmax(logits_i)

so at most one chunk of logits exists at any time, forward or backward.

The head runs in its weight dtype with autocast off, in both passes, so that backward
recomputes exactly the logits forward used; the weight gradient is accumulated in float32
across chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# One chunk's float32 logits: 2**24 elements = 64 MB (128 tokens at a 128k vocabulary).
CHUNK_ELEMENTS = 2**24


def chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // vocab)


class RecomputedHeadLogps(torch.autograd.Function):
    """(N, H) hidden, (V, H) weight, (V,) bias or None, (N,) targets -> (N,) float32 log-probs."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows):
        with torch.autocast(hidden.device.type, enabled=False):
            out, lse = hidden.new_empty(hidden.shape[0], dtype=torch.float32), []
            for i in range(0, hidden.shape[0], rows):
                logits = F.linear(hidden[i:i + rows].to(weight.dtype), weight, bias).float()   # (c, V)
                lse.append(torch.logsumexp(logits, -1))                                        # (c,)
                out[i:i + rows] = logits.gather(-1, targets[i:i + rows, None]).squeeze(-1) - lse[-1]
        ctx.save_for_backward(hidden, weight, bias, targets, torch.cat(lse) if lse else out)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        rows = ctx.rows
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        gb = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        with torch.autocast(hidden.device.type, enabled=False):
            for i in range(0, hidden.shape[0], rows):
                h = hidden[i:i + rows].to(weight.dtype)                                          # (c, H)
                g_out = grad[i:i + rows, None].float()                                            # (c, 1)
                logits = F.linear(h, weight, bias).float()                                        # (c, V)
                g = torch.exp(logits - lse[i:i + rows, None]).mul_(-g_out)                        # −g·softmax
                g.scatter_add_(-1, targets[i:i + rows, None], g_out)                              # +g·onehot
                if need_h:
                    gh[i:i + rows] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    gw.addmm_(g.t(), h.float())
                if need_b:
                    gb += g.sum(0)
        return (gh, gw.to(weight.dtype) if need_w else None, gb.to(bias.dtype) if need_b else None, None, None)


def recomputed_head_logps(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
    """(N, H) hidden states at the predicting positions -> (N,) float32 log-probs of `targets`."""
    return RecomputedHeadLogps.apply(hidden, head.weight, head.bias, targets, chunk_rows(head.weight.shape[0]))

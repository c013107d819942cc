"""The useful work of DPO training on preference pairs, and the machine's matmul peak.

Useful FLOPs of one pair (prompt p, chosen c, rejected r tokens) for a decoder of L layers,
hidden d, query width a = heads × head_dim, key/value width k = kv_heads × head_dim,
MLP width f (gated: three d×f matrices), vocabulary V:

    FLOPs = 3 × [ 2·M·U  +  4·L·a·A  +  2·d·V·R ]

- U = p + c + r: the unique tokens; the prompt is counted once (prefix sharing is the
  useful work, a second copy of the prompt is not).
- M = L·(d·a + 2·d·k + a·d + 3·d·f): the weights of the layers' matrix products; a token
  costs 2·M (one multiply and one add per weight). Embedding lookups cost nothing.
- A = the number of (query, key) pairs the causal mask allows, with the prompt shared:
  p(p+1)/2 + c·p + c(c+1)/2 + r·p + r(r+1)/2. Each costs 2·a for Q·Kᵀ and 2·a for
  softmax·V, in every layer.
- R = c + r: the positions that predict a response token, the only ones that need the
  vocabulary projection (2·d·V each).
- × 3: backward costs twice the forward (the gradients with respect to inputs and weights).

Not counted (they are small or not matrix products): norms, activations, rotary
embeddings, softmaxes, the optimizer, and the reference model (its log-probs are computed
once, before training, by every row that is timed without it).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from robustpo.head_logps import chunk_rows


def layer_weights(cfg) -> int:
    """M: the weights of all layers' matrix products of a Llama-style config."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    a, k = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    return cfg.num_hidden_layers * (d * a + 2 * d * k + a * d + 3 * d * f)


def pair_flops(cfg, p: int, c: int, r: int) -> int:
    """Useful fwd + bwd FLOPs of one pair (see the module docstring)."""
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    a = cfg.num_attention_heads * hd
    attended = p * (p + 1) // 2 + (c + r) * p + c * (c + 1) // 2 + r * (r + 1) // 2
    forward = (2 * layer_weights(cfg) * (p + c + r) + 4 * cfg.num_hidden_layers * a * attended
               + 2 * cfg.hidden_size * cfg.vocab_size * (c + r))
    return 3 * forward


def matmul_peak(shapes: list[tuple[int, int, int]], dtype=torch.float32, device="cpu",
                seconds: float = 0.5, trials: int = 5) -> float:
    """Best FLOP/s of `F.linear` (what nn.Linear runs) over (rows, in, out) shapes: each shape
    is timed in `trials` windows of `seconds / trials` after one untimed call, and the best
    window counts (a peak: a window that another process slowed down is not the machine's)."""
    best = 0.0
    for m, k, n in shapes:
        x = torch.randn(m, k, dtype=dtype, device=device)
        w = torch.randn(n, k, dtype=dtype, device=device)
        F.linear(x, w)
        for _ in range(trials):
            reps, start = 0, time.perf_counter()
            while True:
                F.linear(x, w)
                reps += 1
                if device == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                if elapsed >= seconds / trials:
                    break
            best = max(best, 2 * m * k * n * reps / elapsed)
    return best


def model_shapes(cfg, tokens: int, response_tokens: int) -> list[tuple[int, int, int]]:
    """The products of one step: the layer matrices over `tokens` rows, the head over the response
    at once and in the chunks that the recomputed head runs (a (tokens × vocabulary) output too
    large for the caches runs slower per FLOP than its chunks)."""
    d, f, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    return [(tokens, d, d), (tokens, d, f), (tokens, f, d), (response_tokens, d, V),
            (min(response_tokens, chunk_rows(V)), d, V)]

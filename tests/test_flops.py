"""benchmarks/flops.py: the useful-work count against a hand count, and the peak measurement."""

import sys
from types import SimpleNamespace

from testdata import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import flops  # noqa: E402


def test_pair_flops_equals_a_hand_count():
    """2 layers, hidden 8, 2 query heads and 1 key/value head of width 4, MLP 16, vocabulary 10;
    one pair: prompt 3, chosen 2, rejected 1 tokens.

    Weights of one layer's products: q 8×8 = 64, k 8×4 = 32, v 8×4 = 32, o 8×8 = 64,
    MLP gate, up, down 3 × 8×16 = 384; 576 per layer, 1152 for 2.
    Unique tokens 3 + 2 + 1 = 6 -> 2 × 1152 × 6 = 13,824.
    Keys each query sees (causal, prompt shared): prompt 1 + 2 + 3 = 6; chosen sees the
    prompt and itself so far, 4 + 5 = 9; rejected the prompt and itself, 4; 19 pairs in all.
    Q·Kᵀ and softmax·V: 2 × 8 + 2 × 8 = 32 per pair per layer -> 32 × 19 × 2 = 1,216.
    Head: the 3 positions that predict a response token, 2 × 8 × 10 each -> 480.
    Forward 13,824 + 1,216 + 480 = 15,520; with backward × 3 = 46,560."""
    cfg = SimpleNamespace(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1,
                          num_hidden_layers=2, vocab_size=10)
    assert flops.layer_weights(cfg) == 1152
    assert flops.pair_flops(cfg, 3, 2, 1) == 46_560


def test_pair_flops_agrees_with_a_real_llama_config():
    """The counter reads a transformers LlamaConfig, and its M is the model's layer matrices."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                      num_hidden_layers=2, vocab_size=50)
    model = LlamaForCausalLM(cfg)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and name != "lm_head")
    assert flops.layer_weights(cfg) == linear


def test_matmul_peak_is_a_rate():
    peak = flops.matmul_peak([(64, 32, 32)], seconds=0.05)
    assert 1e6 < peak < 1e15

"""Response log-probs: hand-computed values, masking, and the response-only projection."""

import math

import pytest
import torch

from robustpo.logprobs import IGNORE_INDEX, sequence_logps, targets_from_labels


def test_hand_values_and_shift():
    """Vocab 2, logits at every position [0, log 3] -> p(token 1) = 3/4, p(token 0) = 1/4.
    Row: tokens [0, 1, 0, 1], the prompt is token 0 alone (label −100).
    Predicted tokens at positions 1..3: 1, 0, 1 -> log(3/4) + log(1/4) + log(3/4) = −2.0499."""
    logits = torch.tensor([[0.0, math.log(3)]]).repeat(4, 1)[None]            # (1, 4, 2)
    labels = torch.tensor([[IGNORE_INDEX, 1, 0, 1]])
    out = sequence_logps(logits, labels)
    want = 2 * math.log(0.75) + math.log(0.25)
    assert out.logps.item() == pytest.approx(want, abs=1e-6)
    assert out.lengths.item() == 3
    assert out.mean_logps.item() == pytest.approx(want / 3, abs=1e-6)


def test_fully_masked_row_is_zero_not_nan():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX] * 5, [IGNORE_INDEX, IGNORE_INDEX, 3, 4, IGNORE_INDEX]])
    out = sequence_logps(logits, labels)
    assert out.logps[0].item() == 0.0 and out.mean_logps[0].item() == 0.0
    assert torch.isfinite(out.mean_logps).all()
    assert out.lengths.tolist() == [0, 2]


def test_bf16_logits_are_summed_in_float32():
    logits = torch.randn(1, 300, 50).bfloat16()
    labels = torch.randint(0, 50, (1, 300))
    out = sequence_logps(logits, labels)
    ref = torch.log_softmax(logits.float(), -1)[0, :-1].gather(-1, labels[0, 1:, None]).sum()
    assert out.logps.dtype == torch.float32
    assert out.logps.item() == pytest.approx(ref.item(), abs=1e-3)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_response_only_projection_equals_full_logits(arch, tiny_tokenizer):
    """Projecting only response positions gives the full forward's log-probs (to 1e-5)."""
    from robustpo.tiny import build_tiny_model
    from robustpo.train.forward import ResponseLogps

    model = build_tiny_model(tiny_tokenizer, arch, seed=0, hidden_size=32).eval()
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, len(tiny_tokenizer), (3, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0                      # right padding on one row
    labels = input_ids.clone()
    labels[:, :4] = IGNORE_INDEX                   # prompt
    labels[attention_mask == 0] = IGNORE_INDEX
    fast = ResponseLogps(model, response_only_projection=True)
    full = ResponseLogps(model, response_only_projection=False)
    assert fast.response_only and not full.response_only
    t = targets_from_labels(labels)
    with torch.no_grad():
        a, la = fast(input_ids, attention_mask, t.pred_index, t.targets, t.segment, t.num_sequences)
        b, lb = full(input_ids, attention_mask, t.pred_index, t.targets, t.segment, t.num_sequences)
    # And both equal the plain shifted computation from full logits.
    with torch.no_grad():
        plain = sequence_logps(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)
    assert torch.allclose(a, plain.logps, atol=1e-5)
    assert torch.allclose(a, b, atol=1e-5)
    assert la.tolist() == lb.tolist() == [8, 8, 5]

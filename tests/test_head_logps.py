"""The recomputed vocabulary projection (head_logps.py) against plain autograd: the same
response log-probs and the same gradients with respect to the hidden states, the head weight
and its bias, to 1e-5, with chunks that do not divide the token count and with prompt and
padding positions (label −100) that must take no part."""

import pytest
import torch

from robustpo import head_logps
from robustpo.logprobs import IGNORE_INDEX, projected_logps, targets_from_labels


def _case(bias: bool):
    g = torch.Generator().manual_seed(0)
    B, T, H, V = 3, 9, 6, 11
    hidden = torch.randn(B, T, H, generator=g, requires_grad=True)
    head = torch.nn.Linear(H, V, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=g))
        if bias:
            head.bias.copy_(torch.randn(V, generator=g))
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :4] = IGNORE_INDEX       # a prompt
    labels[1, 6:] = IGNORE_INDEX       # padding
    labels[2, :] = IGNORE_INDEX        # a row with no response token
    labels[2, 5] = 3
    return hidden, head, targets_from_labels(labels)


def _run(hidden, head, targets, recompute):
    sums, lengths = projected_logps(hidden, head, targets, recompute=recompute)
    weights = torch.tensor([1.0, -2.0, 0.5])  # a loss that is not a plain sum
    (sums * weights).sum().backward()
    grads = [hidden.grad.clone(), head.weight.grad.clone()] + ([head.bias.grad.clone()] if head.bias is not None else [])
    hidden.grad = None
    head.zero_grad(set_to_none=True)
    return sums.detach(), lengths, grads


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 4, 64])   # N = 5 + 5 + 1 = 11 response tokens: no chunk size divides it
def test_recomputed_head_equals_autograd(monkeypatch, bias, rows):
    hidden, head, targets = _case(bias)
    assert targets.targets.numel() == 11
    plain = _run(hidden, head, targets, recompute=False)
    monkeypatch.setattr(head_logps, "chunk_rows", lambda vocab: rows)
    chunked = _run(hidden, head, targets, recompute=True)
    torch.testing.assert_close(chunked[0], plain[0], atol=1e-5, rtol=0)
    assert chunked[1].tolist() == plain[1].tolist() == [5, 5, 1]
    for a, b in zip(chunked[2], plain[2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # positions that predict no response token (prompt, padding) get no gradient
    assert chunked[2][0][0, :3].abs().max() == 0 and chunked[2][0][1, 5:].abs().max() == 0


def _graph(out):
    """Every autograd node behind `out`."""
    seen, todo = [], [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.append(node)
            todo.extend(n for n, _ in node.next_functions)
    return seen


def test_recompute_is_chosen_by_size_and_keeps_no_logits(monkeypatch):
    """Auto mode: above RECOMPUTE_ABOVE logits the recomputing node is used, and what it
    saves for backward is the inputs and the (N,) logsumexp, no (N, V) tensor; at or below it,
    plain autograd."""
    from robustpo import logprobs

    hidden, head, targets = _case(False)
    N, V = 11, 11
    monkeypatch.setattr(logprobs, "RECOMPUTE_ABOVE", N * V - 1)
    nodes = [n for n in _graph(projected_logps(hidden, head, targets)[0]) if "RecomputedHeadLogps" in type(n).__name__]
    assert len(nodes) == 1
    saved = [tuple(t.shape) for t in nodes[0].saved_tensors if t is not None]   # None: no bias
    assert (N, V) not in saved and (N,) in saved and (V, head.in_features) in saved
    monkeypatch.setattr(logprobs, "RECOMPUTE_ABOVE", N * V)
    assert not any("RecomputedHeadLogps" in type(n).__name__ for n in _graph(projected_logps(hidden, head, targets)[0]))


def test_a_partitioned_head_keeps_its_module_call(monkeypatch):
    """Above the threshold, a head whose weight is not all here (DeepSpeed ZeRO-3 marks its
    parameters with `ds_id` and leaves them empty outside the module's own call) is still
    called as a module, so its gathering hooks run; the numbers are plain autograd's."""
    from robustpo import logprobs

    hidden, head, targets = _case(False)
    monkeypatch.setattr(logprobs, "RECOMPUTE_ABOVE", 0)
    head.weight.ds_id = 7
    calls = []
    head.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    nodes = _graph(projected_logps(hidden, head, targets)[0])
    assert calls and not any("RecomputedHeadLogps" in type(n).__name__ for n in nodes)

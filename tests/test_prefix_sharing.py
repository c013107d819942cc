"""Prefix sharing: one row per pair with a block mask gives the unshared log-probs."""

import pytest
import torch

from robustpo.data.collate import collate_pairs, collate_shared
from robustpo.train.forward import ResponseLogps, model_inputs


def items(seed=0):
    """Pairs of different prompt and response lengths (so rows pad differently), with 2 samples each."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(5, 300, (n,), generator=g).tolist()  # noqa: E731
    shapes = [(9, 4, 6), (3, 7, 2), (14, 1, 5)]
    return [{"index": i, "prompt_ids": rand(p), "chosen_ids": rand(c), "rejected_ids": rand(r),
             "reference_sample_ids": [rand(3), rand(5)]} for i, (p, c, r) in enumerate(shapes)]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_logps_equal_unshared(arch, attn, tiny_tokenizer):
    from robustpo.tiny import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, arch, seed=0, hidden_size=32).eval()
    model.set_attn_implementation(attn)
    batch = items()
    unshared, shared = collate_pairs(batch, 0), collate_shared(batch, 0)
    assert shared["input_ids"].shape[0] == 3 and unshared["input_ids"].shape[0] == 3 * 4
    # The shared layout computes each prompt once: fewer token positions in all.
    assert shared["attention_mask"].shape[-1] * 3 < unshared["input_ids"].numel()
    for response_only in (True, False):
        f = ResponseLogps(model, response_only_projection=response_only)
        with torch.no_grad():
            a, la = f(**model_inputs(unshared))
            b, lb = f(**model_inputs(shared))
        assert la.tolist() == lb.tolist() == [4, 7, 1, 6, 2, 5, 3, 5, 3, 5, 3, 5]
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_training_with_and_without_sharing_agrees(tmp_path, tiny_model_dir):
    """Same data, same steps: the two layouts give the same losses and (to float noise) weights."""
    import json

    from robustpo.config import RunConfig, from_dict
    from robustpo.train.preference import train_preference
    from testdata import TINY_PAIRS

    def run(name, sharing):
        cfg = from_dict(RunConfig, {
            "model": {"name_or_path": str(tiny_model_dir)},
            "data": {"train": str(TINY_PAIRS), "max_length": 48, "max_prompt_length": 24, "max_rows": 16},
            "loss": {"name": "dpo"},
            "train": {"output_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 3, "learning_rate": 1e-3,
                      "prefix_sharing": sharing}})
        result = train_preference(cfg)
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return result, rows

    a, rows_a = run("shared", True)
    b, rows_b = run("unshared", False)
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5)
        assert ra["logps/chosen"] == pytest.approx(rb["logps/chosen"], abs=1e-4)
    for (n, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-4), n


def test_length_grouping_is_a_permutation_with_similar_lengths():
    from robustpo.train.loop import epoch_order

    lengths = [(i * 37) % 101 for i in range(640)]
    order = epoch_order(640, seed=3, epoch=1, shuffle=True, lengths=lengths, group_size=8)
    assert sorted(order) == list(range(640))
    assert order == epoch_order(640, seed=3, epoch=1, shuffle=True, lengths=lengths, group_size=8)
    spread = lambda o: sum(max(lengths[i] for i in o[s:s + 8]) - min(lengths[i] for i in o[s:s + 8])  # noqa: E731
                           for s in range(0, 640, 8))
    plain = epoch_order(640, seed=3, epoch=1, shuffle=True)
    assert spread(order) < spread(plain) / 5

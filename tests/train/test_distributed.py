"""Two real processes (torchrun, gloo on CPU) give the single-process result for the same global batch."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from testdata import TINY_PAIRS, train_in_one_and_two_processes


def recipe(tmp_path, name, batch_size):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": "tiny:llama?hidden_size=32&num_layers=2", "tiny_vocab_size": 300},
        "data": {"train": str(TINY_PAIRS), "max_length": 48, "max_prompt_length": 24, "max_rows": 32},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(tmp_path / name), "batch_size": batch_size, "max_steps": 4,
                  "learning_rate": 1e-3, "warmup_ratio": 0.25}}))
    return path


def test_two_processes_equal_one(tmp_path):
    """1 process × 4 pairs and 2 processes × 2 pairs train on the same 4 pairs per step
    (length grouping and data order depend on the global batch only): the per-step loss
    and gradient norm agree, and so do the final weights (float noise of the all-reduce:
    a tolerance of 1e-5 on weights after 4 AdamW steps at lr 1e-3)."""
    _, two = train_in_one_and_two_processes(recipe(tmp_path, "one", 4), recipe(tmp_path, "two", 2))
    assert "2 processes (MULTI_CPU); global batch 4 pairs per step" in two.stdout

    rows = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("one", "two")]
    assert [r["step"] for r in rows[1]] == [1, 2, 3, 4]
    for a, b in zip(*rows):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    wa, wb = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("one", "two"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k
    # The reference log-probs, computed in two halves and gathered, equal the single-process ones.
    caches = [json.loads(next((tmp_path / n / "reference_cache").glob("*.json")).read_text()) for n in ("one", "two")]
    assert caches[0].keys() == caches[1].keys()
    for k in caches[0]:
        assert caches[1][k]["chosen"] == pytest.approx(caches[0][k]["chosen"], abs=1e-4)

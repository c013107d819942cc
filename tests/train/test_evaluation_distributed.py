"""Evaluation under two real processes (torchrun, gloo on CPU): each evaluates its share of the
eval pairs, and the gathered metrics equal the single-process ones."""

import json

import pytest
import yaml

from testdata import TINY_PAIRS, train_in_one_and_two_processes


def recipe(tmp_path, name, batch_size):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": "tiny:llama?hidden_size=32&num_layers=2", "tiny_vocab_size": 300},
        # 35 rows: 7 held out, 28 trained on. Shares of 4 and 3 eval pairs in batches of 3: the
        # second process runs a pair-less (weight 0) second batch to match the first's forwards.
        "data": {"train": str(TINY_PAIRS), "max_length": 48, "max_prompt_length": 24, "max_rows": 35,
                 "eval_fraction": 0.2},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(tmp_path / name), "batch_size": batch_size, "max_steps": 4, "eval_steps": 2,
                  "eval_batch_size": 3, "learning_rate": 1e-3, "warmup_ratio": 0.25,
                  "save_best": {"metric": "eval/loss", "mode": "min"}}}))
    return path


def test_two_processes_evaluate_like_one(tmp_path):
    train_in_one_and_two_processes(recipe(tmp_path, "one", 4), recipe(tmp_path, "two", 2))
    evals = [[r for r in map(json.loads, (tmp_path / n / "metrics.jsonl").read_text().splitlines())
              if "eval/loss" in r] for n in ("one", "two")]
    assert [r["step"] for r in evals[1]] == [2, 4]
    for a, b in zip(*evals):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], abs=1e-5), k
    assert (tmp_path / "two" / "best" / "model.safetensors").exists()

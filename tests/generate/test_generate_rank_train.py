"""End to end on CPU with tiny models: generate -> rank -> train with dpo."""

import importlib.util

import pytest

from genhelpers import HERE, PROMPT_TEXTS, read_jsonl, run_cli, write_jsonl


@pytest.mark.skipif(importlib.util.find_spec("robustpo.train.commands") is None,
                    reason="robustpo train is not in this checkout")
def test_generate_rank_train_dpo(tiny_policy_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPT_TEXTS * 2])
    samples, pairs = tmp_path / "samples.jsonl", tmp_path / "pairs.jsonl"
    assert run_cli(["generate", "--model", tiny_policy_dir, "--prompts", prompts, "--out", samples, "--n", "4",
                    "--max-new-tokens", "8", "--batch-size", "5", "--no-progress"]) == 0
    assert run_cli(["rank", "--judge", f"function:{HERE / 'judge_rules.py'}:longer_is_better", "--in", samples,
                    "--out", pairs, "--no-progress"]) == 0
    rows = read_jsonl(pairs)
    assert len(rows) >= 5
    for r in rows:  # best vs worst under "longer is better"
        assert len(r["chosen"]) >= len(r["rejected"]) and r["chosen"] != r["rejected"]
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(f"""
model:
  name_or_path: {tiny_policy_dir}
data:
  train: {pairs}
  max_length: 64
  max_prompt_length: 32
loss:
  name: dpo
  beta: 0.1
train:
  output_dir: {tmp_path / 'run'}
  epochs: 1
  batch_size: 4
  learning_rate: 1.0e-3
  warmup_ratio: 0.0
""")
    assert run_cli(["train", recipe]) == 0
    assert (tmp_path / "run" / "final" / "config.json").exists()
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert metrics and all(m.get("loss", 0.0) == m.get("loss", 0.0) for m in metrics)  # no NaN

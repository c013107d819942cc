"""`robustpo reward train` from a recipe with overrides; config errors; tokenization parity."""

import json

import pytest

from rewardtesting import TINY_REWARD_MODEL, write_rows
from robustpo.cli import main
from robustpo.config import load_config
from robustpo.errors import ConfigError
from robustpo.rewards.synthetic import make_pairs
from robustpo.train.reward import RewardRunConfig


def test_reward_train_command_with_overrides(tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", make_pairs(48, seed=4))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "model": {"name_or_path": TINY_REWARD_MODEL, "tiny_vocab_size": 300},
        "data": {"train": str(data), "max_length": 40, "max_prompt_length": 16},
        "train": {"output_dir": str(tmp_path / "out"), "epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
    }))
    assert main(["reward", "train", str(recipe), "--reward.family.size=2", "--reward.family.mode=seed",
                 "--reward.heldout_fraction=0.25", "--reward.center_coef=0.1"]) == 0
    out = capsys.readouterr().out
    assert "family of 2 (seed)" in out and "mean of members" in out and "disagreement over 2 members" in out
    manifest = json.loads((tmp_path / "out" / "family.json").read_text())
    assert [m["made"]["seed"] for m in manifest["members"]] == [0, 1]
    assert all(m["made"]["center_coef"] == 0.1 and m["data"]["pairs"] == 36 for m in manifest["members"])
    # Metrics of the loop, per member.
    lines = (tmp_path / "out" / "runs" / "member-1" / "metrics.jsonl").read_text().splitlines()
    assert {"loss", "accuracy", "margin"} <= set(json.loads(lines[-1]))


def test_reward_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="did you mean 'center_coef'"):
        load_config(None, ["--reward.centre_coef=0.1"], cls=RewardRunConfig)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: x.jsonl}\nreward: {family: {size: 3, mode: bagging}}\n")
    assert main(["reward", "train", str(recipe)]) == 2
    assert "reward.family.mode must be one of seed, bootstrap, subsets, multihead" in capsys.readouterr().err


def test_margin_column_is_checked(tmp_path):
    from robustpo.train.reward import train_reward_family
    from rewardtesting import reward_config

    rows = make_pairs(10, seed=1)
    for i, r in enumerate(rows):
        r["margin"] = 0.5 if i != 6 else "big"
    data = write_rows(tmp_path / "d.jsonl", rows)
    from robustpo.errors import DataError

    with pytest.raises(DataError, match=r"d.jsonl, row 7, field 'margin': reward.use_margin needs a finite number"):
        train_reward_family(reward_config(tmp_path / "out", data, size=1, use_margin=True))


def test_scoring_tokenization_matches_training(tiny_tokenizer):
    """family.score tokenizes prompt + response exactly as training's tokenize_pairs does (no
    truncation), including for chat-message rows."""
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.rewards.family import encode_texts

    rows = [{"prompt": "Question: what is 2 plus 2?\nAnswer:", "chosen": " 4.", "rejected": " 5.", "index": 0},
            {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}], "index": 1}]
    items, _ = tokenize_pairs(rows, tiny_tokenizer, max_length=64, max_prompt_length=32)
    for row, item in zip(rows, items):
        for side in ("chosen", "rejected"):
            (ids,) = encode_texts(tiny_tokenizer, [row["prompt"]], [row[side]], max_length=64, max_prompt_length=32)
            assert ids == item["prompt_ids"] + item[f"{side}_ids"]
    # Long texts: the prompt keeps its end, then the response its start.
    (ids,) = encode_texts(tiny_tokenizer, ["Question: " * 40], [" 4." * 40], max_length=20, max_prompt_length=8)
    full_prompt = tiny_tokenizer("Question: " * 40, add_special_tokens=False)["input_ids"]
    assert len(ids) == 20 and ids[:8] == full_prompt[-8:]


def test_reward_eval_command(bootstrap_family, tmp_path, capsys):
    """`reward eval` on pairs the family never saw: the same numbers as the Python API."""
    from robustpo.data.schema import load_preferences
    from robustpo.rewards.evaluate import evaluate_family

    data = write_rows(tmp_path / "new.jsonl", make_pairs(30, seed=9))
    assert main(["reward", "eval", "--family", str(bootstrap_family), "--data", str(data),
                 "--json", str(tmp_path / "m.json")]) == 0
    assert "mean of members" in capsys.readouterr().out
    written = json.loads((tmp_path / "m.json").read_text())
    rows, _ = load_preferences(str(data))
    direct = evaluate_family(bootstrap_family, rows)
    assert written["mean_of_members"]["accuracy"] == pytest.approx(direct["mean_of_members"]["accuracy"])
    assert written["members"]["member-2"]["pairs"] == 30

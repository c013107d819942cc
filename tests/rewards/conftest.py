"""Reward-model fixtures: synthetic pairs and small families trained once per session."""

import json
from pathlib import Path

import pytest

from robustpo.rewards.synthetic import make_pairs

TINY_REWARD_MODEL = "tiny:llama?hidden_size=64&num_layers=2"


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_config(out_dir, data, *, size=3, mode="bootstrap", epochs=3, heldout_fraction=0.25, **reward):
    from robustpo.config import from_dict
    from robustpo.train.reward import RewardRunConfig

    return from_dict(RewardRunConfig, {
        "model": {"name_or_path": TINY_REWARD_MODEL, "tiny_vocab_size": 512},
        "data": {"train": str(data), "max_length": 40, "max_prompt_length": 16},
        "reward": {"heldout_fraction": heldout_fraction, "family": {"size": size, "mode": mode}, **reward},
        "train": {"output_dir": str(out_dir), "seed": 0, "epochs": epochs, "batch_size": 8, "learning_rate": 2e-3,
                  "warmup_ratio": 0.0, "logging_steps": 4},
    })


@pytest.fixture(scope="session")
def synthetic_path(tmp_path_factory):
    """240 review pairs, preferred = more positive words; 10% of labels flipped (ceiling ≈ 0.9)."""
    return write_rows(tmp_path_factory.mktemp("syn") / "pairs.jsonl", make_pairs(240, seed=0, flip_rate=0.1))


@pytest.fixture(scope="session")
def bootstrap_family(tmp_path_factory, synthetic_path):
    from robustpo.train.reward import train_reward_family

    return train_reward_family(reward_config(tmp_path_factory.mktemp("fam") / "family", synthetic_path))


@pytest.fixture(scope="session")
def multihead_family(tmp_path_factory, synthetic_path):
    from robustpo.train.reward import train_reward_family

    return train_reward_family(reward_config(tmp_path_factory.mktemp("mh") / "family", synthetic_path,
                                             mode="multihead"))

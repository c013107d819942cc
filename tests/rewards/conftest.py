"""Reward-model fixtures: synthetic pairs and small families trained once per session."""

import pytest

from rewardtesting import reward_config, write_rows
from robustpo.rewards.synthetic import make_pairs


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

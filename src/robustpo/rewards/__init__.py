"""Reward models and families of them: train (train/reward.py), load, score a dataset.

    from robustpo.rewards import load_family, score_dataset, train_reward_family
    family = load_family("runs/reward-family")        # .members, .score(prompts, responses) -> (N, K)
    score_dataset("runs/reward-family", "pairs.jsonl", "scored.jsonl", normalize="standardize")
"""

from robustpo.rewards.family import FamilyError, RewardFamily, assemble_family, load_family
from robustpo.rewards.objective import bradley_terry_loss
from robustpo.rewards.score import score_dataset


def train_reward_family(cfg, *, resume: bool = False, overwrite: bool = False):
    """Train the family of `cfg` (a `RewardRunConfig`, a dict of recipe sections, or a recipe
    path); return its folder (train.output_dir)."""
    from robustpo.config import from_dict, load_config
    from robustpo.train.reward import RewardRunConfig, train_reward_family as train

    if isinstance(cfg, dict):
        cfg = from_dict(RewardRunConfig, cfg)
    elif not isinstance(cfg, RewardRunConfig):
        cfg = load_config(cfg, cls=RewardRunConfig)
    return train(cfg, resume=resume, overwrite=overwrite)


__all__ = ["FamilyError", "RewardFamily", "assemble_family", "bradley_terry_loss", "load_family", "score_dataset",
           "train_reward_family"]

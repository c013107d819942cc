"""Reward models and families of them: train (train/reward.py), load, evaluate, score a dataset.

    from robustpo.rewards import load_family, score_dataset, train_reward_family
    family_dir = train_reward_family("recipes/reward/tiny.yaml")   # or a RewardRunConfig, or a dict
    family = load_family(family_dir)                 # .members, .score(prompts, responses) -> (N, K)
    score_dataset(family_dir, "pairs.jsonl", "scored.jsonl", normalize="standardize")

Names resolve lazily: `robustpo.rewards.commands` is imported by the CLI at start-up and
must not pull in torch for `robustpo --help`.
"""

import importlib

_EXPORTS = {
    "FamilyError": "family", "RewardFamily": "family", "assemble_family": "family", "load_family": "family",
    "bradley_terry_loss": "objective", "evaluate_family": "evaluate", "score_dataset": "score",
}
__all__ = [*_EXPORTS, "train_reward_family"]


def train_reward_family(cfg, *, resume: bool = False, overwrite: bool = False):
    """Train the family of `cfg` (a `RewardRunConfig`, a dict of recipe sections, or a recipe
    path); return its folder (train.output_dir)."""
    from robustpo.config import from_dict, load_config
    from robustpo.rewards.plan import RewardRunConfig
    from robustpo.train.reward import train_reward_family as train   # the one import of train/: the trainer

    if isinstance(cfg, dict):
        cfg = from_dict(RewardRunConfig, cfg)
    elif not isinstance(cfg, RewardRunConfig):
        cfg = load_config(cfg, cls=RewardRunConfig)
    return train(cfg, resume=resume, overwrite=overwrite)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"robustpo.rewards.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'robustpo.rewards' has no attribute '{name}'")

"""Reward families from Python, like `robustpo reward train | score | eval` (robustpo.api):

    fam = robustpo.reward.train("recipes/reward/tiny.yaml", overrides={"train.epochs": 2})
    robustpo.reward.eval(fam.family_dir, "validation.jsonl")
    robustpo.reward.score(fam.family_dir, "pairs.jsonl", "scored.jsonl", normalize="standardize")

The models themselves (load_family, evaluate_family, score_dataset) are in robustpo.rewards.
"""

from robustpo.api import reward_eval as eval, reward_score as score, reward_train as train

__all__ = ["train", "score", "eval"]

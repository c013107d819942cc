"""robustpo: robust offline preference optimization of language models.

    import robustpo
    run = robustpo.train("recipe.yaml", overrides=["--train.learning_rate=1e-4"])   # robustpo train
    fam = robustpo.reward.train("reward.yaml")                                       # robustpo reward train
    robustpo.eval({"dpo": run.run_dir}, reference="ref/", prompts="test.jsonl", gold="testbed")

(robustpo.api; the names load on first use, so `import robustpo` stays light.)
"""

import importlib

__version__ = "0.1.0"

_API = ("train", "eval", "reward", "api")


def __getattr__(name: str):
    if name in _API:   # packages/modules: importing one makes it an attribute, so this runs once
        return importlib.import_module(f"robustpo.{name}")
    raise AttributeError(f"module 'robustpo' has no attribute '{name}'")

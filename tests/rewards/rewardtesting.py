"""Helpers for the reward tests (a uniquely named module: `conftest` names clash across folders)."""

import json
from pathlib import Path

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


class Interrupted(Exception):
    pass


class StopsAfter:
    """The real family, interrupted (as by Ctrl-C or a crash) after `calls` scoring batches."""

    def __init__(self, family, calls):
        self.family, self.calls, self.texts = family, calls, 0
        self.names = family.names
        self.name = family.name

    def fingerprint(self):
        return self.family.fingerprint()

    def score(self, prompts, responses, **kw):
        if self.calls == 0:
            raise Interrupted
        self.calls -= 1
        self.texts += len(responses)
        return self.family.score(prompts, responses, **kw)

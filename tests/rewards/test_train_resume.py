"""`robustpo reward train` killed with SIGKILL inside the second member resumes with --resume:
the finished member is kept as it was, the interrupted one continues from its last checkpoint,
and both end with the weights of an uninterrupted run (same seed, same CPU result)."""

import json
import os
import subprocess
import sys

import torch

from rewardtesting import TINY_REWARD_MODEL, write_rows
from testdata import kill_when
from robustpo.rewards.synthetic import make_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def recipe(tmp_path, data, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({
        "model": {"name_or_path": TINY_REWARD_MODEL, "tiny_vocab_size": 400},
        "data": {"train": str(data), "max_length": 40, "max_prompt_length": 16},
        "reward": {"heldout_fraction": 0.1, "family": {"size": 2, "mode": "bootstrap"}},
        "train": {"output_dir": str(tmp_path / name), "epochs": 2, "batch_size": 4, "learning_rate": 1e-3,
                  "warmup_ratio": 0.1, "save_steps": 4, "logging_steps": 1},
    }))
    return path


def weights(family_dir, member):
    from safetensors.torch import load_file

    return load_file(family_dir / "members" / member / "model.safetensors")


def test_reward_train_killed_then_resumed_matches_uninterrupted(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", make_pairs(160, seed=6))
    cmd = [sys.executable, "-m", "robustpo.cli", "reward", "train"]
    subprocess.run(cmd + [str(recipe(tmp_path, data, "full"))], check=True, env=ENV, capture_output=True)

    killed = recipe(tmp_path, data, "killed")
    proc = subprocess.Popen(cmd + [str(killed)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "runs" / "member-1" / "checkpoints" / "step-20"
    kill_when(proc, marker.exists, timeout=300)
    assert not (tmp_path / "killed" / "family.json").exists()
    first = (tmp_path / "killed" / "members" / "member-0" / "model.safetensors").stat().st_mtime_ns

    resumed = subprocess.run(cmd + [str(killed), "--resume"], env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "member-0: already trained, kept" in resumed.stdout and "resuming from" in resumed.stdout
    assert (tmp_path / "killed" / "members" / "member-0" / "model.safetensors").stat().st_mtime_ns == first
    for member in ("member-0", "member-1"):
        a, b = weights(tmp_path / "full", member), weights(tmp_path / "killed", member)
        assert all(torch.equal(a[k], b[k]) for k in a), member
    full = json.loads((tmp_path / "full" / "family.json").read_text())["heldout"]
    again = json.loads((tmp_path / "killed" / "family.json").read_text())["heldout"]
    assert full["mean_of_members"] == again["mean_of_members"]

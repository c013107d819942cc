"""A run killed with SIGKILL resumes with --resume and ends with the same weights."""

import json
import os
import subprocess
import sys

import torch
import yaml

from testdata import TINY_PAIRS, kill_when


def recipe(tmp_path, model_dir, out):
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(TINY_PAIRS), "max_length": 48, "max_prompt_length": 24},
        "loss": {"name": "dpo"},
        "regularizers": [{"name": "bcr", "budget": 0.0}],
        "train": {"output_dir": str(tmp_path / out), "batch_size": 4, "max_steps": 48, "save_steps": 4,
                  "learning_rate": 1e-3, "warmup_ratio": 0.25, "reference_cache_dir": str(tmp_path / "cache")},
    }))
    return path


def train_cmd(path, *extra):
    return [sys.executable, "-m", "robustpo.cli", "train", str(path), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "final" / "model.safetensors")


def test_kill_9_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    subprocess.run(train_cmd(recipe(tmp_path, tiny_model_dir, "full")), check=True, env=ENV,
                   capture_output=True)

    killed = recipe(tmp_path, tiny_model_dir, "killed")
    proc = subprocess.Popen(train_cmd(killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    # well into training, with later checkpoints still to come
    kill_when(proc, (ckpts / "step-12").exists, timeout=120)
    assert not (tmp_path / "killed" / "final").exists()

    resumed = subprocess.run(train_cmd(killed, "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout

    full, again = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert full.keys() == again.keys()
    for name in full:
        assert torch.equal(full[name], again[name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 49))  # replayed steps are not logged twice


def test_resume_without_checkpoint_starts_over(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "fresh")
    out = subprocess.run(train_cmd(path, "--resume", "--train.max_steps=2"), env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fresh" / "final" / "model.safetensors").exists()

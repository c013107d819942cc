"""A run killed with SIGKILL during an evaluation, and again just after one, resumes with each
evaluation in metrics.jsonl exactly once, with the values of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from testdata import TINY_PAIRS, kill_when


def recipe(tmp_path, model_dir, out):
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(model_dir)},
        # 48 eval pairs one at a time: an evaluation lasts long enough to be killed inside
        "data": {"train": str(TINY_PAIRS), "max_length": 48, "max_prompt_length": 24, "eval_fraction": 0.5},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(tmp_path / out), "batch_size": 4, "max_steps": 16, "save_steps": 4,
                  "eval_steps": 4, "eval_batch_size": 1, "learning_rate": 1e-3,
                  "save_best": {"metric": "eval/loss", "mode": "min"},
                  "reference_cache_dir": str(tmp_path / "cache")},
    }))
    return path


def train_cmd(path, *extra):
    return [sys.executable, "-m", "robustpo.cli", "train", str(path), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def rows(run_dir):
    """The complete rows of metrics.jsonl (a running trainer may be writing the last one)."""
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]


def eval_rows(run_dir):
    return [r for r in rows(run_dir) if "eval/loss" in r]


def kill_at_line(proc, text: str, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as its stdout prints a line starting with `text`."""
    deadline = time.time() + timeout
    for line in proc.stdout:
        if line.startswith(text):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        assert time.time() < deadline, f"no line '{text}' within {timeout} s"
    raise AssertionError(f"the run ended without printing '{text}'")


def test_kill_during_and_after_evaluation_then_resume_keeps_each_eval_once(tmp_path, tiny_model_dir):
    full = subprocess.run(train_cmd(recipe(tmp_path, tiny_model_dir, "full")), env=ENV, capture_output=True,
                          text=True)
    assert full.returncode == 0, full.stderr
    expected = eval_rows(tmp_path / "full")
    assert [r["step"] for r in expected] == [4, 8, 12, 16]

    path = recipe(tmp_path, tiny_model_dir, "killed")
    run = tmp_path / "killed"
    # 1. during the evaluation of step 8: its row is not written yet, nor the checkpoint of step 8
    proc = subprocess.Popen(train_cmd(path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    kill_at_line(proc, "evaluating at step 8")
    assert [r["step"] for r in eval_rows(run)] == [4]
    assert not (run / "checkpoints" / "step-8").exists()

    # 2. resumed from step 4, killed as soon as the evaluation of step 12 wrote its row
    # into metrics.jsonl (the checkpoint of step 12 may or may not be complete then)
    proc = subprocess.Popen(train_cmd(path, "--resume"), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any(r["step"] == 12 for r in eval_rows(run)), timeout=120)
    assert [r["step"] for r in eval_rows(run)][-1] == 12

    resumed = subprocess.run(train_cmd(path, "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    got = eval_rows(run)
    assert [r["step"] for r in got] == [4, 8, 12, 16]   # each evaluation exactly once
    assert got == expected                               # and bit-identical to the uninterrupted run's
    assert [r["step"] for r in rows(run) if "eval/loss" not in r] == list(range(1, 17))
    assert json.loads((run / "best.json").read_text()) == json.loads((tmp_path / "full" / "best.json").read_text())

"""Issue 11, items 3-5 for `robustpo train`: one run per folder (a lock, naming the holder's
pid), --overwrite removes everything a run owns, --resume checks that the run is the same run."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from robustpo.cli import main

from testdata import REPO, TINY_PAIRS

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def recipe(tmp_path, model, name="r.yaml", **train):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(model)},
        "data": {"train": str(train.pop("data", TINY_PAIRS)), "max_length": 48, "max_prompt_length": 24},
        "loss": {"name": "dpo", "beta": 0.1},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 4, "save_steps": 2,
                  "learning_rate": 1e-3, "warmup_ratio": 0.0, "logging_steps": 1, **train},
    }))
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "robustpo.cli", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True)


def test_a_second_train_on_the_same_folder_is_refused_naming_the_first_pid(tmp_path, tiny_model_dir):
    """Today two `robustpo train` on one output_dir mix their metrics and leave the first run's
    config.yaml describing the second run's values."""
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "robustpo.cli", "train",
                              recipe(tmp_path, tiny_model_dir, "first.yaml", max_steps=100000, save_steps=0)],
                             cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
            assert first.poll() is None and time.time() < deadline, "the first run never started its steps"
            time.sleep(0.05)
        second = cli("train", recipe(tmp_path, tiny_model_dir, "second.yaml", learning_rate=0.5), "--overwrite")
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"robustpo train: error: run folder {run} is in use by process {first.pid} (lock file {run / '.lock'}): "
            "wait for it to finish or stop it, or choose another output")
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["learning_rate"] == 1e-3   # the first's
        assert first.poll() is None                                                              # untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The killed run's lock file (its pid, now dead) is taken over.
    assert (run / ".lock").read_text().split()[0] == str(first.pid)
    assert main(["train", str(recipe(tmp_path, tiny_model_dir, "third.yaml", max_steps=1)), "--overwrite"]) == 0
    assert (run / "final" / "model.safetensors").exists() and not (run / ".lock").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_overwrite_removes_everything_the_run_owns(tmp_path, capsys):
    """Today base_model/ survives --overwrite, so a rerun with another architecture silently
    trains the old one."""
    run = tmp_path / "run"
    llama = recipe(tmp_path, "tiny:llama?hidden_size=32&num_layers=1", "llama.yaml")
    assert main(["train", str(llama)]) == 0
    assert json.loads((run / "final" / "config.json").read_text())["model_type"] == "llama"
    (run / "notes.txt").write_text("mine, not the run's")
    (run / ".final.abc.tmp").mkdir()                       # a temp folder left by a killed save
    (run / "robustpo").mkdir()                             # tensorboard logs (train.log_with)
    (run / "robustpo" / "events.out.tfevents.1.host").write_text("")
    gpt2 = recipe(tmp_path, "tiny:gpt2?hidden_size=32&num_layers=1", "gpt2.yaml", max_steps=2)
    assert main(["train", str(gpt2), "--overwrite"]) == 0
    assert json.loads((run / "base_model" / "config.json").read_text())["model_type"] == "gpt2"
    assert json.loads((run / "final" / "config.json").read_text())["model_type"] == "gpt2"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name_or_path"].startswith("tiny:gpt2")
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 2
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (run / "checkpoints").exists()     # the llama run's step-2; the gpt2 run of 2 steps saves none
    assert (run / "notes.txt").exists() and not (run / ".final.abc.tmp").exists() and not (run / "robustpo").exists()


def test_overwrite_keeps_a_robustpo_folder_that_is_not_tracker_logs(tmp_path):
    from robustpo.train.run_folder import tracker_logs

    (tmp_path / "robustpo" / "src").mkdir(parents=True)
    (tmp_path / "robustpo" / "src" / "code.py").write_text("")
    assert tracker_logs(tmp_path) == []
    (tmp_path / "robustpo" / "src" / "code.py").unlink()
    (tmp_path / "robustpo" / "src" / "events.out.tfevents.2.host").write_text("")
    assert tracker_logs(tmp_path) == [tmp_path / "robustpo"]


def test_resume_refuses_a_changed_run_unless_allowed(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "run"
    data = tmp_path / "pairs.jsonl"
    data.write_text(TINY_PAIRS.read_text())
    path = recipe(tmp_path, tiny_model_dir, data=data)
    assert main(["train", str(path)]) == 0
    original = (run / "config.yaml").read_text()
    capsys.readouterr()

    assert main(["train", str(path), "--resume", "--loss.beta=0.2", "--train.learning_rate=0.002",
                 "--train.batch_size=2"]) == 2
    assert capsys.readouterr().err == (
        f"robustpo train: error: cannot resume {run}: the run was made with other values of loss.beta (0.1 -> 0.2), "
        "train.batch_size (4 -> 2), train.learning_rate (0.001 -> 0.002); resume with the run's own values, or pass "
        "--allow-changes to continue with these (recorded in config_changes.jsonl; config.yaml keeps the "
        "original)\n")
    # the same file name with other content is another data set
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[1:] + rows[:1]) + "\n")
    assert main(["train", str(path), "--resume"]) == 2
    assert "other values of data.train:content (" in capsys.readouterr().err
    data.write_text("\n".join(rows) + "\n")

    # settings that cannot change the result may change freely (and are recorded)
    assert main(["train", str(path), "--resume", "--train.logging_steps=2", "--train.save_total_limit=1"]) == 0
    assert (run / "config.yaml").read_text() == original
    changes = [json.loads(line) for line in (run / "config_changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 2, "key": "train.logging_steps", "old": 1, "new": 2},
                       {"step": 2, "key": "train.save_total_limit", "old": 2, "new": 1}]

    capsys.readouterr()
    assert main(["train", str(path), "--resume", "--allow-changes", "--loss.beta=0.2", "--train.logging_steps=2",
                 "--train.save_total_limit=1"]) == 0
    assert "resuming with 1 changed value(s) from step 2: loss.beta" in capsys.readouterr().out
    assert (run / "config.yaml").read_text() == original          # the values the run started with
    changes = [json.loads(line) for line in (run / "config_changes.jsonl").read_text().splitlines()]
    assert changes[2:] == [{"step": 2, "key": "loss.beta", "old": 0.1, "new": 0.2}]
    assert (run / "final" / "config_changes.jsonl").read_text() == (run / "config_changes.jsonl").read_text()
    # once recorded, resuming again with the same values is no change
    assert main(["train", str(path), "--resume", "--loss.beta=0.2", "--train.logging_steps=2",
                 "--train.save_total_limit=1"]) == 0
    assert len((run / "config_changes.jsonl").read_text().splitlines()) == 3
    assert main(["train", str(path), "--resume"]) == 2                  # back to 0.1 is a change again
    assert "loss.beta (0.2 -> 0.1)" in capsys.readouterr().err


def test_a_folder_holding_the_other_kind_of_run_is_never_cleared(tmp_path, tiny_model_dir, capsys):
    family = tmp_path / "run"
    (family / "base_model").mkdir(parents=True)
    (family / "family.json").write_text("{}")
    path = recipe(tmp_path, tiny_model_dir)
    assert main(["train", str(path), "--overwrite"]) == 2
    assert capsys.readouterr().err.endswith(f"{family} holds a reward run (robustpo reward train), not a run: set "
                                            "train.output_dir to another folder\n")
    assert (family / "base_model").is_dir() and (family / "family.json").exists()

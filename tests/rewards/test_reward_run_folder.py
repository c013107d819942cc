"""Issue 11 for `robustpo reward train` and `robustpo reward score`: the finite checks of the
loop (item 1), one process per output (item 3, with real processes), --overwrite removes what
the run owns (item 4), --resume checks that the run is the same (item 5), and config values
refused before any work (item 6)."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from rewardtesting import write_rows
from robustpo.cli import main
from robustpo.rewards.synthetic import make_pairs

HOLD = """
import sys, time
from robustpo.locks import exclusive_output
with exclusive_output(sys.argv[1], what="test holder", folder=sys.argv[2] == "folder"):
    print("held", flush=True)
    time.sleep(120)
"""


def hold(path, kind):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), kind], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def recipe(tmp_path, model="tiny:llama?hidden_size=32&num_layers=1", name="r.yaml", **train):
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        write_rows(data, make_pairs(40, seed=3))
    path = tmp_path / name
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": model, "tiny_vocab_size": 300},
        "data": {"train": str(data), "max_length": 40, "max_prompt_length": 16},
        "reward": {"heldout_fraction": 0.2, "family": {"size": 1, "mode": "seed"}},
        "train": {"output_dir": str(tmp_path / "family"), "epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
                  "save_steps": 2, "logging_steps": 1, **train},
    }))
    return path


def test_reward_train_is_refused_while_another_process_holds_the_folder(tmp_path, capsys):
    family = tmp_path / "family"
    holder = hold(family, "folder")
    try:
        assert main(["reward", "train", str(recipe(tmp_path))]) == 2
        assert capsys.readouterr().err == (
            f"robustpo reward train: error: run folder {family} is in use by process {holder.pid} (lock file "
            f"{family / '.lock'}): wait for it to finish or stop it, or choose another output\n")
        assert sorted(p.name for p in family.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    assert main(["reward", "train", str(recipe(tmp_path))]) == 0      # the dead holder's lock is taken over
    assert (family / "family.json").exists() and not (family / ".lock").exists()


def test_reward_score_is_refused_while_another_process_holds_out(tmp_path, bootstrap_family, synthetic_path, capsys):
    out = tmp_path / "scored.jsonl"
    holder = hold(out, "file")
    args = ["reward", "score", "--family", str(bootstrap_family), "--data", str(synthetic_path), "--out", str(out)]
    try:
        assert main(args) == 2
        assert capsys.readouterr().err == (
            f"robustpo reward score: error: scored output {out} is in use by process {holder.pid} (lock file "
            f"{out}.lock): wait for it to finish or stop it, or choose another output\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.jsonl.lock"]   # nothing else written
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0
    assert len(out.read_text().splitlines()) == 240 and not (tmp_path / "scored.jsonl.lock").exists()


def test_reward_overwrite_trains_the_new_architecture(tmp_path):
    family = tmp_path / "family"
    assert main(["reward", "train", str(recipe(tmp_path))]) == 0
    assert json.loads((family / "members" / "member-0" / "config.json").read_text())["model_type"] == "llama"
    gpt2 = recipe(tmp_path, model="tiny:gpt2?hidden_size=32&num_layers=1", name="gpt2.yaml")
    assert main(["reward", "train", str(gpt2), "--overwrite"]) == 0
    assert json.loads((family / "base_model" / "config.json").read_text())["model_type"] == "gpt2"
    assert json.loads((family / "members" / "member-0" / "config.json").read_text())["model_type"] == "gpt2"


def test_reward_resume_refuses_changed_values(tmp_path, capsys):
    family = tmp_path / "family"
    path = recipe(tmp_path)
    assert main(["reward", "train", str(path)]) == 0
    capsys.readouterr()
    assert main(["reward", "train", str(path), "--resume", "--reward.center_coef=0.5",
                 "--train.learning_rate=0.01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"robustpo reward train: error: cannot resume {family}: the run was made with other values "
                          "of reward.center_coef (0.0 -> 0.5), train.learning_rate (0.001 -> 0.01);")
    assert main(["reward", "train", str(path), "--resume", "--train.logging_steps=3"]) == 0   # free to change
    changes = [json.loads(line) for line in (family / "config_changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 0, "key": "train.logging_steps", "old": 1, "new": 3}]
    assert yaml.safe_load((family / "config.yaml").read_text())["train"]["logging_steps"] == 1


def test_reward_train_stops_on_a_nonfinite_loss(tmp_path, capsys):
    """The same finite checks as `robustpo train`: a diverged run (a learning rate far too large)
    stops, and the member is not written."""
    family = tmp_path / "family"
    assert main(["reward", "train", str(recipe(tmp_path, learning_rate=1e30))]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: step \d+: non-finite (loss|gradient norm) \(nan\) on the batch of rows \d+, ", err)
    assert f"of {tmp_path / 'pairs.jsonl'}; " in err
    assert "training stopped and members/member-0 was not written" in err
    assert not (family / "members").exists() and not (family / "family.json").exists()


@pytest.mark.parametrize("override,message", [
    ("--train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("--train.epochs=0", "train.epochs must be >= 1 unless train.max_steps > 0"),
    ("--data.max_prompt_length=40", "data.max_prompt_length must be < data.max_length (40)"),
    ("--model.dtype=float16", "model.dtype must not be float16 here"),
    ("--reward.eval_batch_size=0", "reward.eval_batch_size must be >= 1, got 0"),
    ("--model.name_or_path=/no/such/model", "model.name_or_path: /no/such/model is not a folder, and not a hub id"),
])
def test_reward_train_refuses_bad_values_before_any_work(tmp_path, capsys, override, message):
    path = recipe(tmp_path)
    assert main(["reward", "train", str(path), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustpo reward train: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "family").exists()

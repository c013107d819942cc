"""Issue 13 item 2: trackers tested for real. A run with `train.log_with: [tensorboard]` writes
event files whose scalars, read back with TensorBoard's own reader, equal `metrics.jsonl`.

Before robustpo flattened the config for the trackers, this run did not start at all:
TensorBoard's hparams refuse list and None values ("value should be one of int, float, str,
bool, or torch.Tensor"), and the run's config has both (`log_with` itself, `regularizers`)."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from robustpo.cli import main

from testdata import REPO


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from every event file directly in `folder`, by TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def logged_rows(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def assert_same(rows: list[dict], scalars: dict[str, dict[int, float]], prefix: str = ""):
    """Every numeric value of every metrics row is in TensorBoard at its step, as float32."""
    assert rows
    for row in rows:
        for key, value in row.items():
            if key == "step" or not isinstance(value, (int, float)):
                continue
            assert np.float32(scalars[prefix + key][row["step"]]) == np.float32(value), (prefix + key, row["step"])
    tags = {k for row in rows for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
    assert {t for t in scalars if t.startswith(prefix)} == {prefix + t for t in tags}


def test_a_preference_run_logs_the_same_scalars_to_tensorboard_as_to_metrics_jsonl(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(REPO / "recipes" / "tiny" / "dpo_nll.yaml"), f"--train.output_dir={run}",
                 "--train.log_with=[tensorboard]", "--train.max_steps=5", "--train.logging_steps=2"]) == 0
    rows = logged_rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 5]            # every 2 steps, and the last
    assert_same(rows, read_scalars(run / "robustpo"))


def test_a_reward_family_logs_each_member_under_its_own_name(tmp_path, capsys):
    family = tmp_path / "family"
    assert main(["reward", "train", str(REPO / "recipes" / "reward" / "tiny.yaml"), f"--train.output_dir={family}",
                 "--train.log_with=[tensorboard]", "--reward.family.size=2", "--train.epochs=1"]) == 0
    scalars = read_scalars(family / "robustpo-reward")
    members = sorted(p.name for p in (family / "members").iterdir())
    assert len(members) == 2
    for name in members:
        assert_same(logged_rows(family / "runs" / name / "metrics.jsonl"), scalars, prefix=f"{name}/")

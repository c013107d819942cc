"""Commands show robustpo's own progress, not transformers' ("Loading weights" at every model
load, "Writing model shards" at every save), which flooded `robustpo demo` and every command."""

import os
import subprocess
import sys

from testdata import REPO

THEIR_BARS = ("Loading weights", "Writing model shards")


def _train(tmp_path, model_dir, name, **env):
    """A short real `robustpo train` (loads policy and reference from disk, saves the final model)."""
    base = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    return subprocess.run([sys.executable, "-m", "robustpo.cli", "train", "recipes/tiny/dpo.yaml",
                           f"--model.name_or_path={model_dir}", f"--train.output_dir={tmp_path / name}",
                           "--train.epochs=1"],
                          cwd=REPO, env={**base, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True)


def test_train_shows_robustpo_progress_and_no_transformers_bars(tmp_path, tiny_model_dir):
    out = _train(tmp_path, tiny_model_dir, "quiet")
    assert out.returncode == 0, out.stderr
    assert not [bar for bar in THEIR_BARS if bar in out.stderr + out.stdout], out.stderr
    assert "train:" in out.stderr and "reference log-probs" in out.stderr     # robustpo's own bars
    assert "pairs tokenized" in out.stdout and "saved " in out.stdout          # and its own lines
    # The same command with the bars asked for (a user's HF_HUB_DISABLE_PROGRESS_BARS=0) shows
    # them: the check above can fail.
    loud = _train(tmp_path, tiny_model_dir, "loud", HF_HUB_DISABLE_PROGRESS_BARS="0")
    assert loud.returncode == 0, loud.stderr
    assert all(bar in loud.stderr for bar in THEIR_BARS), loud.stderr


def test_tqdm_disable_hides_robustpo_bars_too(tmp_path, tiny_model_dir):
    out = _train(tmp_path, tiny_model_dir, "silent", TQDM_DISABLE="1")
    assert out.returncode == 0, out.stderr
    assert "train:" not in out.stderr and "reference log-probs" not in out.stderr
    assert "saved " in out.stdout


def test_main_quiets_transformers_already_imported(monkeypatch):
    """main() called in a process that has imported transformers (which read the variable then)."""
    import transformers.utils.logging as hf_logging

    from robustpo.cli import quiet_libraries

    was = hf_logging.is_progress_bar_enabled()
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging.enable_progress_bar()
    try:
        quiet_libraries()
        assert not hf_logging.is_progress_bar_enabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
        hf_logging.enable_progress_bar()
        quiet_libraries()
        assert hf_logging.is_progress_bar_enabled()       # the user's choice wins
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()

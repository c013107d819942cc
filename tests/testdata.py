"""Paths and small data shared by tests (imported by name; pytest puts tests/ on sys.path)."""

import json
import os
import signal
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real HH-RLHF file lives beside the project (../shared/data, which says not to copy it in);
# ROBUSTPO_HH_DATA points elsewhere. Tests that read it skip, naming the path, when it is absent.
HH_DATA = Path(os.environ.get("ROBUSTPO_HH_DATA",
                              REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"))
TINY_PAIRS = REPO / "recipes" / "tiny" / "data" / "pairs.jsonl"


def pair_texts():
    rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()]
    return [r["prompt"] + r["chosen"] + r["rejected"] for r in rows]


def kill_when(proc, ready, timeout: float) -> None:
    """SIGKILL the subprocess `proc` as soon as `ready()` holds (polled), as a crash would.

    Fails if the run ends first (nothing left to interrupt) or `ready` never holds in `timeout` s.
    """
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        assert time.time() < deadline, "the run never reached the point where it is to be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def needs_hh_data(test):
    """Skip `test` (with the reason shown by pytest -rs) where the HH-RLHF file is not present."""
    import pytest

    return pytest.mark.skipif(not HH_DATA.exists(), reason=f"needs the HH-RLHF file at {HH_DATA} "
                              "(../shared/data, or set ROBUSTPO_HH_DATA)")(test)


def read_card(folder):
    """A model card (README.md) parsed back: (front matter, {section heading: text})."""
    import re

    import yaml

    text = (Path(folder) / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "a Hugging Face card opens with YAML front matter"
    _, head, body = text.split("---\n", 2)
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", body, flags=re.S | re.M))
    return yaml.safe_load(head), sections


def card_config(sections) -> dict:
    """The ```yaml block of the card's "Training configuration" section."""
    import re

    import yaml

    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", sections["Training configuration"], re.S).group(1))


def card_tables(text) -> list[list[str]]:
    """The cells of every markdown table row in `text` (header and rule rows left out)."""
    rows = [[c.strip() for c in line.strip()[1:-1].split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return [r for r in rows if r[0] not in ("key", "hyperparameter", "metric", "member")]


def flat_leaves(tree, prefix=""):
    """Dotted leaf keys of a nested dict (lists are leaves), read independently of robustpo."""
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from flat_leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


def train_in_one_and_two_processes(recipe_one, recipe_two):
    """`robustpo train` on `recipe_one` in one process and on `recipe_two` under torchrun with
    2 CPU processes (gloo); returns both CompletedProcess results, each checked to have passed."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    one = subprocess.run([sys.executable, "-m", "robustpo.cli", "train", str(recipe_one)],
                         env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    # c10d rendezvous on port 0: torchrun picks a free port (a static --master_port 0 hangs).
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
                          "-m", "robustpo.cli", "train", str(recipe_two)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    return one, two

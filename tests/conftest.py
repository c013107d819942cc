"""Shared fixtures: tiny models and data built locally (no network, CPU only)."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HH_DATA = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
TINY_PAIRS = REPO / "recipes" / "tiny" / "data" / "pairs.jsonl"

sys.path.insert(0, str(REPO / "recipes" / "tiny"))


def pair_texts():
    rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()]
    return [r["prompt"] + r["chosen"] + r["rejected"] for r in rows]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from robustpo.tiny import train_tokenizer

    return train_tokenizer(pair_texts() * 3, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved 2-layer Llama-style model + tokenizer: a 'local path' like any hub model."""
    from robustpo.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(tiny_tokenizer, "llama", seed=0, hidden_size=32).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def write_jsonl(tmp_path):
    def write(rows, name="data.jsonl"):
        path = tmp_path / name
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return path

    return write

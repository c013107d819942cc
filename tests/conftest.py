"""Shared fixtures: tiny models and data built locally (no network, CPU only)."""

import json

import pytest

from testdata import HH_DATA, REPO, TINY_PAIRS, pair_texts  # noqa: F401  (re-exported for old imports)


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


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps process-global state (mixed precision, device); a TRL trainer built in
    one test must not fix the settings of the next test's Accelerator."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def quick_testbed(tmp_path_factory):
    """The quick testbed (reference trained in ~10 s), built once per test session and
    shared by tests/testbed, tests/eval and anything else that needs a trained policy."""
    from robustpo.testbed import TestbedConfig, build

    cache = tmp_path_factory.getbasetemp() / "testbed-cache"
    return build(TestbedConfig.quick(cache_dir=str(cache), rhos=(0.2, 0.8)), log=lambda _: None)

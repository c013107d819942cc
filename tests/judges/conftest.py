import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).parent


class ChatServer:
    """Handle on the chat_server.py subprocess: script its replies, read its request count."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"

    def _call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def script(self, queue=(), default="ok", delay=3.0, location=None):
        self._call("/control", {"queue": list(queue), "default": default, "delay": delay, "location": location})

    def stats(self):
        return self._call("/stats")

    @property
    def requests(self) -> int:
        return self.stats()["requests"]


def _serve():
    proc = subprocess.Popen([sys.executable, str(HERE / "chat_server.py")], stdout=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        yield ChatServer(port)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def chat_server():
    yield from _serve()


@pytest.fixture(scope="module")
def other_chat_server():
    """A second server process, on another port (another origin)."""
    yield from _serve()


@pytest.fixture
def server(chat_server):
    chat_server.script()
    return chat_server


CORPUS = ["Which response answers the prompt better? Response A: Response B: Answer with a single letter, A or B.",
          "the cat sat on the mat", "a dog ran in the park", "two plus two is four", "Answer: A", "Answer: B"] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from robustpo.tiny import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, tiny_tokenizer):
    from robustpo.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("lm")
    build_tiny_model(tiny_tokenizer, "llama", seed=1, hidden_size=32).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def build_reward_model(tmp_path_factory, tokenizer, seed: int) -> str:
    import torch
    from transformers import AutoModelForSequenceClassification

    from robustpo.tiny import tiny_config

    cfg = tiny_config("llama", len(tokenizer), hidden_size=32, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(cfg)
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, tiny_tokenizer):
    return build_reward_model(tmp_path_factory, tiny_tokenizer, seed=2)


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory, tiny_tokenizer, tiny_reward_dir):
    """A family of two reward models (robustpo.rewards.assemble_family), member 0 = tiny_reward_dir."""
    from robustpo.rewards import assemble_family

    second = build_reward_model(tmp_path_factory, tiny_tokenizer, seed=4)
    return str(assemble_family([tiny_reward_dir, second], tmp_path_factory.mktemp("family"))), second


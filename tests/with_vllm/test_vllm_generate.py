"""`robustpo generate --backend vllm` against the transformers backend and the training path.

One engine for the module. The independent checks: greedy rows equal the transformers
backend's rows (two implementations of the same model), and the log-probs vLLM reports for
its own samples equal `score_logps` (robustpo's training forward) on the same weights.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from vllmhelpers import VLLM_FLAGS, VLLM_OPTIONS, build_llama

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "generate")]
from genhelpers import PROMPT_TEXTS, cli_command, read_jsonl, write_jsonl  # noqa: E402

pytestmark = pytest.mark.vllm

CHAT = [{"role": "user", "content": "Tell me about cats."}]
# Sums over 10-24 tokens of ~-6 nats each, float32 on both sides: measured max 1.2e-5 to 1.5e-5.
LOGP_TOL = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm-policy")
    build_llama(path, PROMPT_TEXTS * 3 + ["cats and dogs are animals"] * 3)
    return str(path)


@pytest.fixture(scope="module")
def sampler(model_dir):
    from robustpo.generate.vllm_backend import VLLMSampler

    sampler = VLLMSampler(model_dir, **VLLM_OPTIONS)
    yield sampler
    sampler.close()  # before the next module's engine or server asks for its memory share


@pytest.fixture
def prompts_file(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPT_TEXTS] + [{"prompt": CHAT}])


def _run(prompts_file, out, sampler, **settings):
    from robustpo.generate.sampling import SamplingSettings, generate_file

    s = SamplingSettings(**{"n": 2, "max_new_tokens": 12, "batch_size": 2, **settings})
    return generate_file(str(prompts_file), str(out), sampler, s, model_name="m", progress=False)


def test_greedy_rows_equal_the_transformers_backend(sampler, model_dir, prompts_file, tmp_path):
    from robustpo.generate.sampling import TransformersSampler

    _run(prompts_file, tmp_path / "v.jsonl", sampler, temperature=0)
    _run(prompts_file, tmp_path / "t.jsonl", TransformersSampler(model_dir), temperature=0)
    v, t = read_jsonl(tmp_path / "v.jsonl"), read_jsonl(tmp_path / "t.jsonl")
    assert [r["meta"]["backend"] for r in v] == ["vllm"] * 6
    for a, b in zip(v, t):
        a["meta"].pop("backend"), b["meta"].pop("backend")
    assert v == t
    assert v[-1]["prompt"] == CHAT and len(set(c for r in v for c in r["completions"])) > 1


def test_reported_logprobs_equal_the_training_forward(sampler, model_dir):
    from transformers import AutoModelForCausalLM

    from robustpo.eval.evaluate import score_logps
    from robustpo.generate.sampling import SamplingSettings

    prompts = PROMPT_TEXTS + [CHAT]
    outs = sampler.generate(prompts, SamplingSettings(n=3, max_new_tokens=24), seed=7, logprobs=0)
    prompt_ids, responses, reported = [], [], []
    for ids, out in zip(sampler.encode(prompts), outs):
        for c in out.outputs:
            prompt_ids.append(ids)
            responses.append(list(c.token_ids))
            reported.append(sum(step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ours = score_logps(model, prompt_ids, responses, pad_token_id=sampler.tokenizer.pad_token_id)
    diff = (ours.double() - torch.tensor(reported, dtype=torch.double)).abs()
    assert len(responses) == 18 and min(len(r) for r in responses) >= 1
    print(f"MEASURED max |vLLM - training| log-prob = {diff.max().item():.2e} nats "
          f"(sums of {min(map(len, responses))}-{max(map(len, responses))} tokens)")
    assert diff.max().item() < LOGP_TOL, f"max |vLLM - training| = {diff.max().item():.2e} nats"


def test_seeded_runs_reproduce_and_a_failed_run_resumes_without_resampling(sampler, prompts_file, tmp_path):
    whole = tmp_path / "whole.jsonl"
    _run(prompts_file, whole, sampler, seed=3)

    class FailsAfterFirstBatch:  # the real sampler, stopped by an error after one batch
        name, calls = sampler.name, []

        def sample(self, prompts, s, seed):
            if self.calls:
                raise RuntimeError("engine died")
            self.calls.append(prompts)
            return sampler.sample(prompts, s, seed)

    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="engine died"):
        _run(prompts_file, out, FailsAfterFirstBatch(), seed=3)
    assert not out.exists() and len(read_jsonl(str(out) + ".partial")) == 2  # the finished batch kept

    class Counting:
        name, prompts_sampled = sampler.name, 0

        def sample(self, prompts, s, seed):
            self.prompts_sampled += len(prompts)
            return sampler.sample(prompts, s, seed)

    counting = Counting()
    result = _run(prompts_file, out, counting, seed=3)
    assert (result["resumed"], counting.prompts_sampled) == (2, 4)
    assert out.read_text() == whole.read_text()
    other = tmp_path / "other.jsonl"
    _run(prompts_file, other, sampler, seed=4)
    assert other.read_text() != whole.read_text()  # the seed matters, so equality above means something


def test_cli_run_killed_mid_run_resumes(model_dir, tmp_path, sampler):
    """The real command in a subprocess (its own engine), SIGKILLed after its first batch. 40
    prompts in 20 batches: long enough that the kill lands mid-run on a quiet machine too."""
    import contextlib
    import os
    import signal
    import subprocess

    from testdata import kill_when

    prompts_file = write_jsonl(tmp_path / "many.jsonl", [{"prompt": f"{p} ({i})"} for i in range(8)
                                                         for p in PROMPT_TEXTS])
    out = tmp_path / "cli.jsonl"
    argv = ["generate", "--backend", "vllm", "--model", model_dir, "--prompts", prompts_file, "--out", out,
            "--n", 2, "--max-new-tokens", 48, "--batch-size", 2, "--seed", 5, "--no-progress",
            *[x for f in VLLM_FLAGS for x in ("-V", f)]]
    partial = tmp_path / "cli.jsonl.partial"
    # Its own process group: vLLM's engine processes outlive a SIGKILLed parent (they would keep
    # their memory share), so the whole group goes, as when a job's machine dies.
    proc = subprocess.Popen(cli_command(argv), stderr=open(tmp_path / "killed.log", "w"), start_new_session=True)
    try:
        kill_when(proc, lambda: partial.exists() and partial.read_text().count("\n") >= 2, timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    kept = partial.read_text()
    assert not out.exists() and kept.count("\n") < 40
    done = subprocess.run(cli_command(argv), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stderr.split("generate: ")[-1])
    assert report["resumed"] == kept.count("\n") and out.read_text().startswith(kept)
    _run(prompts_file, tmp_path / "ref.jsonl", sampler, seed=5, max_new_tokens=48)
    ref = read_jsonl(tmp_path / "ref.jsonl")
    assert read_jsonl(out) == [{**r, "meta": {**r["meta"], "model": model_dir}} for r in ref]

"""Models vLLM cannot run and engines that fail to start: one line naming cause and fix."""

import json
import sys
from pathlib import Path

import pytest

from vllmhelpers import VLLM_FLAGS, build_llama

sys.path[:0] = [str(Path(__file__).parents[1] / "generate")]
from genhelpers import PROMPT_TEXTS, run_cli, write_jsonl  # noqa: E402

pytestmark = pytest.mark.vllm


def _generate(model, tmp_path, capsys, flags=VLLM_FLAGS):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPT_TEXTS])
    code = run_cli(["generate", "--backend", "vllm", "--model", model, "--prompts", prompts,
                    "--out", tmp_path / "o.jsonl", "--no-progress", *[x for f in flags for x in ("-V", f)]])
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.partial").exists()
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_a_head_size_the_cpu_kernels_lack_is_refused_before_the_engine_starts(tmp_path, capsys):
    from robustpo.tiny import build_tiny_model, train_tokenizer

    tok = train_tokenizer(PROMPT_TEXTS * 3, vocab_size=300)
    build_tiny_model(tok, "llama", hidden_size=64, num_heads=4).save_pretrained(tmp_path / "m")  # head 16
    tok.save_pretrained(tmp_path / "m")
    code, err = _generate(str(tmp_path / "m"), tmp_path, capsys)
    assert code == 2 and "head size 16" in err and "config.json" in err and "--backend transformers" in err


def test_an_architecture_vllm_lacks_is_refused_before_the_engine_starts(tmp_path, capsys):
    build_llama(tmp_path / "m", PROMPT_TEXTS * 3)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "architectures": ["NoSuchForCausalLM"]}))
    code, err = _generate(str(tmp_path / "m"), tmp_path, capsys)
    assert code == 2 and "cannot run architecture ['NoSuchForCausalLM']" in err


def test_an_engine_that_fails_to_start_is_one_clear_line(tmp_path, capsys):
    build_llama(tmp_path / "m", PROMPT_TEXTS * 3)
    flags = [f for f in VLLM_FLAGS if not f.startswith("gpu_memory")] + ["gpu_memory_utilization=0.99"]
    code, err = _generate(str(tmp_path / "m"), tmp_path, capsys, flags)  # more memory than this machine has free
    assert code == 2 and err.startswith("robustpo generate: error: vLLM could not start an engine for ")
    assert "--vllm-option" in err

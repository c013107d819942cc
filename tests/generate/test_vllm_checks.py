"""`--backend vllm` where vLLM is not installed (the default suite's venv): one clear line."""

import importlib.util

import pytest

from genhelpers import PROMPT_TEXTS, run_cli, write_jsonl


def _args(model, tmp_path, *extra):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": PROMPT_TEXTS[0]}])
    return ["generate", "--model", model, "--prompts", prompts, "--out", tmp_path / "o.jsonl", "--no-progress",
            *extra]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_extra_names_the_install_command(tiny_policy_dir, tmp_path, capsys):
    assert run_cli(_args(tiny_policy_dir, tmp_path, "--backend", "vllm")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the vllm package" in err[0] and 'pip install -e ".[vllm]"' in err[0]
    assert not (tmp_path / "o.jsonl.partial").exists()


def test_vllm_options_without_the_vllm_backend_are_refused(tiny_policy_dir, tmp_path, capsys):
    assert run_cli(_args(tiny_policy_dir, tmp_path, "-V", "dtype=float32")) == 2
    assert "--vllm-option is for --backend vllm" in capsys.readouterr().err

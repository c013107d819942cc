"""`robustpo generate`: batched sampling, chat prompts, bad rows, resumable output."""

import json
import os
import subprocess

import pytest

from genhelpers import PROMPT_TEXTS, cli_command, read_jsonl, run_cli, write_jsonl
from testdata import kill_when
from robustpo.errors import ConfigError, DataError
from robustpo.generate.sampling import SamplingSettings, TransformersSampler, generate_file


@pytest.fixture
def prompts_file(tmp_path):
    rows = [{"prompt": p} for p in PROMPT_TEXTS]
    rows.insert(2, {"prompt": [{"role": "user", "content": "Tell me about birds."}]})
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


def gen_args(model, prompts, out, **extra):
    args = ["generate", "--model", model, "--prompts", prompts, "--out", out, "--n", "3",
            "--max-new-tokens", "6", "--batch-size", "2", "--seed", "7", "--no-progress"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    return args


def test_generate_writes_one_row_per_prompt_in_order(tiny_policy_dir, prompts_file, tmp_path):
    out = tmp_path / "samples.jsonl"
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, out)) == 0
    rows = read_jsonl(out)
    assert [r["meta"]["index"] for r in rows] == list(range(6))
    assert rows[2]["prompt"] == [{"role": "user", "content": "Tell me about birds."}]
    for r in rows:
        assert len(r["completions"]) == 3 and all(isinstance(c, str) for c in r["completions"])
        assert r["meta"]["settings"]["n"] == 3 and len(r["meta"]["new_tokens"]) == 3
        assert all(1 <= t <= 6 for t in r["meta"]["new_tokens"])
    # Same seed, same result (a second file from scratch).
    out2 = tmp_path / "again.jsonl"
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, out2)) == 0
    assert out2.read_text() == out.read_text()


def test_chat_prompts_use_the_chat_template_with_generation_prompt(tiny_policy_dir):
    sampler = TransformersSampler(tiny_policy_dir)
    # robustpo.tiny's template: <|role|>content</s> per message, then <|assistant|>.
    assert sampler.render([{"role": "user", "content": "hi"}])[1] == "<|user|>hi</s><|assistant|>"


def test_greedy_left_padded_batches_match_one_prompt_at_a_time(tiny_policy_dir):
    """Left padding with a correct attention mask must not change greedy continuations."""
    sampler = TransformersSampler(tiny_policy_dir)
    s = SamplingSettings(n=2, temperature=0.0, max_new_tokens=6)
    prompts = ["Tell me about cats.", "Question: what is 2 plus 3?\nAnswer:", "dogs"]  # different lengths
    batched, _ = sampler.sample(prompts, s, seed=0)
    single = [sampler.sample([p], s, seed=0)[0][0] for p in prompts]
    assert batched == single
    assert all(c[0] == c[1] for c in batched)  # greedy: the n samples are identical


def test_bad_prompt_rows_name_the_file_row_and_field(tiny_policy_dir, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"text": "no prompt"}])
    with pytest.raises(DataError) as e:
        generate_file(str(bad), str(tmp_path / "o.jsonl"), sampler=None, settings=SamplingSettings(),
                      model_name="m")
    assert (e.value.row, e.value.field) == (1, "prompt") and "row 2" in str(e.value)
    bad2 = write_jsonl(tmp_path / "bad2.jsonl", [{"prompt": [{"role": "user"}]}])
    assert run_cli(gen_args(tiny_policy_dir, bad2, tmp_path / "o.jsonl")) == 2
    err = capsys.readouterr().err
    # messages are numbered from 0, as data/schema.py numbers them in training rows
    assert "bad2.jsonl, row 1, field 'prompt'" in err and "message 0" in err
    bad3 = write_jsonl(tmp_path / "bad3.jsonl", [{"prompt": "  "}])
    with pytest.raises(DataError, match="empty prompt"):
        generate_file(str(bad3), str(tmp_path / "o3.jsonl"), None, SamplingSettings(), model_name="m")


BAD_PROMPTS = {   # a prompts file's lines -> what the error must say
    "message 0": ['{"prompt": "ok"}', '{"prompt": [{"role": "user"}]}'],
    "message 1": ['{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": 3}]}'],
    "unknown role": ['{"prompt": [{"role": "human", "content": "hi"}]}'],
    "empty prompt": ['{"prompt": "ok"}', '', '{"prompt": "  "}'],   # the blank line counts as a row
    "missing field": ['{"text": "no prompt"}'],
    "expected a string or a list of messages": ['{"prompt": 5}'],
}


@pytest.mark.parametrize("what", list(BAD_PROMPTS))
def test_generate_and_eval_reject_a_bad_prompt_with_the_same_error(tiny_policy_dir, tmp_path, capsys, what):
    """One prompt rule (data.schema.check_prompt) for `robustpo generate` and `robustpo eval`: the
    same bad file gives the same error, naming the file, row, field and message index; training
    rows number their messages the same way."""
    from robustpo.data.schema import validate_rows

    lines = BAD_PROMPTS[what]
    bad = tmp_path / "prompts.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert run_cli(gen_args(tiny_policy_dir, bad, tmp_path / "o.jsonl")) == 2
    from_generate = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("robustpo generate: error: ")
    assert run_cli(["eval", "--policy", tiny_policy_dir, "--reference", tiny_policy_dir, "--prompts", bad,
                    "--gold", "testbed", "--out", tmp_path / "ev"]) == 2
    from_eval = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("robustpo eval: error: ")
    row = len(lines)
    assert from_generate == from_eval
    assert from_generate.startswith(f"{bad}, row {row}, field 'prompt': ") and what in from_generate
    if what.startswith("message") or what == "unknown role":
        prompt = json.loads(lines[-1])["prompt"]
        with pytest.raises(DataError) as e:
            validate_rows([{"prompt": prompt, "chosen": "a", "rejected": "b"}], source="train.jsonl")
        assert e.value.reason == from_generate.split("field 'prompt': ", 1)[1]


def test_vllm_backend_missing_is_a_clear_error(tiny_policy_dir, prompts_file, tmp_path, capsys):
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, tmp_path / "o.jsonl", backend="vllm")) == 2
    assert "needs the vllm package" in capsys.readouterr().err


class Crash(Exception):
    pass


def test_killed_generate_resumes_without_resampling(tiny_policy_dir, prompts_file, tmp_path, monkeypatch):
    full = tmp_path / "full.jsonl"
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, full)) == 0

    sampled = []
    original = TransformersSampler.sample

    def crashing(self, prompts, s, seed):
        if len(sampled) == 2:  # dies while sampling the third batch
            raise Crash()
        sampled.append(list(prompts))
        return original(self, prompts, s, seed)

    monkeypatch.setattr(TransformersSampler, "sample", crashing)
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(Crash):
        run_cli(gen_args(tiny_policy_dir, prompts_file, out))
    partial = tmp_path / "resumed.jsonl.partial"
    assert not out.exists() and len(read_jsonl(partial)) == 4  # two whole batches of two prompts, not in OUT
    # Simulate also a torn last line (a kill in the middle of a write).
    with open(partial, "a") as f:
        f.write('{"prompt": "Question: what is 4 plus')

    def counting(self, prompts, s, seed):
        sampled.append(list(prompts))
        return original(self, prompts, s, seed)

    sampled.clear()
    monkeypatch.setattr(TransformersSampler, "sample", counting)
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, out)) == 0
    assert len(sampled) == 1 and len(sampled[0]) == 2  # only the last batch was sampled again
    assert out.read_text() == full.read_text()         # identical to the uninterrupted run
    assert not partial.exists()
    # Rerunning a finished job samples nothing.
    sampled.clear()
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, out)) == 0
    assert sampled == [] and out.read_text() == full.read_text()


def test_resume_with_other_settings_is_refused(tiny_policy_dir, prompts_file, tmp_path):
    out = tmp_path / "s.jsonl"
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, out)) == 0
    sampler = TransformersSampler(tiny_policy_dir)
    with pytest.raises(ConfigError, match="--overwrite"):
        generate_file(str(prompts_file), str(out), sampler,
                      SamplingSettings(n=3, max_new_tokens=6, batch_size=2, seed=8), model_name=tiny_policy_dir)


def test_a_half_written_batch_is_completed_without_rewriting_its_finished_rows(tiny_policy_dir, prompts_file,
                                                                              tmp_path, monkeypatch):
    """Batches are [0,1], [2,3], [4,5]; keep rows 0-4, as if killed between rows 4 and 5."""
    full = tmp_path / "full.jsonl"
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, full)) == 0
    out = tmp_path / "partial.jsonl"
    out.write_text("".join(full.read_text().splitlines(keepends=True)[:5]))
    sampled = []
    original = TransformersSampler.sample

    def counting(self, prompts, s, seed):
        sampled.append(list(prompts))
        return original(self, prompts, s, seed)

    monkeypatch.setattr(TransformersSampler, "sample", counting)
    assert run_cli(gen_args(tiny_policy_dir, prompts_file, out)) == 0
    assert sampled == [[PROMPT_TEXTS[3], PROMPT_TEXTS[4]]]  # the last batch only (the birds prompt is row 2)
    assert out.read_text() == full.read_text()


def test_sigkilled_generate_resumes_to_the_uninterrupted_result(tiny_policy_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"{p} ({k})"} for k in range(8)
                                                        for p in PROMPT_TEXTS])
    args = ["generate", "--model", tiny_policy_dir, "--prompts", prompts, "--n", "2", "--max-new-tokens", "32",
            "--batch-size", "1", "--seed", "3", "--no-progress"]
    full = tmp_path / "full.jsonl"
    assert run_cli(args + ["--out", full]) == 0
    out = tmp_path / "killed.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cli_command(args + ["--out", out]), env=env, stderr=subprocess.DEVNULL)
    partial = tmp_path / "killed.jsonl.partial"
    kill_when(proc, lambda: partial.exists() and partial.read_text().count("\n") >= 3, timeout=120)
    written = partial.read_text().count("\n")
    assert 3 <= written < 40, "the run must be killed partway"
    assert not out.exists()  # a killed run leaves no samples file that looks whole
    assert subprocess.run(cli_command(args + ["--out", out]), env=env, stderr=subprocess.DEVNULL).returncode == 0
    assert out.read_text() == full.read_text()

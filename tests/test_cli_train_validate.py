"""The command line as a user runs it: real processes, real files."""

import json
import os
import subprocess
import sys


from testdata import HH_DATA, REPO, needs_hh_data

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def robustpo(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "robustpo.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True)


@needs_hh_data
def test_validate_reports_counts_formats_and_lengths():
    out = robustpo("validate", HH_DATA)
    assert out.returncode == 1  # the 4 empty replies are problems
    assert "2312 rows" in out.stdout
    assert "formats: implicit 2308" in out.stdout
    assert "4 problem(s)" in out.stdout and "row 87, field 'chosen': empty response" in out.stdout
    assert "prompt length (characters): mean" in out.stdout


def test_validate_with_a_tokenizer_reports_truncation(tiny_model_dir):
    out = robustpo("validate", "recipes/tiny/data/pairs.jsonl", "--tokenizer", tiny_model_dir, "--max-length", 16,
                   "--max-prompt-length", 8)
    assert out.returncode == 0, out.stderr
    assert "rewards: K=3" in out.stdout and "no problems found" in out.stdout
    assert "96 prompts" in out.stdout and "lengths (tokens)" not in out.stdout
    assert "chosen length (tokens): mean" in out.stdout


def test_bad_input_is_one_clear_line_before_training(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}) + "\n" + "{not json\n")
    out = robustpo("train", "recipes/tiny/dpo.yaml", f"--data.train={data}", f"--train.output_dir={tmp_path}/run")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == \
        f"robustpo train: error: {data}, row 2: malformed JSON line (Expecting property name enclosed in double quotes " \
        "at column 2)"
    assert not (tmp_path / "run" / "base_model").exists()  # nothing was built


def test_unknown_key_in_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochz: 2\n")
    out = robustpo("train", recipe)
    assert out.returncode == 2
    assert "unknown config key 'train.epochz'; did you mean 'epochs'?" in out.stderr


def test_readme_tiny_recipe(tmp_path):
    """The README's tiny CPU recipe (the main job before `robustpo demo`), into a temp output folder."""
    out = robustpo("train", "recipes/tiny/dpo.yaml", f"--train.output_dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()

"""The Python API (robustpo.api) against the CLI it mirrors: the same recipe through both entry
points must give the same model and the same numbers, and bad input the same errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import robustpo
from robustpo.cli import main
from robustpo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _recipe(path: str, out: Path, **train) -> dict:
    recipe = yaml.safe_load((REPO / path).read_text())
    recipe["data"]["train"] = str(REPO / recipe["data"]["train"])
    recipe["train"].update(output_dir=str(out), **train)
    return recipe


def test_import_is_light_and_the_packages_stay_callable():
    """`import robustpo` must not load torch (the CLI's --help is instant for the same reason);
    `robustpo.train` stays callable after its modules are imported (importing a submodule sets
    the package attribute, which is why the package itself is made callable)."""
    code = ("import sys, robustpo; assert 'torch' not in sys.modules; "
            "assert callable(robustpo.train) and callable(robustpo.eval); "
            "import robustpo.train.loop, robustpo.eval.report; "
            "assert callable(robustpo.train) and callable(robustpo.eval); "
            "print(robustpo.reward.train.__name__, robustpo.reward.score.__name__, robustpo.reward.eval.__name__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["reward_train", "reward_score", "reward_eval"]


def test_train_from_a_dict_equals_the_cli_on_the_yaml(tmp_path):
    """The dict recipe with dict overrides, and the YAML file with CLI override strings, are the
    same run: bit-identical final weights (CPU, same seed). The returned metrics are the last
    row of metrics.jsonl, read here independently."""
    recipe = _recipe("recipes/tiny/dpo.yaml", tmp_path / "api", epochs=1, save_steps=0)
    run = robustpo.train(recipe, overrides={"loss.beta": 0.2, "train.learning_rate": 2e-3})
    cli_recipe = _recipe("recipes/tiny/dpo.yaml", tmp_path / "cli", epochs=1, save_steps=0)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cli_recipe))
    assert main(["train", str(tmp_path / "r.yaml"), "--loss.beta=0.2", "--train.learning_rate=2e-3"]) == 0

    assert run.run_dir == tmp_path / "api" and run.final_dir == tmp_path / "api" / "final"
    a, b = load_file(run.final_dir / "model.safetensors"), load_file(tmp_path / "cli/final/model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert run.metrics == rows[-1] and run.steps == rows[-1]["step"] == 96 // 8
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["loss"]["beta"] == 0.2


def test_api_errors_are_the_cli_errors(tmp_path, capsys):
    """Raised, not printed: the same ConfigError text the CLI prints after `error:`."""
    recipe = _recipe("recipes/tiny/dpo.yaml", tmp_path / "bad")
    recipe["train"]["per_device_train_batch_size"] = 4
    with pytest.raises(ConfigError) as raised:
        robustpo.train(recipe)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err == f"robustpo train: error: {tmp_path / 'bad.yaml'}: {raised.value}\n"
    assert "`train.batch_size`" in str(raised.value)
    assert not (tmp_path / "bad").exists()


def test_reward_train_eval_score_equal_the_cli(tmp_path):
    """robustpo.reward.train / eval / score against `robustpo reward train | eval --json | score`
    on the same recipe and data: the same family metrics, the same scored rows."""
    data = REPO / "recipes/reward/data/reviews.jsonl"
    n_rows = len(data.read_text().splitlines())
    recipe = _recipe("recipes/reward/tiny.yaml", tmp_path / "fam", epochs=1, save_steps=0)
    recipe["reward"]["family"]["size"] = 2
    fam = robustpo.reward.train(recipe)
    assert fam.family_dir == tmp_path / "fam" and [m["name"] for m in fam.manifest["members"]] == \
        [m["name"] for m in json.loads((tmp_path / "fam/family.json").read_text())["members"]]

    metrics = robustpo.reward.eval(fam.family_dir, data)
    assert main(["reward", "eval", "--family", str(fam.family_dir), "--data", str(data),
                 "--json", str(tmp_path / "eval.json")]) == 0
    cli = json.loads((tmp_path / "eval.json").read_text())
    assert {k: metrics[k] for k in cli if k not in ("data", "family")} == {k: cli[k] for k in cli if k not in ("data", "family")}
    assert metrics["mean_of_members"]["accuracy"] > 0.5

    scored = robustpo.reward.score(fam.family_dir, data, tmp_path / "scored.jsonl")
    assert main(["reward", "score", "--family", str(fam.family_dir), "--data", str(data),
                 "--out", str(tmp_path / "cli_scored.jsonl")]) == 0
    assert scored.rows == n_rows
    assert (tmp_path / "scored.jsonl").read_text() == (tmp_path / "cli_scored.jsonl").read_text()


def test_eval_equals_the_cli(quick_testbed, tmp_path):
    """robustpo.eval with a prompt list and gold="testbed" against `robustpo eval` on the same
    prompts written to a file: the same win rate, gold reward and KL."""
    tb = quick_testbed
    prompts = tb.test_prompts()[:16]
    result = robustpo.eval({"ref": tb.reference_path}, tb.reference_path, prompts, gold="testbed",
                           max_new_tokens=tb.config.max_new_tokens, seed=3)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    assert main(["eval", "--policy", f"ref={tb.reference_path}", "--reference", str(tb.reference_path),
                 "--prompts", str(tmp_path / "p.jsonl"), "--gold", "testbed", "--seed", "3",
                 "--max-new-tokens", str(tb.config.max_new_tokens), "--out", str(tmp_path / "out")]) == 0
    cli = json.loads((tmp_path / "out/eval.json").read_text())["policies"]["ref"]
    ours = result["policies"]["ref"]
    for key in ("win_rate", "gold_reward", "kl", "length"):
        assert ours[key] == cli[key], key

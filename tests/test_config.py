"""Recipes, overrides, and config errors with a 'did you mean'."""

from pathlib import Path

import pytest

from robustpo.config import load_config
from robustpo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def test_recipes_exist_for_every_objective():
    from robustpo.loss_spec import LOSSES

    tiny = {p.stem for p in (REPO / "recipes" / "tiny").glob("*.yaml")}
    assert {n for n, s in LOSSES.items() if s.kind == "objective"} <= tiny


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(REPO)) for p in RECIPES])
def test_every_recipe_loads_and_its_data_validates(path, monkeypatch):
    """Each recipe parses into a typed config, and local data it names passes validation
    and carries what its loss needs (rewards for distillation)."""
    from robustpo.data.schema import load_preferences
    from robustpo.loss_spec import get_loss

    import yaml

    monkeypatch.chdir(REPO)
    raw = yaml.safe_load(path.read_text())
    if path.parent.name == "accelerate":
        # accelerate launch configs: they must name a distributed type accelerate knows.
        assert raw["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"} and raw["num_processes"] >= 1
        return
    if "reward" in raw:  # reward-model recipes (robustpo reward train)
        from robustpo.train.reward import RewardRunConfig

        cfg = load_config(path, cls=RewardRunConfig)
        spec = None
    else:
        cfg = load_config(path)
        spec = get_loss(cfg.loss.name)
    if Path(cfg.data.train).exists():
        _, report = load_preferences(cfg.data.train, drop_empty=cfg.data.drop_empty)
        assert spec is None or not spec.needs_rewards or report.num_members >= spec.min_members


def test_overrides_are_typed(tmp_path):
    cfg = load_config(REPO / "recipes/tiny/dpo.yaml",
                      ["--train.learning_rate=2e-5", "--loss.beta=0.3", "--model.lora={r: 4}",
                       "--data.max_rows=10"])
    assert cfg.train.learning_rate == 2e-5 and cfg.loss.params["beta"] == 0.3
    assert cfg.model.lora.r == 4 and cfg.model.lora.alpha == 16 and cfg.data.max_rows == 10


def test_a_config_object_takes_overrides_and_stays_as_it_was():
    """The Python API's `robustpo.train(cfg, overrides=...)` with a loaded RunConfig: the
    overrides apply to a copy, and checks run as for a file (a bad value is refused)."""
    cfg = load_config(REPO / "recipes/tiny/dpo.yaml")
    lr = cfg.train.learning_rate
    changed = load_config(cfg, {"train.learning_rate": 0.5, "loss.beta": 0.25})
    assert changed.train.learning_rate == 0.5 and changed.loss.params["beta"] == 0.25
    assert cfg.train.learning_rate == lr and changed.model == cfg.model
    with pytest.raises(ConfigError, match="train.batch_size: expected int"):
        load_config(cfg, ["--train.batch_size=abc"])


@pytest.mark.parametrize("override,message", [
    ("--train.learnig_rate=1", "unknown config key 'train.learnig_rate'; did you mean 'learning_rate'?"),
    ("--trian.seed=1", "unknown config key 'trian'; did you mean 'train'?"),
    ("--loss.name=dpoo", "unknown objective 'dpoo'; did you mean 'dpo'?"),
    ("--loss.gama=1", "loss 'dpo' has no hyperparameter 'gama'"),
    ("--train.batch_size=abc", "train.batch_size: expected int"),
    ("--train.shuffle=3", "train.shuffle: expected true/false"),
])
def test_config_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "recipes/tiny/dpo.yaml", [override])
    assert message in str(e.value)
    assert "dpo.yaml" in str(e.value)


def test_regularizer_names_are_checked():
    with pytest.raises(ConfigError, match=r"regularizers\[0\]: unknown regularizer 'bcrr'; did you mean 'bcr'"):
        load_config(None, ["--regularizers=[{name: bcrr}]"])
    with pytest.raises(ConfigError, match="unknown regularizer 'dpo'"):
        load_config(None, ["--regularizers=[{name: dpo}]"])


@pytest.mark.parametrize("recipe,override,message", [
    ("dpo", "--loss.beta=-0.1", "loss.beta must be > 0 (objective 'dpo'), got -0.1"),
    ("e_dpo", "--loss.ensemble_reduce=bogus",
     "loss.ensemble_reduce must be one of batch_min|example_min|mean (objective 'e_dpo'), got 'bogus'"),
    ("rdpo", "--loss.label_smoothing=0.5", "loss.label_smoothing must be in [0, 0.5) (objective 'rdpo'), got 0.5"),
    ("dpo_bcr", "--regularizers=[{name: bcr, budget: -1}]",
     "regularizers[0].budget must be >= 0 (regularizer 'bcr'), got -1"),
])
def test_a_bad_loss_value_stops_train_before_any_work(tmp_path, capsys, recipe, override, message):
    """One line naming the key and the allowed values, and no run folder: nothing was started."""
    from robustpo.cli import main

    path = REPO / "recipes" / "tiny" / f"{recipe}.yaml"
    assert main(["train", str(path), override, f"--train.output_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err == f"robustpo train: error: {path}: {message}\n"
    assert not (tmp_path / "run").exists()


def test_losses_command_prints_the_catalogue_from_the_registry(capsys):
    from robustpo.cli import main
    from robustpo.loss_spec import LOSSES

    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert main(["train", "--list-losses"]) == 0
    assert capsys.readouterr().out == out
    blocks = {b.split()[0]: b for b in out.strip().split("\n\n")}
    assert list(blocks) == [n for n, s in LOSSES.items() if s.kind == "objective"] + ["nll", "bcr"]
    assert blocks["simpo"].splitlines()[0] == "simpo  objective; needs: lengths; no reference"
    assert "target_margin  default 0.5        >= 0" in blocks["simpo"]
    assert blocks["e_dpo"].splitlines()[0] == ("e_dpo  objective, batch-level; needs: reference, rewards (K >= 1); "
                                               "reads reference samples when the data has them")
    assert "ensemble_reduce  default batch_min  one of batch_min|example_min|mean" in blocks["e_dpo"]
    assert "label_smoothing  default 0.1        in [0, 0.5)" in blocks["rdpo"]
    assert blocks["bcr"].splitlines()[0] == "bcr  regularizer; needs: reference, lengths"

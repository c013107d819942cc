"""TRL's key names are refused with the robustpo key to use; real robustpo keys never are (issue 13 item 4)."""

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest
import yaml

from robustpo.config import LoraConfig, RunConfig, TrainConfig, load_config, to_dict
from robustpo.errors import ConfigError
from robustpo.loss_spec import LOSSES
from robustpo.rewards.confound import ConfoundConfig
from robustpo.rewards.plan import RewardRunConfig
from robustpo.trl_names import LOSS_TYPES, TRL_NAMES, migration_table

README = Path(__file__).resolve().parents[1] / "README.md"

# Written from the issue, not read from the mapping: TRL key -> what the message must name.
EXPECTED = {
    "per_device_train_batch_size": "`train.batch_size`",
    "gradient_accumulation_steps": "`train.grad_accum`",
    "num_train_epochs": "`train.epochs`",
    "precompute_ref_log_probs": "`train.precompute_reference`",
    "report_to": "`train.log_with`",
    "learning_rate": "`train.learning_rate`",
    "lr_scheduler_type": "`train.scheduler`",
    "seed": "`train.seed`",
    "bf16": "`mixed_precision: bf16`",
    "max_prompt_length": "`data.max_prompt_length`",
    "max_length": "`data.max_length`",
    "beta": "`loss.beta`",
    "label_smoothing": "cdpo",
    "rpo_alpha": "{name: nll, weight: ALPHA}",
    "gradient_checkpointing": "`model.gradient_checkpointing`",
    "lora_r": "`model.lora.r`",
    "dataset_name": "`data.train`",
    "eval_steps": "`train.eval_steps`",
}


def _error(tmp_path, recipe: dict, overrides=None, cls=None) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides, cls=cls)
    return str(e.value)


def _loads(tmp_path, recipe: dict, cls=None):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_config(path, cls=cls)


def test_the_message_keeps_the_path(tmp_path):
    msg = _error(tmp_path, {"train": {"per_device_train_batch_size": 4}})
    assert msg.endswith("unknown config key 'train.per_device_train_batch_size': `per_device_train_batch_size` "
                        "is `train.batch_size` in robustpo (pairs per device)")
    override = _error(tmp_path, {}, ["--train.per_device_train_batch_size=4"])
    assert "'train.per_device_train_batch_size': `per_device_train_batch_size` is `train.batch_size`" in override


@pytest.mark.parametrize("key", EXPECTED)
def test_each_trl_key_gets_its_robustpo_key(tmp_path, key):
    assert EXPECTED[key] in _error(tmp_path, {key: 1})
    if key not in {f.name for f in dataclasses.fields(TrainConfig)}:   # learning_rate, seed: real there
        assert EXPECTED[key] in _error(tmp_path, {}, [f"--train.{key}=1"])


@pytest.mark.parametrize("value,expected", [
    ("sigmoid", "`loss: {name: dpo}`"), ("ipo", "`loss: {name: ipo}`"), ("hinge", "`loss: {name: hinge}`"),
    ("robust", "`loss: {name: rdpo}`"), (["robust"], "`loss: {name: rdpo}`"),
    ("exo_pair", "no equivalent of TRL's 'exo_pair'"), ("sft", "`nll` regularizer"),
])
def test_loss_type_values(tmp_path, value, expected):
    assert expected in _error(tmp_path, {"loss_type": value})


def test_trl_names_inside_the_loss_section(tmp_path):
    msg = _error(tmp_path, {"loss": {"name": "dpo", "rpo_alpha": 1.0}})
    assert "unknown config key 'loss.rpo_alpha'" in msg and "{name: nll, weight: ALPHA}" in msg
    assert "`loss.tau`" in _error(tmp_path, {"loss": {"name": "ipo", "beta": 0.1}})
    assert "cdpo" in _error(tmp_path, {"loss": {"name": "dpo", "label_smoothing": 0.1}})


def test_reward_recipes_get_the_reward_keys(tmp_path):
    assert "`reward.center_coef`" in _error(tmp_path, {"reward": {"center_rewards_coefficient": 0.01}},
                                            cls=RewardRunConfig)
    assert "`train.batch_size`" in _error(tmp_path, {"per_device_train_batch_size": 2}, cls=RewardRunConfig)
    assert "`data.max_length`" in _error(tmp_path, {"reward": {"max_length": 64}}, cls=RewardRunConfig)


@pytest.mark.parametrize("key", TRL_NAMES)
def test_every_mapped_key_at_top_level_names_its_target(tmp_path, key):
    target, _ = TRL_NAMES[key]
    msg = _error(tmp_path, {key: 1})
    assert f"unknown config key '{key}': `{key}`" in msg
    assert (f"`{target}`" if target else "no robustpo equivalent") in msg


# ---------------------------------------------------------------- the mapping is honest


def _field_type(cls, name):
    tp = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args and dataclasses.is_dataclass(args[0]) else tp


def _resolves(path: str) -> bool:
    m = re.fullmatch(r"(loss|regularizers)\[(\w+)\]\.(\w+)", path)
    if m:
        kind = "objective" if m[1] == "loss" else "regularizer"
        return m[2] in LOSSES and LOSSES[m[2]].kind == kind and m[3] in LOSSES[m[2]].defaults
    if path.startswith("loss."):
        hp = path[len("loss."):]
        return hp == "name" or any(s.kind == "objective" and hp in s.defaults for s in LOSSES.values())
    for root in (RunConfig, RewardRunConfig):
        cls = root
        for part in path.split("."):
            if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
                break
            cls = _field_type(cls, part)
        else:
            return True
    return False


@pytest.mark.parametrize("key", [k for k, (t, _) in TRL_NAMES.items() if t])
def test_every_target_is_a_real_robustpo_key(key):
    assert _resolves(TRL_NAMES[key][0]), TRL_NAMES[key]


def test_every_loss_type_target_is_an_objective():
    for kind, (name, _) in LOSS_TYPES.items():
        assert name is None or LOSSES[name].kind == "objective", kind
    assert {"sigmoid": "dpo", "ipo": "ipo", "hinge": "hinge", "robust": "rdpo"}.items() <= {
        k: n for k, (n, _) in LOSS_TYPES.items()}.items()


def test_readme_table_is_the_mapping():
    text = README.read_text()
    assert f"<!-- trl-table -->\n{migration_table()}\n<!-- /trl-table -->" in text
    assert all("|" not in note for _, note in [*TRL_NAMES.values(), *LOSS_TYPES.values()])


# ---------------------------------------------------------------- real keys are never shadowed


def test_every_real_key_at_its_place_loads(tmp_path):
    """A recipe naming every field of every section (LoRA and confound included) at its default."""
    cfg = RunConfig()
    cfg.model.lora = LoraConfig()
    _loads(tmp_path, to_dict(cfg))
    reward = RewardRunConfig()
    reward.reward.confound = ConfoundConfig()
    _loads(tmp_path, to_dict(reward), cls=RewardRunConfig)


@pytest.mark.parametrize("recipe", [
    {"train": {"learning_rate": 1e-5, "seed": 3, "max_steps": 2, "output_dir": "runs/x"}},
    {"data": {"max_length": 128, "max_prompt_length": 64}},
    {"model": {"dtype": "float32", "trust_remote_code": False, "attn_implementation": "eager"}},
    {"loss": {"name": "cdpo", "beta": 0.2, "label_smoothing": 0.2}},
    {"loss": {"name": "simpo", "beta": 2.0}},
])
def test_names_shared_with_trl_stay_robustpo_keys(tmp_path, recipe):
    _loads(tmp_path, recipe)


def test_no_section_field_is_intercepted():
    """Every TRL name that is also a field of a section is valid there (the hint is only for other places)."""
    shared = set()
    for root in (RunConfig, RewardRunConfig):
        for section in dataclasses.fields(root):
            cls = _field_type(root, section.name)
            if dataclasses.is_dataclass(cls):
                shared |= {f"{section.name}.{f.name}" for f in dataclasses.fields(cls) if f.name in TRL_NAMES}
    assert {"train.learning_rate", "train.seed", "data.max_length", "data.max_prompt_length"} <= shared
    for path in sorted(shared):
        cls = RewardRunConfig if path.startswith("reward.") else RunConfig
        section, key = path.split(".")
        default = getattr(getattr(cls(), section), key)
        load_config(None, [f"--{path}={json.dumps(default)}"], cls=cls)   # JSON is YAML

"""Typed configs: YAML recipes plus `--section.key=value` overrides.

Unknown keys are errors with a "did you mean" (a TRL `DPOConfig` name: the robustpo key to use,
`trl_names.py`); values are checked against the field types.
The loss section is `{name: e_dpo, beta: 0.1, gamma: 0.1}`: the name plus that loss's
hyperparameters. They are resolved when the recipe loads (`LossSpec.resolve`): names checked
against the function's signature, values coerced to its defaults' types and checked against
the ranges the registry declares, defaults filled in, so that a bad value fails before any
model or data work and `config.yaml` records every value the run used.

Every other value is checked the same way, declared once per section: `ALLOWED` (field ->
`Param`, a range or choices) and `RULES` (relations between fields, `Rule`), checked by
`check_values` when a config is built from a recipe (and again by the trainers, for configs
built in Python). A bad value stops with one line naming the key:
`train.batch_size must be >= 1, got 0`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from robustpo.errors import ConfigError
from robustpo.params import Param, Rule
from robustpo.trl_names import hint as trl_hint

AT_LEAST_1, NON_NEGATIVE, POSITIVE = Param(low=1), Param(low=0), Param(low=0, open_low=True)
DTYPES = ("float32", "bfloat16", "float16", "auto")
MIXED_PRECISION = ("no", "bf16", "fp16")
# transformers' schedulers that need no arguments beyond warmup and total steps, and whose
# step() takes none (reduce_lr_on_plateau, cosine_with_min_lr, warmup_stable_decay, greedy do)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
TRACKERS = ("all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab")
FORMATS = ("auto", "explicit", "implicit", "conversational")


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Any = "all-linear"

    ALLOWED: ClassVar[dict] = {"r": AT_LEAST_1, "alpha": POSITIVE, "dropout": Param(0, 1, open_high=True)}


@dataclass
class ModelConfig:
    name_or_path: str = "tiny:llama"     # hub id, local path, or tiny:ARCH (built locally, see tiny.py)
    reference: str | None = None         # default: the policy's starting point
    tokenizer: str | None = None         # default: the model's own
    dtype: str = "float32"               # float32 | bfloat16 | float16 | auto
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    lora: LoraConfig | None = None       # set to enable LoRA; the reference is then the adapter-disabled base
    tiny_vocab_size: int = 512           # tiny:ARCH only: tokenizer size
    gradient_checkpointing: bool = False

    ALLOWED: ClassVar[dict] = {"dtype": Param(choices=DTYPES), "tiny_vocab_size": AT_LEAST_1}


@dataclass
class DataConfig:
    train: str = ""
    split: str | None = None             # for hub ids and saved DatasetDicts
    format: str = "auto"                 # auto | explicit | implicit | conversational
    max_length: int = 512
    max_prompt_length: int = 256
    strict: bool = False                 # identical chosen/rejected is an error instead of a dropped row
    drop_empty: bool = False             # drop (and count) rows with an empty response instead of failing
    max_rows: int | None = None
    eval: str | None = None              # eval pairs: a file, saved dataset folder or hub id (read like train)
    eval_split: str | None = None        # data.eval's split (hub ids, saved DatasetDicts)
    eval_fraction: float | None = None   # or: this fraction of data.train held out (seeded by train.seed)

    ALLOWED: ClassVar[dict] = {"format": Param(choices=FORMATS), "max_length": Param(low=2),
                               "max_prompt_length": AT_LEAST_1, "max_rows": AT_LEAST_1,
                               "eval_fraction": Param(0, 1, open_low=True, open_high=True)}
    RULES: ClassVar[tuple] = (Rule("max_prompt_length", lambda d: d.max_prompt_length < d.max_length,
                                   "be < data.max_length ({max_length}), so that a response keeps a token"),
                              Rule("eval_fraction", lambda d: d.eval_fraction is None or not d.eval,
                                   "be unset when data.eval is set (one source of eval pairs)"))


@dataclass
class LossConfig:
    name: str = "dpo"
    params: dict = field(default_factory=dict)   # every hyperparameter, resolved by the spec when loaded

    @property
    def spec(self):
        """The registry entry (`robustpo.loss_spec.LossSpec`) the trainer reads."""
        from robustpo.loss_spec import get_loss

        return get_loss(self.name)


@dataclass
class SaveBest:
    """Keep the checkpoint with the best eval metric as OUTPUT_DIR/best/."""
    metric: str = "eval/rewards/accuracies"
    mode: str = "max"                    # max | min

    ALLOWED: ClassVar[dict] = {"mode": Param(choices=("max", "min"))}
    RULES: ClassVar[tuple] = (Rule("metric", lambda b: b.metric.startswith("eval/") and len(b.metric) > 5,
                                   "be an eval metric (eval/loss, eval/rewards/accuracies, ...)"),)


@dataclass
class TrainConfig:
    output_dir: str = "runs/robustpo"
    seed: int = 0
    epochs: int = 1
    max_steps: int = -1                  # optimizer steps; overrides epochs when > 0
    batch_size: int = 8                  # pairs per device per micro-batch
    grad_accum: int = 1
    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    adam_betas: tuple = (0.9, 0.999)
    scheduler: str = "linear"            # any transformers scheduler name
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0           # 0 disables clipping
    mixed_precision: str = "no"          # no | bf16 | fp16 (accelerate)
    precompute_reference: bool = True    # cache reference log-probs on disk; the reference is not loaded while training
    reference_cache_dir: str | None = None  # default: OUTPUT_DIR/reference_cache
    logging_steps: int = 1
    save_steps: int = 0                  # checkpoint every N optimizer steps (0: none until the end)
    save_total_limit: int = 2
    log_with: list = field(default_factory=list)   # accelerate trackers: tensorboard, wandb, trackio, mlflow
    collapse_warning_nats: float = 5.0   # warn when mean Δ(w) falls below −this
    response_only_projection: bool = True  # vocabulary projection only where a response token is predicted
    prefix_sharing: bool = True          # prompt computed once per pair (4-D block mask); falls back when unsupported
    group_by_length: bool = True         # batches of similar length (shuffled megabatches): less padding
    shuffle: bool = True
    skip_nonfinite: int = 0              # batches with a non-finite loss or gradient to skip (no optimizer step) before stopping
    eval_steps: int = 0                  # evaluate every N optimizer steps (0: only at the end), when there are eval pairs
    eval_batch_size: int | None = None   # pairs per device per eval batch (default: batch_size)
    save_best: SaveBest | None = None    # {metric: eval/..., mode: max|min}: keep the best checkpoint as best/

    ALLOWED: ClassVar[dict] = {
        "seed": NON_NEGATIVE, "epochs": NON_NEGATIVE, "batch_size": AT_LEAST_1, "grad_accum": AT_LEAST_1,
        "learning_rate": POSITIVE, "weight_decay": NON_NEGATIVE, "adam_betas": Param(0, 1, open_high=True, items=2),
        "scheduler": Param(choices=SCHEDULERS), "warmup_ratio": Param(0, 1), "max_grad_norm": NON_NEGATIVE,
        "mixed_precision": Param(choices=MIXED_PRECISION), "logging_steps": AT_LEAST_1, "save_steps": NON_NEGATIVE,
        "save_total_limit": NON_NEGATIVE, "log_with": Param(choices=TRACKERS, items=0),
        "collapse_warning_nats": NON_NEGATIVE, "skip_nonfinite": NON_NEGATIVE, "eval_steps": NON_NEGATIVE,
        "eval_batch_size": AT_LEAST_1,
    }
    RULES: ClassVar[tuple] = (Rule("epochs", lambda t: t.epochs >= 1 or t.max_steps > 0,
                                   "be >= 1 unless train.max_steps > 0 (a run of no steps trains nothing)"),)


def _trainable_precision(cfg) -> bool:
    """float16 weights are trained only as a frozen LoRA base under loss scaling."""
    return cfg.model.dtype != "float16" or (cfg.model.lora is not None and cfg.train.mixed_precision == "fp16")


PRECISION = Rule("model.dtype", _trainable_precision,
                 "not be float16 here: float16 weights trained without loss scaling turn into NaN within a few "
                 "steps; use model.dtype: float32 with train.mixed_precision: fp16 (loss-scaled), or bfloat16 "
                 "(model.dtype: bfloat16, or train.mixed_precision: bf16)")


def has_eval(data: DataConfig) -> bool:
    return bool(data.eval) or data.eval_fraction is not None


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    regularizers: list = field(default_factory=list)   # [LossConfig]
    train: TrainConfig = field(default_factory=TrainConfig)

    RULES: ClassVar[tuple] = (
        PRECISION,
        Rule("train.save_best", lambda c: c.train.save_best is None or has_eval(c.data),
             "be unset without eval pairs (set data.eval or data.eval_fraction)"),
        Rule("train.eval_steps", lambda c: c.train.eval_steps == 0 or has_eval(c.data),
             "be 0 without eval pairs (set data.eval or data.eval_fraction)"))


# ------------------------------------------------------------------------------ parsing


def _unknown(path: str, key, value, known: list[str]) -> ConfigError:
    """A TRL name gets the robustpo key to use (trl_names.py); anything else a "did you mean"."""
    trl = trl_hint(key, value)
    return ConfigError(f"unknown config key '{path}'" + (f": {trl}" if trl else _suggest(key, known)))


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if tp is list and isinstance(value, str):
        return [value]                    # `log_with: tensorboard` means [tensorboard]
    if tp is Any or tp is dict or tp is list:
        return value
    if tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `2e-5` (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _loss_from(value, where: str) -> LossConfig:
    from robustpo.loss_spec import get_loss

    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{where}: expected {{name: ..., <hyperparameters>}}, got {value!r}")
    params = {k: v for k, v in value.items() if k != "name"}
    kind = "regularizer" if where.startswith("regularizers") else "objective"
    try:
        spec = get_loss(value["name"], kind)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for k, v in params.items():   # `loss: {name: dpo, rpo_alpha: 1}`: TRL's name, not a hyperparameter here
        if k not in spec.defaults and trl_hint(k, v):
            raise _unknown(f"{where}.{k}", k, v, list(spec.defaults))
    return LossConfig(name=spec.name, params=spec.resolve(params, where))


def check_values(cfg, where: str = "") -> None:
    """Check every field of `cfg` and of its sections against their `ALLOWED` and `RULES`;
    raise ConfigError naming the first bad key (`where.key`)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, f"{where}.{f.name}" if where else f.name)
    prefix = f"{where}." if where else ""
    for key, allowed in getattr(type(cfg), "ALLOWED", {}).items():
        value = getattr(cfg, key)
        if value is not None and not allowed.allows(value):
            raise ConfigError(f"{prefix}{key} must be {allowed}, got {value!r}")
    for rule in getattr(type(cfg), "RULES", ()):
        if not rule.holds(cfg):
            key = rule.key if "." in rule.key else prefix + rule.key
            value = cfg
            for part in rule.key.split("."):
                value = getattr(value, part)
            fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
            raise ConfigError(f"{key} must {rule.must.format(**fields)}, got {value!r}")


def from_dict(cls, data: dict, where: str = ""):
    cfg = _from_dict(cls, data, where)
    if not where:
        check_values(cfg)
    return cfg


def _from_dict(cls, data: dict, where: str = ""):
    if cls is RunConfig:
        data = dict(data)
        loss = _loss_from(data.pop("loss", {"name": "dpo"}), "loss")
        regs = data.pop("regularizers", []) or []
        if not isinstance(regs, list):
            raise ConfigError("regularizers: expected a list of {name: ..., weight: ...}")
        regularizers = [_loss_from(r, f"regularizers[{i}]") for i, r in enumerate(regs)]
        cfg = from_dict_plain(cls, data, where)
        cfg.loss, cfg.regularizers = loss, regularizers
        return cfg
    return from_dict_plain(cls, data, where)


def from_dict_plain(cls, data: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise _unknown(path, key, value, list(fields))
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {} if node.get(p) is None else node[p]
            if not isinstance(node[p], dict):
                raise ConfigError(f"override --{dotted}: '{p}' is not a section")
        node = node[p]
    node[parts[-1]] = value


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """`--train.learning_rate=1e-4` -> ('train.learning_rate', 1e-4); values parsed as YAML."""
    out = []
    for a in args:
        if not a.startswith("--") or "=" not in a:
            raise ConfigError(f"override '{a}' must look like --section.key=value")
        key, raw = a[2:].split("=", 1)
        out.append((key, yaml.safe_load(raw) if raw != "" else None))
    return out


def load_config(recipe: str | Path | dict | None, overrides: list[str] | dict | None = None, cls=None):
    """Read a recipe into `cls` (default RunConfig): a YAML file, or the same tree as a dict or
    as a config object (the Python API; the object is not changed). Overrides: CLI strings
    `--a.b=value` (values parsed as YAML) or a dict `{"a.b": value}`."""
    cls = cls or RunConfig
    if dataclasses.is_dataclass(recipe) and not isinstance(recipe, type):
        recipe = to_dict(recipe)
    path = None if isinstance(recipe, dict) else recipe
    data: dict = copy.deepcopy(recipe) if isinstance(recipe, dict) else {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such recipe file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    pairs = list(overrides.items()) if isinstance(overrides, dict) else parse_overrides(overrides or [])
    for key, value in pairs:
        _set_path(data, key, value)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def to_dict(cfg) -> dict:
    """Resolved config, as saved beside the model. Loss params are flattened back."""
    d = dataclasses.asdict(cfg)
    if isinstance(cfg, RunConfig):
        d["loss"] = {"name": cfg.loss.name, **cfg.loss.params}
        d["regularizers"] = [{"name": r.name, **r.params} for r in cfg.regularizers]
    if "train" in d:
        d["train"]["adam_betas"] = list(cfg.train.adam_betas)
    return d

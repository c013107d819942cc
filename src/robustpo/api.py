"""The Python API: the CLI's commands as functions, with the same arguments and checks.

    import robustpo
    run = robustpo.train("recipes/testbed/dpo.yaml", overrides=["--train.learning_rate=1e-3"])
    run.final_dir, run.metrics["rewards/accuracies"]
    fam = robustpo.reward.train({"model": {...}, "data": {...}, "reward": {...}})
    robustpo.reward.score(fam.family_dir, "pairs.jsonl", "scored.jsonl")
    robustpo.reward.eval(fam.family_dir, "validation.jsonl")["mean_of_members"]["accuracy"]
    robustpo.eval({"dpo": run.run_dir}, reference="ref/", prompts="test.jsonl", gold="testbed")

A recipe is a YAML path or the same tree as a dict; overrides are the CLI's `--a.b=value`
strings or a dict `{"a.b": value}`. The CLI commands call these functions, so the two cannot
disagree. Errors are the CLI's (`robustpo.errors.RobustpoError` subclasses), raised instead of
printed. Heavy imports stay inside the functions: `import robustpo` does not load torch.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainRun:
    run_dir: Path           # train.output_dir: config.yaml, metrics.jsonl, checkpoints/, ...
    final_dir: Path         # the trained model, a plain `transformers` folder
    steps: int              # optimizer steps taken
    metrics: dict           # the last logged training metrics (the last row of metrics.jsonl)
    summary: dict           # train_summary.json: data counts, truncation, skipped batches
    eval_metrics: dict = field(default_factory=dict)   # the last evaluation's row (data.eval / eval_fraction)


@dataclass
class RewardRun:
    family_dir: Path        # family.json and members/<name>/
    manifest: dict          # family.json: members, their b̂, confound correlation, held-out metrics


def train(recipe, overrides=None, *, resume: bool = False, overwrite: bool = False,
          allow_changes: bool = False) -> TrainRun:
    """`robustpo train RECIPE [--k=v ...] [--resume] [--overwrite] [--allow-changes]`."""
    import json

    from robustpo.config import RunConfig, load_config
    from robustpo.errors import ConfigError
    from robustpo.model_card import last_metrics
    from robustpo.train.preference import train_preference

    if allow_changes and not resume:
        raise ConfigError("allow_changes only applies to resume")
    cfg = recipe if isinstance(recipe, RunConfig) and not overrides else load_config(recipe, overrides)
    result = train_preference(cfg, resume=resume, overwrite=overwrite, allow_changes=allow_changes)
    run_dir = result.final_dir.parent
    summary = json.loads((run_dir / "train_summary.json").read_text())
    # eval rows (step and eval/ keys only) sit among the train rows: each kind's last row
    return TrainRun(run_dir, result.final_dir, result.steps, last_metrics(run_dir), summary,
                    last_metrics(run_dir, "eval"))


def reward_train(recipe, overrides=None, *, resume: bool = False, overwrite: bool = False,
                 allow_changes: bool = False) -> RewardRun:
    """`robustpo reward train RECIPE [--k=v ...] [--resume] [--overwrite] [--allow-changes]`."""
    import json

    from robustpo.config import load_config
    from robustpo.errors import ConfigError
    from robustpo.rewards.plan import RewardRunConfig
    from robustpo.train.reward import train_reward_family

    if allow_changes and not resume:
        raise ConfigError("allow_changes only applies to resume")
    cfg = recipe if isinstance(recipe, RewardRunConfig) and not overrides else \
        load_config(recipe, overrides, cls=RewardRunConfig)
    out = train_reward_family(cfg, resume=resume, overwrite=overwrite, allow_changes=allow_changes)
    return RewardRun(out, json.loads((out / "family.json").read_text()))


def reward_score(family, data, out, *, normalize: str = "none", stats_from=None, batch_size: int = 32,
                 device: str = "cpu", format: str = "auto", split=None, drop_empty: bool = False,
                 overwrite: bool = False):
    """`robustpo reward score --family F --data IN --out OUT`: returns a rewards.score.ScoreResult."""
    from robustpo.rewards.family import load_family
    from robustpo.rewards.score import score_dataset

    loaded = load_family(family, batch_size=batch_size, device=device)
    return score_dataset(loaded, data, out, normalize=normalize, stats_from=stats_from, batch_size=batch_size,
                         fmt=format, split=split, drop_empty=drop_empty, overwrite=overwrite)


def reward_eval(family, data, *, batch_size: int = 32, device: str = "cpu", drop_empty: bool = False) -> dict:
    """`robustpo reward eval --family F --data PAIRS`: accuracy, ECE and the confound's share of
    the margin, per member ("members") and for the family mean ("mean_of_members"); "data_report": the
    rows read and dropped."""
    from robustpo.data.schema import load_preferences
    from robustpo.rewards.evaluate import evaluate_family

    rows, report = load_preferences(str(data), drop_empty=drop_empty)
    metrics = evaluate_family(family, rows, batch_size=batch_size, device=device)   # Bradley–Terry or pairwise
    return {**metrics, "data_report": report.summary()}


def named_policies(specs) -> dict[str, str]:
    """`NAME=PATH` or `PATH` (named by its folder; RUN_DIR/final by RUN_DIR) -> {name: path}."""
    from robustpo.errors import ConfigError

    out: dict[str, str] = {}
    for spec in map(str, specs):
        name, sep, path = spec.partition("=")
        if not sep:
            p = Path(spec)
            name, path = (p.parent.name if p.name == "final" else p.name) or spec, spec
        if name in out:
            raise ConfigError(f"two policies are named '{name}'; name them with NAME=PATH")
        out[name] = path
    return out


GOLD_ALIASES = {"testbed": "robustpo.testbed.task:gold_rewards"}


def evaluate(policies, reference, prompts, *, out=None, gold=None, judge=None, train_pairs=None,
             max_prompts: int | None = None, **settings) -> dict:
    """`robustpo eval --policy NAME=PATH ... --reference R --prompts P [--out DIR]`.

    `policies`: {name: path} or a list of `[NAME=]PATH` (named_policies); `prompts`: a file or a list
    of prompt strings; `gold`: "testbed", "module:function" or a function; `judge`: a judge
    spec or object; `settings`: the fields of eval.evaluate.EvalSettings (max_new_tokens, seed,
    ...). Returns the result dict (`policies[name]["win_rate"]`, ...); with `out`, also writes
    the CLI's files there."""
    from robustpo.data.io import read_records
    from robustpo.data.schema import read_prompts
    from robustpo.eval.evaluate import EvalSettings, evaluate_policies, resolve_model_path
    from robustpo.eval.report import write_eval_outputs
    from robustpo.models import check_model_source

    if not isinstance(policies, dict):
        policies = named_policies([policies] if isinstance(policies, (str, Path)) else policies)
    for name, path in policies.items():
        check_model_source(str(resolve_model_path(path)), f"policy {name}")
    check_model_source(str(resolve_model_path(reference)), "reference")
    if isinstance(gold, str):
        from robustpo.judges.function import import_object

        gold = import_object(GOLD_ALIASES.get(gold, gold))
    if isinstance(judge, str):
        from robustpo.judges import load_judge

        judge = load_judge(judge)
    if isinstance(prompts, (str, Path)):
        prompts = read_prompts(str(prompts), limit=max_prompts)
    elif max_prompts:
        prompts = list(prompts)[:max_prompts]
    if isinstance(train_pairs, (str, Path)):
        train_pairs = read_records(train_pairs)
    result = evaluate_policies(policies, reference, prompts, gold_fn=gold, judge=judge,
                               settings=EvalSettings(**settings), train_pairs=train_pairs)
    if out is not None:
        result["written"] = {k: str(v) for k, v in write_eval_outputs(result, out).items()}
    return result


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return self.__api__(*args, **kwargs)


def make_callable(package: str, function) -> None:
    """Let `robustpo.train(...)` / `robustpo.eval(...)` call `function` although `robustpo.train`
    and `robustpo.eval` are packages (their modules import as usual): the package's module
    object gets a class with `__call__`. Called from the package's own __init__."""
    module = sys.modules[package]
    module.__api__ = function
    module.__class__ = _CallablePackage

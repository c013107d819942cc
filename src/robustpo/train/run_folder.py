"""A trainer's run folder (OUTPUT_DIR): the checks before any work, the lock, and what resume,
overwrite and a changed recipe do to it.

`preflight` checks everything that needs no data and touches no model or folder. `run_folder`
holds OUTPUT_DIR for the whole run: locked, cleared of leftovers or of what --overwrite
replaces (`RunLayout.owned`), and on --resume compared with the run's own config.yaml and
inputs.json, every change recorded in config_changes.jsonl. The loop itself (train/loop.py)
only writes checkpoints and metrics into it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robustpo.data.io import AppendOnlyJsonl, write_json_atomic
from robustpo.train.loop import latest_checkpoint

def preflight(cfg) -> None:
    """Every check that needs no data and touches no model or run folder, before any work:
    each config value (config.check_values), the model sources, the data source given, and
    that the output folders can be written. One line naming the key on failure."""
    from robustpo.config import check_values
    from robustpo.data.io import check_writable
    from robustpo.errors import ConfigError
    from robustpo.models import check_model_source

    check_values(cfg)
    check_model_source(cfg.model.name_or_path, "model.name_or_path")
    check_model_source(cfg.model.reference, "model.reference")
    check_model_source(cfg.model.tokenizer, "model.tokenizer", files=("tokenizer_config.json", "tokenizer.json"))
    if not cfg.data.train:
        raise ConfigError("data.train is required (a file, a saved dataset folder or a hub id)")
    check_writable(cfg.train.output_dir, "train.output_dir")
    if cfg.train.reference_cache_dir:
        check_writable(cfg.train.reference_cache_dir, "train.reference_cache_dir")


# Settings that cannot change what a run computes: they may differ on --resume (the change is
# still recorded in config_changes.jsonl). Every other key changes the run and needs
# --allow-changes. skip_nonfinite only decides whether a run that meets a non-finite batch goes
# on; the batches it skips are counted in the metrics.
FREE_ON_RESUME = ("train.logging_steps", "train.save_steps", "train.save_total_limit", "train.log_with",
                  "train.output_dir", "train.reference_cache_dir", "train.collapse_warning_nats",
                  "train.skip_nonfinite")
CONFIG_CHANGES = "config_changes.jsonl"
INPUTS = "inputs.json"
_MISSING = "(unset)"


@dataclass(frozen=True)
class RunLayout:
    """What a trainer's run folder holds. `owned`: every name it writes there (removed by
    --overwrite, with the temp files of their atomic writes); `progress(folder)`: whether the
    folder holds work worth keeping (then a new run needs --resume or --overwrite; a folder with
    only leftovers of a run that stopped before its first logged step is simply cleared)."""

    owned: tuple[str, ...]
    progress: Callable[[Path], bool]
    what: str = "a run"
    also_owned: Callable[[Path], list[Path]] = lambda run_dir: []   # owned paths found by looking
    other: Callable[[Path], str | None] = lambda run_dir: None      # the other kind of run it holds, if any


def tracker_logs(run_dir: Path) -> list[Path]:
    """accelerate's TensorBoard logs (OUTPUT_DIR/robustpo/), when that folder holds event files only."""
    folder = run_dir / "robustpo"
    if not folder.is_dir() or folder.is_symlink():
        return []
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    return [folder] if all(p.name.startswith("events.out.tfevents.") for p in files) else []


def has_steps(run_dir: Path) -> bool:
    """A loop run with work in it: a complete checkpoint, or a logged step."""
    if latest_checkpoint(run_dir) is not None:
        return True
    metrics = run_dir / "metrics.jsonl"
    try:
        with open(metrics, "rb") as f:
            return any(line.endswith(b"\n") for line in f)
    except OSError:
        return False


def _remove(run_dir: Path, layout: RunLayout) -> list[str]:
    """Remove what `layout` owns in `run_dir` (names, the temp files of their atomic writes, and
    `also_owned`); return the names removed."""
    paths = [p for name in layout.owned for p in [run_dir / name, *run_dir.glob(f".{name}.*.tmp")]]
    removed = []
    for path in paths + layout.also_owned(run_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


def _nested_diff(old, new, prefix=""):
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            yield from _nested_diff(old.get(k, _MISSING), new.get(k, _MISSING), f"{prefix}.{k}" if prefix else k)
    elif old != new:
        yield prefix, old, new


def _set_dotted(tree: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for p in parents:
        if not isinstance(tree.get(p), dict):
            tree[p] = {}
        tree = tree[p]
    tree[last] = value


def input_fingerprints(cfg) -> dict:
    """Content fingerprints of the run's data files (a hub id stands for itself)."""
    from robustpo.data.io import file_fingerprint

    sources = {"data.train": cfg.data.train}
    if getattr(cfg.data, "eval", None):
        sources["data.eval"] = cfg.data.eval
    heldout = getattr(getattr(cfg, "reward", None), "heldout", None)
    if heldout:
        sources["reward.heldout"] = heldout
    return {f"{k}:content": file_fingerprint(v) if Path(v).exists() else f"hub:{v}" for k, v in sources.items()}


def _resume_changes(run_dir: Path, cfg, inputs: dict) -> list[tuple[str, object, object]]:
    """(key, old, new), by key, of every value that differs from the run's own: its config.yaml (values
    re-read through today's parser, so that new keys with their defaults are no change) and
    inputs.json, with the changes already recorded in config_changes.jsonl applied."""
    import copy

    import yaml

    from robustpo.config import from_dict, to_dict
    from robustpo.errors import ConfigError

    saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    try:
        saved = to_dict(from_dict(type(cfg), saved))
    except ConfigError:
        pass   # a value today's checks refuse: compare the raw values
    old_inputs = json.loads((run_dir / INPUTS).read_text()) if (run_dir / INPUTS).exists() else {}
    effective = copy.deepcopy(saved)
    changes_path = run_dir / CONFIG_CHANGES
    if changes_path.exists():
        for line in changes_path.read_text().splitlines():
            row = json.loads(line)
            if row["key"].endswith(":content"):
                old_inputs[row["key"]] = row["new"]
            else:
                _set_dotted(effective, row["key"], row["new"])
    changes = list(_nested_diff(effective, to_dict(cfg)))
    changes += [(k, old_inputs[k], v) for k, v in inputs.items() if k in old_inputs and old_inputs[k] != v]
    return sorted(changes, key=lambda c: c[0])


def _resume_position(run_dir: Path) -> int:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        return int(ckpt.name.split("-")[1])
    runs = [d for d in (run_dir / "runs").glob("*") if d.is_dir() and not (d / "summary.json").exists()]
    steps = [int(c.name.split("-")[1]) for d in runs if (c := latest_checkpoint(d)) is not None]
    return max(steps, default=0)


@contextlib.contextmanager
def run_folder(accelerator, run_dir: Path, cfg, layout: RunLayout, *, resume: bool, overwrite: bool,
               allow_changes: bool = False):
    """Hold OUTPUT_DIR for the whole run: lock it (robustpo.locks; main process), make it ready,
    write the resolved config.yaml (all processes wait).

    A folder with progress (`layout.progress`) continues only with `resume`, after the resolved
    config and the data's content are compared with the run's own: a change to any key outside
    FREE_ON_RESUME is refused, listing the keys, unless `allow_changes`; every change is then
    appended to config_changes.jsonl (step, key, old, new) and config.yaml keeps the values the
    run started with. `overwrite` removes everything the run owns (`layout.owned`) first."""
    import yaml

    from robustpo.config import to_dict
    from robustpo.errors import ConfigError
    from robustpo.locks import exclusive_output

    with contextlib.ExitStack() as stack:
        if accelerator.is_main_process:
            stack.enter_context(exclusive_output(run_dir, what="run folder", folder=True))
            other = layout.other(run_dir)
            if other is not None:   # never cleared or overwritten by this kind of run
                raise ConfigError(f"{run_dir} holds {other}, not {layout.what}: set train.output_dir to another folder")
            progress = layout.progress(run_dir)
            if progress and not resume and not overwrite:
                raise ConfigError(f"{run_dir} already holds {layout.what}: pass --resume to continue it, --overwrite "
                                  "to start over, or set train.output_dir to another folder")
            inputs = input_fingerprints(cfg)
            continuing = resume and progress and (run_dir / "config.yaml").exists()
            if continuing:
                changes = _resume_changes(run_dir, cfg, inputs)
                binding = [c for c in changes if c[0] not in FREE_ON_RESUME]
                if binding and not allow_changes:
                    listed = ", ".join(f"{k} ({o!r} -> {n!r})" for k, o, n in binding)
                    raise ConfigError(f"cannot resume {run_dir}: the run was made with other values of {listed}; "
                                      "resume with the run's own values, or pass --allow-changes to continue with "
                                      f"these (recorded in {CONFIG_CHANGES}; config.yaml keeps the original)")
                if changes:
                    step = _resume_position(run_dir)
                    with AppendOnlyJsonl(run_dir / CONFIG_CHANGES) as log:
                        for key, old, new in changes:
                            log.append({"step": step, "key": key, "old": old, "new": new})
                    accelerator.print(f"resuming with {len(changes)} changed value(s) from step {step}: "
                                      f"{', '.join(k for k, _, _ in changes)} (recorded in {CONFIG_CHANGES})")
            else:
                # --overwrite, or leftovers without progress: start clean (a --resume of a run
                # whose config.yaml is missing keeps everything)
                removed = _remove(run_dir, layout) if (overwrite and not resume) or not progress else []
                if removed and not overwrite:
                    accelerator.print(f"{run_dir}: removed what a run that stopped before its first step left: "
                                      f"{', '.join(sorted(removed))}")
                (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
                write_json_atomic(run_dir / INPUTS, inputs)
        accelerator.wait_for_everyone()
        yield

"""The one explicit training loop, on `accelerate`.

Every trainer (preference, reward, SFT) supplies a `step_fn(model, batch) -> (loss, metrics)`
and this loop does the rest: data order, gradient accumulation, clipping, optimizer and
scheduler steps, metrics (console, `metrics.jsonl`, accelerate trackers), checkpoints and
resume. `accelerate launch` turns the same loop into DDP / FSDP / DeepSpeed.

Determinism and resume: the data order of epoch e is a permutation drawn from
(seed, e) alone, so the position in the data is just (epoch, micro-batches consumed). A
checkpoint holds model, optimizer, scheduler, RNG states (accelerate's `save_state`) and
that position; it is written to a temp folder and renamed, so a run killed at any point
resumes from the last complete checkpoint and replays exactly what an uninterrupted run
would have done.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Subset

from robustpo.config import TrainConfig
from robustpo.data.io import AppendOnlyJsonl, write_json_atomic


def quiet_progress() -> bool:
    """TQDM_DISABLE=1 hides robustpo's progress bars too (they pass `disable` themselves, which
    would otherwise override tqdm's own reading of the variable)."""
    import os

    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")


def make_accelerator(cfg: TrainConfig, run_dir: Path):
    """The Accelerator every trainer uses.

    Launched with several processes on a machine without CUDA (torchrun, or CI), accelerate
    only forms a gloo process group when told `cpu=True`; elsewhere it picks the device.
    """
    import os

    from accelerate import Accelerator

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                       log_with=cfg.log_with or None, project_dir=str(run_dir),
                       cpu=distributed and not torch.cuda.is_available())


def open_run_dir(accelerator, run_dir: Path, cfg, *, resume: bool, overwrite: bool,
                 evidence: tuple[str, ...], cleared: tuple[str, ...] = (), what: str = "a run") -> None:
    """Make OUTPUT_DIR ready for a run and write its resolved config.yaml (main process; all wait).

    A folder holding any of `evidence` already holds a run: continuing it needs `resume`;
    `overwrite` removes `evidence` and `cleared` first, so two runs never mix in one folder.
    """
    import yaml

    from robustpo.config import to_dict
    from robustpo.errors import ConfigError

    if accelerator.is_main_process:
        has_run = any((run_dir / name).exists() for name in evidence)
        if has_run and not resume and not overwrite:
            raise ConfigError(f"{run_dir} already holds {what}: pass --resume to continue it, --overwrite to start "
                              "over, or set train.output_dir to another folder")
        if overwrite and not resume:
            for name in (*evidence, *cleared):
                path = run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    accelerator.wait_for_everyone()


@dataclass
class LoopState:
    step: int = 0            # optimizer steps done
    epoch: int = 0
    consumed: int = 0        # micro-batches of `epoch` already consumed (per process)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool, lengths: list[int] | None = None,
                group_size: int = 0) -> list[int]:
    """The data order of one epoch, a function of (seed, epoch) alone.

    With `lengths` and `group_size` (the pairs of one optimizer step), the shuffled order is cut into
    megabatches of 32 batches, each sorted by length, and the batches are shuffled again:
    batches hold similar lengths (little padding) while the data stay randomly mixed.
    """
    if not shuffle:
        return list(range(n))
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is None or group_size <= 1:
        return order
    mega = 32 * group_size
    order = [i for s in range(0, n, mega) for i in sorted(order[s:s + mega], key=lambda i: -lengths[i])]
    batches = [order[s:s + group_size] for s in range(0, n, group_size)]
    # Keep the longest batch first (memory problems show at once), shuffle the rest.
    rest = [batches[i + 1] for i in torch.randperm(len(batches) - 1, generator=g).tolist()] if batches else []
    return [i for b in batches[:1] + rest for i in b]


def total_optimizer_steps(n_items: int, cfg: TrainConfig, num_processes: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    micro_per_epoch = math.ceil(n_items / (cfg.batch_size * num_processes))
    return cfg.epochs * math.ceil(micro_per_epoch / cfg.grad_accum)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = [p for p in (run_dir / "checkpoints").glob("step-*") if (p / "loop_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1]), default=None)


def _save_checkpoint(accelerator, run_dir: Path, state: LoopState, keep: int) -> None:
    final = run_dir / "checkpoints" / f"step-{state.step}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / "loop_state.json", asdict(state))
        tmp.rename(final)
        done = sorted((p for p in final.parent.glob("step-*") if not p.name.endswith(".tmp")),
                      key=lambda p: int(p.name.split("-")[1]))
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _mean_metrics(accelerator, window: list[dict]) -> dict:
    """Average each metric over the micro-batches of a step, then over processes."""
    keys = sorted({k for m in window for k in m})
    local = torch.tensor([sum(m[k] for m in window if k in m) / max(1, sum(k in m for m in window))
                          for k in keys], device=accelerator.device, dtype=torch.float64)
    reduced = accelerator.reduce(local, reduction="mean") if accelerator.num_processes > 1 else local
    return dict(zip(keys, reduced.tolist()))


def run_loop(*, accelerator, model, optimizer, scheduler, dataset, collate_fn, step_fn: Callable,
             cfg: TrainConfig, run_dir: Path, total_steps: int, resume: bool,
             on_log: Callable[[dict], None] | None = None, lengths: list[int] | None = None) -> LoopState:
    """Train `model` (already `accelerator.prepare`d with optimizer and scheduler) to `total_steps`.

    `lengths` (tokens per item) enables length-grouped batches when `cfg.group_by_length`."""
    from tqdm.auto import tqdm

    state = LoopState()
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = LoopState(**json.loads((ckpt / "loop_state.json").read_text()))
        accelerator.print(f"resuming from {ckpt} (step {state.step})")
    metrics_log = None
    if accelerator.is_main_process:
        metrics_log = AppendOnlyJsonl(run_dir / "metrics.jsonl")
        if any(r.get("step", 0) > state.step for r in metrics_log.rows) or (ckpt is None and metrics_log.rows):
            # Steps logged after the checkpoint we resume from will be replayed: drop them.
            metrics_log.close()
            kept = [r for r in metrics_log.rows if ckpt is not None and r.get("step", 0) <= state.step]
            from robustpo.data.io import write_jsonl_atomic

            write_jsonl_atomic(run_dir / "metrics.jsonl", kept)
            metrics_log = AppendOnlyJsonl(run_dir / "metrics.jsonl")

    bar = tqdm(total=total_steps, initial=state.step, desc="train",
               disable=not accelerator.is_local_main_process or quiet_progress(),
               dynamic_ncols=True)
    window: list[dict] = []
    t_last, pairs_since = time.perf_counter(), 0
    model.train()
    while state.step < total_steps:
        order = epoch_order(len(dataset), cfg.seed, state.epoch, cfg.shuffle,
                            # the unit is one optimizer step's pairs, so accumulation and the
                            # number of processes do not change which pairs train together
                            lengths if cfg.group_by_length else None,
                            cfg.batch_size * cfg.grad_accum * accelerator.num_processes)
        loader = accelerator.prepare(DataLoader(Subset(dataset, order), batch_size=cfg.batch_size,
                                                collate_fn=collate_fn))
        if state.consumed:
            loader = accelerator.skip_first_batches(loader, state.consumed)
        for batch in loader:
            with accelerator.accumulate(model):
                loss, metrics = step_fn(model, batch)
                accelerator.backward(loss)
                window.append({"loss": loss.detach().item(), **metrics})
                pairs_since += len(batch["index"])
                if accelerator.sync_gradients:
                    grad_norm = None
                    if cfg.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            state.consumed += 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            bar.update(1)
            if state.step % cfg.logging_steps == 0 or state.step == total_steps:
                row = _mean_metrics(accelerator, window)
                now = time.perf_counter()
                row.update(step=state.step, epoch=state.epoch, lr=scheduler.get_last_lr()[0],
                           pairs_per_s=pairs_since * accelerator.num_processes / max(now - t_last, 1e-9))
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                t_last, pairs_since = now, 0
                if metrics_log is not None:
                    metrics_log.append(row)
                accelerator.log({k: v for k, v in row.items() if k != "step"}, step=state.step)
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                if on_log is not None:
                    on_log(row)
            window = []
            if cfg.save_steps > 0 and state.step % cfg.save_steps == 0 and state.step < total_steps:
                _save_checkpoint(accelerator, run_dir, state, cfg.save_total_limit)
            if state.step >= total_steps:
                break
        else:
            state.epoch += 1
            state.consumed = 0
    bar.close()
    if metrics_log is not None:
        metrics_log.close()
    return state

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


def start_trackers(accelerator, cfg, project: str = "robustpo") -> None:
    """accelerate's trackers (train.log_with) with the run's config as their hyperparameters.

    The config is flattened to dotted keys with scalar values (lists and dicts as JSON text,
    None as "null"): TensorBoard's hparams accept only int, float, str and bool, and refuse
    the whole run otherwise."""
    import json

    from robustpo.config import to_dict

    def flat(value, prefix=""):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                yield from flat(v, f"{prefix}{k}.")
        elif isinstance(value, (bool, int, float, str)):
            yield prefix[:-1], value
        else:
            yield prefix[:-1], "null" if value is None else json.dumps(value, default=str)

    if cfg.train.log_with:
        accelerator.init_trackers(project, config=dict(flat(to_dict(cfg))))


def shared_base(accelerator, model_cfg, run_dir: Path, texts, seed: int) -> str:
    """models.materialize_base on the main process first (a `tiny:` model is built and saved
    once), then on every process, where it is a no-op: all load the same starting weights."""
    from robustpo.models import materialize_base

    if accelerator.is_main_process:
        materialize_base(model_cfg, run_dir, texts, seed)
    accelerator.wait_for_everyone()
    return materialize_base(model_cfg, run_dir, texts, seed)   # now a no-op: the folder exists


@dataclass
class LoopState:
    step: int = 0            # optimizer steps done (skipped non-finite batches included)
    epoch: int = 0
    consumed: int = 0        # micro-batches of `epoch` already consumed (per process)
    nonfinite_skipped: int = 0   # steps whose batches had a non-finite loss or gradient: no update


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


def make_optimizer_and_scheduler(params, cfg: TrainConfig, n_items: int, num_processes: int):
    """(optimizer, scheduler, total optimizer steps) for `params` (tensors, or AdamW parameter
    groups), the same for every trainer: AdamW with the run's lr, betas and weight decay, and
    `cfg.scheduler` with warm-up over `cfg.warmup_ratio` of the steps."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas),
                                  weight_decay=cfg.weight_decay)
    total = total_optimizer_steps(n_items, cfg, num_processes)
    # accelerate steps a prepared scheduler once per process per optimizer step: scale to match.
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total) * num_processes,
                              num_training_steps=total * num_processes)
    return optimizer, scheduler, total


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


ELSEWHERE = "a non-finite value on another process"


def _rows_text(rows: list[int], source: str | None) -> str:
    """'rows 3, 8 and 41 of FILE' from 0-based data indices (file rows, as errors number them)."""
    ordered = sorted({r + 1 for r in rows})
    shown = ", ".join(map(str, ordered[:32])) + (f" and {len(ordered) - 32} more" if len(ordered) > 32 else "")
    return f"row{'s' if len(ordered) > 1 else ''} {shown}" + (f" of {source}" if source else "")


def _first_problem(step_fn, model, batch) -> tuple[object, dict, str | None, list[int]]:
    """(loss, metrics, problem, rows): run the step function; `problem` describes a non-finite
    input to the objective or a non-finite loss (None when all is finite), `rows` the batch's
    data indices it concerns."""
    from robustpo.errors import NonFiniteError

    rows = batch["index"].tolist()
    try:
        loss, metrics = step_fn(model, batch)
    except NonFiniteError as e:
        return None, {}, e.what, [rows[p] for p in e.positions if p < len(rows)] or rows
    value = loss.detach().item()
    if not math.isfinite(value):
        return loss, metrics, f"non-finite loss ({value})", rows
    return loss, metrics, None, rows


def _nonfinite_message(step: int, problem: str, rows: list[int], source: str | None, run_dir: Path,
                       cfg: TrainConfig, saves: str) -> str:
    ckpt = latest_checkpoint(run_dir)
    last = (f"the last good checkpoint is {ckpt} (step {ckpt.name.split('-')[1]}): --resume continues from it"
            if ckpt is not None else
            f"no checkpoint was saved before it (train.save_steps={cfg.save_steps})")
    limit = (f"the {cfg.skip_nonfinite} bad batch(es) train.skip_nonfinite allows were already skipped"
             if cfg.skip_nonfinite else "train.skip_nonfinite: N skips up to N such batches")
    return (f"step {step}: {problem} on the batch of {_rows_text(rows, source)}; training stopped and {saves} was "
            f"not written; {last}; {limit}")


def check_finite_weights(model, what: str) -> None:
    """TrainingError unless every parameter of `model` is finite: nothing non-finite is saved."""
    from robustpo.errors import TrainingError

    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise TrainingError(f"the trained weights hold non-finite values (first: {name}); {what} was not written")


def run_loop(*, accelerator, model, optimizer, scheduler, dataset, collate_fn, step_fn: Callable,
             cfg: TrainConfig, run_dir: Path, total_steps: int, resume: bool,
             on_log: Callable[[dict], None] | None = None, lengths: list[int] | None = None,
             source: str | None = None, saves: str = "final/", log_prefix: str = "",
             evaluator=None) -> LoopState:
    """Train `model` (already `accelerator.prepare`d with optimizer and scheduler) to `total_steps`.

    `lengths` (tokens per item) enables length-grouped batches when `cfg.group_by_length`.

    Every step checks the loss of each micro-batch (and the objective its inputs, LossSpec.call)
    and the gradient norm: a non-finite value stops the run with TrainingError naming the step,
    the batch's rows (of `source`) and the last good checkpoint, before any update is made from
    it (the trainer then never writes `saves`, its model); with `cfg.skip_nonfinite` = N, up to N such steps are skipped instead (consumed, no
    optimizer or scheduler step) and counted (`nonfinite_skipped` in the metrics and state).
    Trackers get each logged row with its keys prefixed by `log_prefix` (one per reward member).
    `evaluator` (train.evaluation.Evaluator) evaluates after the steps it says are `due`."""
    from tqdm.auto import tqdm

    from robustpo.errors import TrainingError

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
    step_rows: list[int] = []          # data indices of this step's micro-batches (this process)
    bad: tuple[str, list[int]] | None = None   # this step's first non-finite value: (what, its rows)
    # A GradScaler (fp16 on a GPU) finds and skips overflowing gradients itself, and lowers its scale.
    scaled = getattr(accelerator, "scaler", None) is not None
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
                if bad is None:   # after a non-finite micro-batch the rest of its step is only consumed
                    loss, metrics, problem, rows = _first_problem(step_fn, model, batch)
                    step_rows.extend(batch["index"].tolist())
                    if accelerator.num_processes > 1:   # every process takes the same branch
                        flags = accelerator.reduce(torch.tensor([float(problem is not None)],
                                                                device=accelerator.device), reduction="sum")
                        if flags.item() and problem is None:
                            problem, rows = ELSEWHERE, []
                    if problem is not None:
                        bad = (problem, rows)
                    else:
                        accelerator.backward(loss)
                        window.append({"loss": loss.detach().item(), **metrics})
                pairs_since += len(batch["index"])
                if accelerator.sync_gradients:
                    grad_norm = None
                    if bad is None:
                        # the norm is measured even when clipping is off (max_norm inf scales by exactly 1)
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm
                                                                if cfg.max_grad_norm > 0 else float("inf"))
                        if grad_norm is not None and not scaled and not math.isfinite(float(grad_norm)):
                            bad = (f"non-finite gradient norm ({float(grad_norm)})", step_rows)
                    if bad is None:
                        optimizer.step()
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    if cfg.max_grad_norm <= 0:
                        grad_norm = None   # logged only when clipping, as before
            state.consumed += 1
            if not accelerator.sync_gradients:
                continue
            if bad is not None:
                problem, rows = bad
                if accelerator.num_processes > 1:   # every process's own finding: name the real one(s)
                    from accelerate.utils import gather_object

                    found = [(p, r) for p, r in gather_object([bad]) if p != ELSEWHERE] or [bad]
                    problem, rows = found[0][0], [r for _, part in found for r in part]
                if state.nonfinite_skipped >= cfg.skip_nonfinite:
                    bar.close()
                    if metrics_log is not None:
                        metrics_log.close()
                    raise TrainingError(_nonfinite_message(state.step + 1, problem, rows, source, run_dir, cfg, saves))
                state.nonfinite_skipped += 1
                accelerator.print(f"step {state.step + 1}: {problem} on the batch of {_rows_text(rows, source)}: "
                                  f"skipped, no update ({state.nonfinite_skipped} of train.skip_nonfinite="
                                  f"{cfg.skip_nonfinite})")
            state.step += 1
            bar.update(1)
            if bad is None and (state.step % cfg.logging_steps == 0 or state.step == total_steps):
                row = _mean_metrics(accelerator, window)
                now = time.perf_counter()
                row.update(step=state.step, epoch=state.epoch, lr=scheduler.get_last_lr()[0],
                           pairs_per_s=pairs_since * accelerator.num_processes / max(now - t_last, 1e-9))
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                if cfg.skip_nonfinite:
                    row["nonfinite_skipped"] = state.nonfinite_skipped
                t_last, pairs_since = now, 0
                if metrics_log is not None:
                    metrics_log.append(row)
                accelerator.log({log_prefix + k: v for k, v in row.items() if k != "step"}, step=state.step)
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                if on_log is not None:
                    on_log(row)
            window, step_rows, bad = [], [], None
            if evaluator is not None and evaluator.due(state.step, total_steps):
                # The evaluation of step N comes before the checkpoint of step N, and its row is in
                # metrics.jsonl before that checkpoint exists. Killed before the checkpoint is
                # complete, the run resumes from an earlier one, whose resume drops every row of
                # step > that checkpoint (this eval row too) and replays step N and its
                # evaluation: logged once. Killed after it, the resume starts past step N and
                # never evaluates N again, and the row is kept (its step is not > N): once.
                row = evaluator(model, state.step)
                if metrics_log is not None:
                    metrics_log.append(row)
                accelerator.log({log_prefix + k: v for k, v in row.items() if k != "step"}, step=state.step)
                evaluator.logged(model, row)
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

"""Evaluation during training: the training metrics on held-out pairs, prefixed `eval/`.

The metrics come from the trainer's own step function (no second implementation), run under
`model.eval()` and `torch.no_grad()` on every eval pair in a fixed order, and are averaged
over pairs: each batch's means weighted by its pair count, summed over processes. Each
process evaluates its strided shard of the eval set; every process runs the same number of
forwards (a short shard repeats a batch with weight 0), since a wrapped model (DDP buffers,
FSDP shards) may communicate in its forward.

`run_loop` calls an `Evaluator` after optimizer step N (when `due`), logs the row it returns
(metrics.jsonl, console, trackers), then calls `logged` (which keeps best/) and only then
writes the checkpoint of step N; see run_loop for why this order keeps each evaluation in
metrics.jsonl exactly once across kills and resumes.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

BEST, BEST_JSON, EVAL_ROWS = "best", "best.json", "eval_rows.json"


@dataclass
class Evaluator:
    items: list                      # tokenized eval pairs (reference log-probs attached when cached)
    collate_fn: Callable
    step_fn: Callable                # the trainer's step(model, batch) -> (loss, metrics)
    accelerator: object
    batch_size: int
    eval_steps: int = 0              # every N optimizer steps; 0: at the end only
    save_best: object = None         # config.SaveBest or None
    save_model: Callable | None = None   # save_model(model, "best") writes OUTPUT_DIR/best/
    run_dir: Path | None = None
    best: dict | None = field(default=None)   # {step, metric, value} of best/ so far

    def __post_init__(self):
        # On resume, best/ may hold a better checkpoint than anything still to come: start from it.
        path = self.run_dir / BEST_JSON if self.run_dir is not None else None
        if self.save_best is not None and path is not None and path.exists():
            self.best = json.loads(path.read_text())

    def due(self, step: int, total: int) -> bool:
        return step == total or (self.eval_steps > 0 and step % self.eval_steps == 0)

    def _batches(self):
        """(indices, weight) per batch of this process's shard; the same count on every process."""
        acc = self.accelerator
        n, world = len(self.items), acc.num_processes
        shard = list(range(acc.process_index, n, world))
        for b in range(math.ceil(math.ceil(n / world) / self.batch_size)):
            idx = shard[b * self.batch_size:(b + 1) * self.batch_size]
            yield (idx, len(idx)) if idx else ([shard[0] if shard else 0], 0)

    @torch.no_grad()
    def metrics(self, model, limit: int | None = None) -> dict[str, float]:
        """{eval/KEY: pair-weighted mean} over all eval pairs (the first `limit` batches only)."""
        sums: dict[str, float] = {}
        count = 0
        was_training = model.training
        model.eval()
        try:
            for b, (idx, weight) in enumerate(self._batches()):
                if limit is not None and b >= limit:
                    break
                loss, metrics = self.step_fn(model, self.collate_fn([self.items[i] for i in idx]))
                for k, v in {"loss": loss.detach().item(), **metrics}.items():
                    sums[k] = sums.get(k, 0.0) + weight * float(v)
                count += weight
        finally:
            model.train(was_training)
        parts = [(sums, count)]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object(parts)
        total = sum(c for _, c in parts)
        keys = sorted({k for s, _ in parts for k in s})
        return {f"eval/{k}": sum(s.get(k, 0.0) for s, _ in parts) / max(total, 1) for k in keys}

    def check_metric(self, model) -> None:
        """ConfigError before training when train.save_best.metric is not among the eval metrics
        (one eval batch tells which the objective logs)."""
        from robustpo.errors import ConfigError

        if self.save_best is None:
            return
        known = self.metrics(model, limit=1)
        if self.save_best.metric not in known:
            raise ConfigError(f"train.save_best.metric must be one of the eval metrics ({', '.join(known)}), "
                              f"got {self.save_best.metric!r}")

    def __call__(self, model, step: int) -> dict:
        self.accelerator.print(f"evaluating at step {step} ({len(self.items)} pairs)")
        row = {"step": step, **self.metrics(model)}
        shown = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "step")
        self.accelerator.print(f"step {step}: {shown}")
        return row

    def improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        # strictly: a tie keeps the earlier checkpoint
        return value > self.best["value"] if self.save_best.mode == "max" else value < self.best["value"]

    def logged(self, model, row: dict) -> None:
        """After the row is in metrics.jsonl: keep best/ (and best.json) when the metric improved."""
        from robustpo.data.io import write_json_atomic

        if self.save_best is None or not self.improved(row[self.save_best.metric]):
            return
        self.save_model(model, BEST)
        self.best = {"step": row["step"], "metric": self.save_best.metric, "value": row[self.save_best.metric]}
        if self.accelerator.is_main_process:
            # best/ first, then best.json: a kill between the two leaves best.json at the older
            # value, and the replayed evaluation (same value) saves best/ again.
            write_json_atomic(self.run_dir / BEST_JSON, self.best)
        self.accelerator.print(f"step {row['step']}: {self.save_best.metric}={self.best['value']:.4f}: saved best/")


def copy_for_saving(lm):
    """A LoRA model is merged when saved (models.save_final merges in place): save a copy
    mid-training, so that training goes on with its adapter."""
    from robustpo.models import is_peft

    return copy.deepcopy(lm) if is_peft(lm) else lm

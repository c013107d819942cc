"""Supervised fine-tuning on (prompt, response) ids through the one training loop (`run_loop`).

The loss is the NLL of the response tokens (EOS included, so the policy learns when to
stop), averaged over the batch's tokens. Each example is a pair whose rejected response is
empty, so training's own collate and `ResponseLogps` compute it (with prefix sharing an
empty block costs nothing). Used for the testbed's reference policy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from robustpo.config import TrainConfig
from robustpo.data.collate import collate_pairs, collate_shared, split_sequences
from robustpo.train.forward import ResponseLogps, model_inputs, supports_prefix_sharing
from robustpo.train.loop import LoopState, run_loop


def sft_items(prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[dict]:
    return [{"index": i, "prompt_ids": p, "chosen_ids": r, "rejected_ids": []}
            for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True))]


def nll_step(model, batch) -> tuple:
    """run_loop's step function: mean NLL per response token."""
    logps, lengths = model(**model_inputs(batch))
    chosen, n = split_sequences(logps, batch).chosen, split_sequences(lengths, batch).chosen
    return -chosen.sum() / n.sum().clamp(min=1), {}


def train_sft(lm, items: list[dict], *, cfg: TrainConfig, pad_id: int, optimizer, scheduler, total_steps: int,
              on_log: Callable[[dict], None] | None = None) -> LoopState:
    """Train `lm` in place on `sft_items` with the given optimizer and scheduler, on the CPU (a
    plain one-process Accelerator). run_loop's files (metrics.jsonl) go to a temporary folder."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, mixed_precision="no")
    module = ResponseLogps(lm, cfg.response_only_projection)
    layout = collate_shared if cfg.prefix_sharing and supports_prefix_sharing(lm) else collate_pairs
    module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    lengths = [len(it["prompt_ids"]) + len(it["chosen_ids"]) for it in items]
    with tempfile.TemporaryDirectory(prefix="robustpo-sft-") as run_dir:
        return run_loop(accelerator=accelerator, model=module, optimizer=optimizer, scheduler=scheduler,
                        dataset=items, collate_fn=lambda b: layout(b, pad_id), step_fn=nll_step, cfg=cfg,
                        run_dir=Path(run_dir), total_steps=total_steps, resume=False, on_log=on_log,
                        lengths=lengths, saves="the SFT model")

"""Reference log-probs: computed once per (tokenized dataset, reference model), cached on disk.

`setup_reference` is the one entry point the trainer calls, and only when its objective or a
regularizer needs a reference (`LossSpec.needs_reference`). The cache key hashes the token
ids of every pair (so any change to the data, the tokenizer or the truncation settings
invalidates it) and the reference model's files (config and weights). The reference model
is loaded only to fill the cache and freed before training. With several processes each
computes its shard and the shards are gathered, so the work is split, not repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch

from robustpo.data.collate import split_sequences
from robustpo.data.io import atomic_path, fingerprint, sampled_fingerprint
from robustpo.data.tokenize import TokenizedPair
from robustpo.train.forward import ResponseLogps, frozen_logps


def setup_reference(cfg, items: list[TokenizedPair], model: ResponseLogps, base: str, collate_fn, accelerator,
                    run_dir: Path, eval_items: list[TokenizedPair] | None = None):
    """Make reference log-probs available to the training step; returns `reference_fn` or None.

    The reference is `cfg.model.reference`, or the starting point `base` (with LoRA: the
    adapter-disabled policy, no second model). With `train.precompute_reference` the values
    are read from the cache (or computed and cached) and attached to `items`, and None is
    returned; otherwise `reference_fn(model, batch) -> logps (2B + B·M,)` computes them live,
    from the (prepared) policy the step runs with or from a frozen reference kept loaded.
    `eval_items` (the eval pairs) get theirs the same way, cached under their own key (their
    own file), from the same loaded reference.
    """
    from robustpo.models import load_causal_lm

    tc = cfg.train
    reference_path = cfg.model.reference or base
    adapter_disabled = cfg.model.reference is None and cfg.model.lora is not None
    if not tc.precompute_reference:
        if adapter_disabled:
            def reference_fn(model, batch):
                with accelerator.unwrap_model(model).lm.disable_adapter(), accelerator.autocast():
                    return frozen_logps(model, batch, accelerator.device)
        else:
            ref_module = ResponseLogps(load_causal_lm(reference_path, cfg.model, trainable=False),
                                       tc.response_only_projection).to(accelerator.device)

            def reference_fn(model, batch):
                with accelerator.autocast():
                    return frozen_logps(ref_module, batch, accelerator.device)
        return reference_fn

    model_key = model_fingerprint(reference_path)
    frozen = None
    for part in [items] + ([eval_items] if eval_items else []):
        key = fingerprint(data_fingerprint(part), model_key, cfg.model.dtype, "v1")
        path = cache_path(Path(tc.reference_cache_dir or run_dir / "reference_cache"), key)
        if path.exists():
            values = read_cache(path)
            accelerator.print(f"reference log-probs: cached ({path})")
        else:
            if frozen is None:
                frozen = model if adapter_disabled else ResponseLogps(
                    load_causal_lm(reference_path, cfg.model, trainable=False), tc.response_only_projection)
                frozen.to(accelerator.device).eval()
            ctx = model.lm.disable_adapter() if adapter_disabled else contextlib.nullcontext()
            # Same autocast as the policy's forward: with bf16/fp16, Δ(y) must not start
            # away from 0 merely because the two sides ran at different precision.
            with ctx, accelerator.autocast():
                values = compute_reference_logps(frozen, part, collate_fn, batch_size=tc.batch_size * 2,
                                                 accelerator=accelerator)
            if accelerator.is_main_process:
                write_cache(path, values)
        attach(part, values)
    del frozen
    return None


def model_fingerprint(path: str) -> str:
    """Hash of a local model folder (config + weights), or the hub id and its revision."""
    p = Path(path)
    if not p.is_dir():
        return fingerprint("hub", path)
    files = (f for f in sorted(p.rglob("*"))
             if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".model", ".txt"})
    # huge weight shards: size + head + tail is enough to notice a different checkpoint
    return sampled_fingerprint(((f.relative_to(p).as_posix(), f) for f in files), sample=1 << 20,
                               whole_up_to=64 << 20)


def data_fingerprint(items: list[TokenizedPair]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it["index"], it["prompt_ids"], it["chosen_ids"], it["rejected_ids"],
                             it.get("reference_sample_ids")]).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_reference_logps(logps_model, items: list[TokenizedPair], collate_fn, *, batch_size: int,
                            accelerator) -> dict[int, dict]:
    """Reference log-probs for every item: index -> {chosen, rejected, samples}."""
    from tqdm.auto import tqdm

    from robustpo.train.loop import quiet_progress

    rank, world = accelerator.process_index, accelerator.num_processes
    # Sort by length so batches carry little padding; each process takes a strided shard.
    order = sorted(range(len(items)), key=lambda i: len(items[i]["prompt_ids"]) + len(items[i]["chosen_ids"]))
    mine = order[rank::world]
    results = []
    for start in tqdm(range(0, len(mine), batch_size), desc="reference log-probs",
                      disable=not accelerator.is_local_main_process or quiet_progress(), dynamic_ncols=True):
        batch = collate_fn([items[i] for i in mine[start:start + batch_size]])
        chosen, rejected, samples = split_sequences(frozen_logps(logps_model, batch, accelerator.device), batch)
        for j, idx in enumerate(batch["index"].tolist()):
            results.append([idx, chosen[j].item(), rejected[j].item(),
                            samples[j].tolist() if samples is not None else []])
    if world > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)
    return {idx: {"chosen": c, "rejected": r, "samples": s} for idx, c, r, s in results}


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"reference-logps-{key}.json"


def read_cache(path: Path) -> dict[int, dict]:
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def write_cache(path: Path, values: dict[int, dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({str(k): v for k, v in values.items()}))


def attach(items: list[TokenizedPair], values: dict[int, dict]) -> None:
    """Add the cached values to the items the collator turns into batches."""
    for it in items:
        v = values[it["index"]]
        it["reference_chosen_logps"] = v["chosen"]
        it["reference_rejected_logps"] = v["rejected"]
        if v["samples"]:
            it["reference_sample_logps"] = v["samples"]

"""TRL's key names, and the robustpo key each one is.

Users coming from TRL's `DPOTrainer` / `RewardTrainer` write `per_device_train_batch_size` or
`loss_type: robust`; difflib cannot map those to `train.batch_size` or `loss.name: rdpo`. One
mapping here serves both the config error (`config.py` asks `hint`, only for a key that is not a
robustpo key at its place, so a real key is never shadowed) and the README's migration table
(`migration_table`, checked verbatim by tests/test_trl_names.py), so the two cannot drift.

Targets are robustpo paths: `section.key`, `loss.HP` (an objective's hyperparameter),
`loss[NAME].HP` / `regularizers[NAME].HP` (that loss's hyperparameter); None where robustpo
has no equivalent. The test checks that every target resolves to a real field or hyperparameter.
"""

from __future__ import annotations

# TRL name -> (robustpo target or None, note). TrainingArguments, DPOConfig, CPOConfig,
# RewardConfig, and TRL's script ModelConfig / ScriptArguments (some only in older TRL versions).
TRL_NAMES: dict[str, tuple[str | None, str]] = {
    "output_dir": ("train.output_dir", ""),
    "per_device_train_batch_size": ("train.batch_size", "pairs per device"),
    "gradient_accumulation_steps": ("train.grad_accum", ""),
    "learning_rate": ("train.learning_rate", ""),
    "num_train_epochs": ("train.epochs", ""),
    "max_steps": ("train.max_steps", ""),
    "weight_decay": ("train.weight_decay", ""),
    "adam_beta1": ("train.adam_betas", "a pair: [beta1, beta2]"),
    "adam_beta2": ("train.adam_betas", "a pair: [beta1, beta2]"),
    "optim": (None, "the optimizer is AdamW (`train.adam_betas`, `train.weight_decay`)"),
    "lr_scheduler_type": ("train.scheduler", ""),
    "warmup_ratio": ("train.warmup_ratio", ""),
    "warmup_steps": ("train.warmup_ratio", "a fraction of the optimizer steps, not a count"),
    "max_grad_norm": ("train.max_grad_norm", ""),
    "seed": ("train.seed", ""),
    "logging_steps": ("train.logging_steps", ""),
    "save_steps": ("train.save_steps", ""),
    "save_total_limit": ("train.save_total_limit", ""),
    "report_to": ("train.log_with", ""),
    "bf16": ("train.mixed_precision", "`bf16: true` is `mixed_precision: bf16`"),
    "fp16": ("train.mixed_precision", "`fp16: true` is `mixed_precision: fp16`"),
    "group_by_length": ("train.group_by_length", ""),
    "gradient_checkpointing": ("model.gradient_checkpointing", ""),
    "resume_from_checkpoint": (None, "`robustpo train RECIPE --resume` continues from the run's last checkpoint"),
    "eval_strategy": ("train.eval_steps", "evaluate every N optimizer steps (0: only at the end) when there "
                      "are eval pairs (`data.eval` or `data.eval_fraction`)"),
    "eval_steps": ("train.eval_steps", "0: only at the end"),
    "per_device_eval_batch_size": ("train.eval_batch_size", "reward recipes' held-out scoring: "
                                   "`reward.eval_batch_size`"),
    "eval_dataset": ("data.eval", "a file, saved dataset folder or hub id; or `data.eval_fraction` of data.train"),
    "metric_for_best_model": ("train.save_best.metric", "an `eval/` metric, e.g. `eval/rewards/accuracies`"),
    "greater_is_better": ("train.save_best.mode", "`max` or `min`"),
    "load_best_model_at_end": ("train.save_best", "the best checkpoint is kept as `best/` beside `final/` "
                               "(the last weights)"),
    "beta": ("loss.beta", "for `ipo`, TRL's beta is `loss.tau`"),
    "loss_type": ("loss.name", "see the table of loss types"),
    "label_smoothing": ("loss[cdpo].label_smoothing", "`name: cdpo` for TRL's sigmoid, `rdpo` for its robust"),
    "rpo_alpha": ("regularizers[nll].weight", "`regularizers: [{name: nll, weight: ALPHA}]`"),
    "cpo_alpha": ("regularizers[nll].weight", "`regularizers: [{name: nll, weight: ALPHA}]`"),
    "simpo_gamma": ("loss[simpo].target_margin", ""),
    "precompute_ref_log_probs": ("train.precompute_reference", ""),
    "max_length": ("data.max_length", ""),
    "max_prompt_length": ("data.max_prompt_length", ""),
    "max_completion_length": ("data.max_length", "responses keep what `data.max_length` leaves after the prompt"),
    "truncation_mode": (None, "one rule: a long prompt keeps its last `data.max_prompt_length` tokens"),
    "ref_model": ("model.reference", ""),
    "reference_free": (None, "`loss.name: simpo` trains without a reference"),
    "sync_ref_model": (None, "the reference is fixed"),
    "ref_model_sync_steps": (None, "the reference is fixed"),
    "ref_model_mixup_alpha": (None, "the reference is fixed"),
    "loss_weights": (None, "one objective (`loss`) plus weighted `regularizers`"),
    "use_weighting": (None, ""),
    "f_divergence_type": (None, ""),
    "center_rewards_coefficient": ("reward.center_coef", "`robustpo reward train` recipes"),
    "model_init_kwargs": ("model", "its dtype, attn_implementation and trust_remote_code are `model` keys"),
    "model_name_or_path": ("model.name_or_path", ""),
    "torch_dtype": ("model.dtype", ""),
    "dtype": ("model.dtype", ""),
    "attn_implementation": ("model.attn_implementation", ""),
    "trust_remote_code": ("model.trust_remote_code", ""),
    "use_peft": ("model.lora", "`model.lora: {r: 8}` enables LoRA"),
    "lora_r": ("model.lora.r", ""),
    "lora_alpha": ("model.lora.alpha", ""),
    "lora_dropout": ("model.lora.dropout", ""),
    "lora_target_modules": ("model.lora.target_modules", ""),
    "load_in_4bit": (None, "no quantized loading"),
    "load_in_8bit": (None, "no quantized loading"),
    "dataset_name": ("data.train", "a hub id, a file or a saved dataset folder"),
    "dataset_train_split": ("data.split", ""),
    "dataset_test_split": ("data.eval_split", "with `data.eval` set to the hub id; reward recipes hold out "
                           "`reward.heldout` (a file)"),
}

# TRL `loss_type` (CPOTrainer's for simpo) -> (robustpo objective or None, note).
LOSS_TYPES: dict[str, tuple[str | None, str]] = {
    "sigmoid": ("dpo", "with `label_smoothing` > 0 (cDPO): `cdpo`"),
    "ipo": ("ipo", "TRL's beta is `tau`; `length_normalize: true` is TRL's per-token form"),
    "hinge": ("hinge", ""),
    "robust": ("rdpo", "with `label_smoothing`"),
    "simpo": ("simpo", "CPOTrainer's; `simpo_gamma` is `target_margin`"),
    "sft": (None, "the `nll` regularizer is this term, added to an objective"),
    **{t: (None, "") for t in ("exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_pair", "aot_unpaired",
                               "apo_zero", "apo_down", "discopop", "sigmoid_norm")},
}


def _loss_type_hint(value) -> str:
    kind = value[0] if isinstance(value, list) and len(value) == 1 else value   # TRL 1.x takes a list
    if not isinstance(kind, str) or kind not in LOSS_TYPES:
        known = ", ".join(f"{t} -> {n}" for t, (n, _) in LOSS_TYPES.items() if n)
        return f"`loss_type` is `loss.name` in robustpo ({known}; `robustpo losses` lists all)"
    name, note = LOSS_TYPES[kind]
    if name is None:
        return (f"`loss_type` is `loss.name` in robustpo, which has no equivalent of TRL's '{kind}'"
                f"{f' ({note})' if note else ''}; `robustpo losses` lists the objectives")
    return f"`loss_type` is `loss.name` in robustpo: TRL's '{kind}' is `loss: {{name: {name}}}`" + (
        f" ({note})" if note else "")


def hint(key, value=None) -> str | None:
    """What to write instead of TRL's `key` (given `value`), or None when it is no TRL name."""
    if not isinstance(key, str) or key not in TRL_NAMES:
        return None
    if key == "loss_type":
        return _loss_type_hint(value)
    target, note = TRL_NAMES[key]
    if target is None:
        return f"`{key}` has no robustpo equivalent" + (f" ({note})" if note else "")
    return f"`{key}` is `{target}` in robustpo" + (f" ({note})" if note else "")


def migration_table() -> str:
    """The README's "Coming from TRL" tables (markdown), from the two mappings above."""
    rows = ["| TRL | robustpo | note |", "|---|---|---|"]
    rows += [f"| `{k}` | {f'`{t}`' if t else '—'} | {n} |" for k, (t, n) in TRL_NAMES.items()]
    rows += ["", "| TRL `loss_type` | robustpo `loss.name` | note |", "|---|---|---|"]
    rows += [f"| `{k}` | {f'`{t}`' if t else '—'} | {n} |" for k, (t, n) in LOSS_TYPES.items()]
    return "\n".join(rows)

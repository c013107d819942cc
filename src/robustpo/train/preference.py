"""Preference training: any objective of the catalogue, plus regularizers, on the one loop.

Order of work, so that bad input fails before anything expensive: config (hyperparameters
resolved against the loss spec) -> data (validated) -> loss requirements checked against the
data -> tokenizer -> policy -> reference log-probs (cached; only when a spec needs them) ->
loop -> final model. What is computed and fed is read from the specs, never from a loss name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from robustpo.config import RunConfig
from robustpo.data.collate import split_sequences
from robustpo.errors import ConfigError
from robustpo.loss_spec import LossSpec
from robustpo.train.forward import ResponseLogps, model_inputs, supports_prefix_sharing


def item_length(it: dict) -> int:
    """Tokens a pair occupies in a batch (the prefix-shared row; a fine proxy for the other layout)."""
    return len(it["prompt_ids"]) + len(it["chosen_ids"]) + len(it["rejected_ids"])


def pair_metrics(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                 out) -> dict[str, float]:
    """The standard preference metrics, whatever the objective (the log-ratios need a reference)."""
    chosen_rewards, rejected_rewards = out.chosen_rewards, out.rejected_rewards
    metrics = {
        "rewards/chosen": chosen_rewards.mean().item(), "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": policy_chosen_logps.detach().float().mean().item(),
        "logps/rejected": policy_rejected_logps.detach().float().mean().item(),
    }
    if reference_chosen_logps is not None:
        dw = (policy_chosen_logps - reference_chosen_logps).detach().float()        # Δ(w): (B,)
        dl = (policy_rejected_logps - reference_rejected_logps).detach().float()    # Δ(l): (B,)
        metrics.update({"logratio/chosen": dw.mean().item(), "logratio/rejected": dl.mean().item(),
                        "kl_forward": (-(dw + dl) / 2).mean().item()})
    return metrics


def needs_reference(spec: LossSpec, regularizers: list[tuple[LossSpec, dict]]) -> bool:
    return spec.needs_reference or any(s.needs_reference for s, _ in regularizers)


def make_step_fn(spec: LossSpec, params: dict, regularizers: list[tuple[LossSpec, dict]], reference_fn=None):
    """step(model, batch) -> (loss, metrics).

    Reference log-probs come from the batch (cached), from `reference_fn(model, batch) -> logps
    (2B + B·M,)`, or, when neither the objective nor a regularizer needs them, not at all
    (None is passed). Lengths are fed only to specs that ask for them."""
    needs_lengths = spec.needs_lengths or any(s.needs_lengths for s, _ in regularizers)

    def step(model, batch):
        logps, _ = model(**model_inputs(batch))                                           # (2B + B·M,)
        policy_chosen_logps, policy_rejected_logps, policy_sample_logps = split_sequences(logps, batch)
        reference_chosen_logps = reference_rejected_logps = reference_sample_logps = None   # (B,), (B,), (B, M)
        if "reference_chosen_logps" in batch:
            reference_chosen_logps = batch["reference_chosen_logps"]
            reference_rejected_logps = batch["reference_rejected_logps"]
            reference_sample_logps = batch.get("reference_sample_logps")
        elif reference_fn is not None:
            reference_chosen_logps, reference_rejected_logps, reference_sample_logps = split_sequences(
                reference_fn(model, batch), batch)
        # The four sequence log-probs every objective and regularizer takes, in DESIGN.md's order.
        pair_logps = (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
        inputs = {}
        if needs_lengths:
            inputs = {"chosen_lengths": batch["chosen_lengths"], "rejected_lengths": batch["rejected_lengths"]}
        for key in ("chosen_rewards", "rejected_rewards"):
            if key in batch:
                inputs[key] = batch[key]
        if policy_sample_logps is not None:
            inputs["kl_policy_logps"], inputs["kl_reference_logps"] = policy_sample_logps, reference_sample_logps
        out = spec.call(*pair_logps, inputs, params)
        loss = out.loss
        metrics = {**pair_metrics(*pair_logps, out), **out.metrics, "loss/objective": out.loss.item()}
        for reg_spec, reg_params in regularizers:
            reg = reg_spec.call(*pair_logps, inputs, reg_params)
            loss = loss + reg.loss
            metrics[f"loss/{reg_spec.name}"] = reg.loss.item()
            metrics.update(reg.metrics)
        return loss, metrics

    return step


def _check_requirements(spec: LossSpec, report, data_path: str) -> None:
    if spec.needs_rewards and report.num_members is None:
        raise ConfigError(f"loss '{spec.name}' needs chosen_rewards/rejected_rewards columns, and {data_path} has "
                          "none: score the data with a reward model first (robustpo reward score)")
    if spec.needs_rewards and report.num_members < spec.min_members:
        raise ConfigError(f"loss '{spec.name}' needs at least {spec.min_members} reward members, "
                          f"{data_path} has K={report.num_members}")


@dataclass
class TrainResult:
    final_dir: Path
    model: object        # the trained `transformers` model (LoRA merged), as saved
    steps: int


# Everything a preference run writes in OUTPUT_DIR (robustpo.train.run_folder.RunLayout).
PREFERENCE_RUN_FILES = ("final", "checkpoints", "metrics.jsonl", "train_summary.json", "config.yaml",
                        "config_changes.jsonl", "inputs.json", "base_model", "reference_cache",
                        "best", "best.json", "eval_rows.json")


def preference_layout():
    from robustpo.train.run_folder import RunLayout, has_steps, tracker_logs

    return RunLayout(owned=PREFERENCE_RUN_FILES, what="a run", also_owned=tracker_logs,
                     progress=lambda d: (d / "final").exists() or (d / "train_summary.json").exists() or has_steps(d),
                     other=lambda d: "a reward run (robustpo reward train)" if (d / "family.json").exists()
                     or (d / "members").is_dir() else None)


def check_trainable_precision(model) -> None:
    """float16 trainable weights (e.g. `model.dtype: auto` on a float16 checkpoint) are refused
    like `model.dtype: float16` at load: no update of them survives without loss scaling."""
    from robustpo.config import PRECISION

    if any(p.requires_grad and p.dtype == torch.float16 for p in model.parameters()):
        raise ConfigError(f"{PRECISION.key} must {PRECISION.must} (the loaded weights to train are float16)")


def train_preference(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
                     allow_changes: bool = False) -> TrainResult:
    """Run a preference training job: the final model is saved under OUTPUT_DIR/final.

    Everything that can be checked without a model is checked before OUTPUT_DIR is touched:
    config values and paths (train.run_folder.preflight), then the data. OUTPUT_DIR is then locked
    for the whole run (train.run_folder.run_folder)."""
    from robustpo.data.schema import load_preferences
    from robustpo.train.loop import make_accelerator
    from robustpo.train.run_folder import preflight, run_folder

    preflight(cfg)
    spec = cfg.loss.spec
    rows, report = load_preferences(cfg.data.train, split=cfg.data.split, fmt=cfg.data.format,
                                    strict=cfg.data.strict, drop_empty=cfg.data.drop_empty,
                                    max_rows=cfg.data.max_rows)
    _check_requirements(spec, report, cfg.data.train)
    rows, eval_rows, eval_source = load_eval(cfg, rows)
    run_dir = Path(cfg.train.output_dir)
    accelerator = make_accelerator(cfg.train, run_dir)
    with run_folder(accelerator, run_dir, cfg, preference_layout(), resume=resume, overwrite=overwrite,
                    allow_changes=allow_changes):
        if eval_rows and accelerator.is_main_process:
            from robustpo.data.io import write_json_atomic
            from robustpo.train.evaluation import EVAL_ROWS

            # which rows were evaluated (0-based rows of their file): data.eval_fraction's are held out of data.train
            write_json_atomic(run_dir / EVAL_ROWS, {"source": eval_source, "fraction": cfg.data.eval_fraction,
                                                    "rows": [r["index"] for r in eval_rows]})
        return _train(cfg, accelerator, run_dir, rows, report, resume, eval_rows)


def load_eval(cfg: RunConfig, rows: list) -> tuple[list, list, str | None]:
    """(training rows, eval rows, their source): data.eval read and validated like data.train, or
    data.eval_fraction of data.train held out with train.seed (rewards.plan.split_heldout)."""
    from robustpo.data.schema import load_preferences
    from robustpo.rewards.plan import split_heldout

    d = cfg.data
    if d.eval:
        eval_rows, _ = load_preferences(d.eval, split=d.eval_split, fmt=d.format, strict=d.strict,
                                        drop_empty=d.drop_empty)
        return rows, eval_rows, d.eval
    if d.eval_fraction is not None:
        train, held = split_heldout(rows, d.eval_fraction, cfg.train.seed, key="data.eval_fraction")
        return train, held, d.train
    return rows, [], None


def _train(cfg: RunConfig, accelerator, run_dir: Path, rows: list, report, resume: bool,
           eval_rows: list = ()) -> TrainResult:
    from accelerate.utils import set_seed

    from robustpo.data.collate import collate_pairs, collate_shared
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.models import load_causal_lm, load_tokenizer
    from robustpo.train import refcache
    from robustpo.train.loop import make_optimizer_and_scheduler, run_loop, shared_base, start_trackers

    tc = cfg.train
    spec = cfg.loss.spec
    regularizers = [(r.spec, r.params) for r in cfg.regularizers]
    set_seed(tc.seed)
    accelerator.print(report.summary())
    if accelerator.num_processes > 1:
        accelerator.print(f"{accelerator.num_processes} processes ({accelerator.distributed_type.value}); "
                          f"global batch {tc.batch_size * tc.grad_accum * accelerator.num_processes} pairs per step")
    if report.has_reference_samples and not spec.uses_reference_samples:
        for r in rows:  # only KL-regularized objectives read them: don't pay their forward
            r.pop("reference_samples", None)

    texts = lambda: (t for r in rows for t in (str(r["prompt"]), str(r["chosen"]), str(r["rejected"])))  # noqa: E731
    base = shared_base(accelerator, cfg.model, run_dir, texts, tc.seed)
    tokenizer = load_tokenizer(base, cfg.model)
    items, stats = tokenize_pairs(rows, tokenizer, max_length=cfg.data.max_length,
                                  max_prompt_length=cfg.data.max_prompt_length, source=cfg.data.train)
    accelerator.print(stats.summary())
    eval_items = []
    if eval_rows:
        eval_items, eval_stats = tokenize_pairs(eval_rows, tokenizer, max_length=cfg.data.max_length,
                                                max_prompt_length=cfg.data.max_prompt_length,
                                                source=cfg.data.eval or cfg.data.train)
        accelerator.print(f"eval pairs: {len(eval_items)}; {eval_stats.summary()}")

    policy = load_causal_lm(base, cfg.model)
    check_trainable_precision(policy)
    model = ResponseLogps(policy, tc.response_only_projection)
    shared = tc.prefix_sharing and supports_prefix_sharing(policy)
    if tc.prefix_sharing and not shared:
        accelerator.print("prefix sharing: not available with this attention kernel; one row per response")
    layout = collate_shared if shared else collate_pairs
    collate = lambda batch: layout(batch, tokenizer.pad_token_id)  # noqa: E731
    reference_fn = None
    if needs_reference(spec, regularizers):
        reference_fn = refcache.setup_reference(cfg, items, model, base, collate, accelerator, run_dir, eval_items)
    else:
        accelerator.print(f"reference: not needed by '{spec.name}'"
                          f"{' and its regularizers' if regularizers else ''}; none loaded or cached")

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler, total = make_optimizer_and_scheduler(params, tc, len(items), accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    start_trackers(accelerator, cfg)

    collapse = {"warned": False}

    def on_log(row):
        if row.get("logratio/chosen", 0.0) < -tc.collapse_warning_nats and not collapse["warned"]:
            collapse["warned"] = True
            warnings.warn(f"step {row['step']}: the preferred responses have lost {-row['logratio/chosen']:.1f} nats "
                          f"on average against the reference (train.collapse_warning_nats={tc.collapse_warning_nats}): "
                          "likelihood collapse; consider bcr/nll regularizers, minor_dpo, or distillation",
                          stacklevel=1)

    step_fn = make_step_fn(spec, cfg.loss.params, regularizers, reference_fn)
    evaluator = None
    if eval_items:
        from robustpo.train.evaluation import Evaluator, copy_for_saving

        def save_best(model, name):
            lm = copy_for_saving(accelerator.unwrap_model(model).lm)
            save_policy(accelerator, lm, tokenizer, run_dir, name, cfg=cfg, report=report)

        evaluator = Evaluator(eval_items, collate, step_fn, accelerator, tc.eval_batch_size or tc.batch_size,
                              tc.eval_steps, tc.save_best, save_best, run_dir)
        evaluator.check_metric(model)
    state = run_loop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, dataset=items,
                     collate_fn=collate, step_fn=step_fn, cfg=tc, run_dir=run_dir, total_steps=total,
                     resume=resume, on_log=on_log, lengths=[item_length(it) for it in items], source=cfg.data.train,
                     evaluator=evaluator)
    final, lm = save_run(accelerator, model, tokenizer, run_dir, {
        "data": {**report.__dict__, "formats": dict(report.formats)}, "truncation": stats.as_dict(),
        "steps": state.step, "loss": cfg.loss.name, "collapse_warning": collapse["warned"],
        "nonfinite_skipped": state.nonfinite_skipped}, cfg=cfg, report=report)
    accelerator.end_training()  # last: it also tears down the process group
    return TrainResult(final, lm, state.step)


def save_run(accelerator, model, tokenizer, run_dir: Path, summary: dict, *, cfg: RunConfig, report):
    """Write the final model (plain `transformers` folder, with its model card) and a summary, atomically.

    Returns (folder, the saved `transformers` model)."""
    from robustpo.data.io import write_json_atomic

    final, lm = save_policy(accelerator, accelerator.unwrap_model(model).lm, tokenizer, run_dir, "final",
                            cfg=cfg, report=report)
    if accelerator.is_main_process:
        write_json_atomic(run_dir / "train_summary.json", summary)
        accelerator.print(f"saved {final}")
    accelerator.wait_for_everyone()
    return final, lm


def save_policy(accelerator, lm, tokenizer, run_dir: Path, name: str, *, cfg: RunConfig, report):
    """OUTPUT_DIR/NAME (final, best): a plain `transformers` folder with its model card and the
    run's config, written atomically. Returns (folder, the saved model)."""
    from robustpo.data.io import atomic_dir
    from robustpo.model_card import preference_card, write_card
    from robustpo.models import save_final
    from robustpo.train.loop import check_finite_weights
    from robustpo.train.run_folder import CONFIG_CHANGES

    accelerator.wait_for_everyone()
    folder = run_dir / name
    check_finite_weights(lm, f"{name}/")
    if accelerator.is_main_process:
        with atomic_dir(folder) as tmp:
            lm = save_final(lm, tokenizer, tmp)
            (tmp / "robustpo_config.yaml").write_text((run_dir / "config.yaml").read_text())
            if (run_dir / CONFIG_CHANGES).exists():   # values changed on a --resume --allow-changes
                (tmp / CONFIG_CHANGES).write_text((run_dir / CONFIG_CHANGES).read_text())
            write_card(tmp, preference_card(cfg, run_dir, report, saved=name))   # in the temp copy: never lacks it
    accelerator.wait_for_everyone()
    return folder, lm

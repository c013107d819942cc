"""Bradley–Terry reward models and families of them, on the one training loop (train/loop.py).

`robustpo reward train RECIPE.yaml` trains the models a family plan asks for
(rewards/plan.py: seed | bootstrap | subsets | multihead | span | reweight) and writes a
family folder (rewards/family.py):

    OUTPUT_DIR/family.json           manifest: how each member was made, its data, held-out metrics
    OUTPUT_DIR/members/<name>/       each trained model, a plain `transformers` sequence-classification folder
    OUTPUT_DIR/runs/<name>/          its loop run: metrics.jsonl, checkpoints, data_rows.json, summary.json

Confound-debiased training (`reward.confound`, product of experts: Clark et al. 2019, He et
al. 2019; for length in reward models, ODIN: Chen et al., ICML 2024, arXiv 2402.07319). With
a confound φ (standardised, rewards/confound.py) the training logit of a pair is

    r_θ(x, w) − r_θ(x, l) + b·(φ(w) − φ(l))

with `b` a learned scalar per member (`debias: true`), so the confound expert absorbs what φ
explains in the labels, and the saved model scores with r_θ alone. `decorrelate: λ` adds
λ·corr(r_θ, φ)² over each batch's responses: without it the network can represent φ itself
and leave b near 0. Each member's fitted b̂ and the final corr(r_θ, φ) over the training
responses go into family.json. Members already finished are skipped on `--resume`; the one
that was running resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from robustpo.config import ModelConfig
from robustpo.errors import DataError
from robustpo.rewards.plan import (  # noqa: F401  (re-exported: the trainer's public names)
    MODES, FamilyConfig, MemberPlan, RewardConfig, RewardRunConfig, bootstrap_counts, check_config, plan_members,
    split_heldout)


class RewardModule(torch.nn.Module):
    """What the reward trainer optimizes: the model, how its outputs become rewards
    (rewards/pooling.py), the `lm` head's scale s, and, when debiasing, the confound expert's
    coefficient b, one per head. One forward, so that DDP/FSDP wrap a single module.
    Returns (rewards (S, K), b (K,) or None)."""

    def __init__(self, model, head: str, pooling: str, heads: int, debias: bool, *, scale: float = 1.0,
                 coef: float = 0.0):
        super().__init__()
        self.model, self.head, self.pooling = model, head, pooling
        self.scale = torch.nn.Parameter(torch.tensor(float(scale))) if head == "lm" else None
        self.confound_coef = torch.nn.Parameter(torch.full((heads,), float(coef))) if debias else None

    def forward(self, input_ids, attention_mask, response_mask):
        from robustpo.rewards.pooling import response_rewards

        rewards = response_rewards(self.model, input_ids, attention_mask, response_mask, head=self.head,
                                   pooling=self.pooling)                                      # (S, K)
        if self.scale is not None:
            rewards = self.scale * rewards
        return rewards, (self.confound_coef * 1.0 if self.confound_coef is not None else None)


def initial_scalars(module: RewardModule, items: list, collate, batch_size: int, device) -> tuple[float, float]:
    """(s, b) to start from: the one- or two-feature logistic fit of the labels on the model's
    initial margin (lm head) and on Δφ (debiasing), over the plan's pairs with their weights."""
    from robustpo.data.collate import split_sequences
    from robustpo.logprobs import IGNORE_INDEX
    from robustpo.rewards.objective import fit_logistic

    columns, weights = [], torch.tensor([it.get("pair_weight", 1.0) for it in items])
    if module.scale is not None:
        margins = []
        module.to(device).eval()
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                batch = collate(items[start:start + batch_size])
                ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                r, _ = module(ids, mask, (batch["labels"] != IGNORE_INDEX).to(device))
                chosen, rejected, _ = split_sequences(r, batch)                              # (B, K)
                margins.append(((chosen[:, 0] - rejected[:, 0]) / module.scale).cpu())       # (B,)
        module.train()
        columns.append(torch.cat(margins))
    if module.confound_coef is not None:
        columns.append(torch.tensor([it["chosen_confound"] - it["rejected_confound"] for it in items]))
    if not columns:
        return 1.0, 0.0
    theta = fit_logistic(torch.stack(columns, dim=1), weights)
    scale = theta.pop(0) if module.scale is not None else 1.0
    return scale, (theta[0] if theta else 0.0)


def _load_rows(cfg: RewardRunConfig, source: str):
    from robustpo.data.schema import FLOAT32_MAX, load_preferences

    d = cfg.data
    rows, report = load_preferences(source, split=d.split, fmt=d.format, strict=d.strict, drop_empty=d.drop_empty,
                                    max_rows=d.max_rows if source == d.train else None)
    if cfg.reward.use_margin:
        for r in rows:
            m = r.get("margin")
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not abs(m) <= FLOAT32_MAX:
                raise DataError(f"reward.use_margin needs a finite number here (float32: within ±3.4e38), got {m!r}",
                                file=source, row=r["index"], field="margin")
    return rows, report


def attach_confound(items: list, rows: list, feature: str, source: str) -> dict:
    """Compute φ for both responses of every training pair, standardise over those 2N values,
    store them on the items (`chosen_confound`, `rejected_confound`); return the statistics."""
    from robustpo.data.collate import pair_layout, split_pairs
    from robustpo.rewards.confound import feature_values, standardization, standardize

    by_index = {r["index"]: r for r in rows}
    src = [by_index[it["index"]] for it in items]
    prompts, indices = [r["prompt"] for r in src], [it["index"] for it in items]
    responses = pair_layout([r["chosen"] for r in src], [r["rejected"] for r in src])
    counts = pair_layout([len(it["chosen_ids"]) for it in items], [len(it["rejected_ids"]) for it in items])
    raw = feature_values(feature, pair_layout(prompts, prompts), responses, counts, rows=pair_layout(indices, indices),
                         source=source)
    stats = standardization(raw, feature)
    chosen, rejected = split_pairs(standardize(raw, stats), len(items))
    for i, it in enumerate(items):
        it["chosen_confound"], it["rejected_confound"] = chosen[i], rejected[i]
    return {"feature": feature, **stats}


def load_reward_backbone(path: str, num_labels: int, cfg: ModelConfig, pad_token_id: int, seed: int,
                         head: str = "score"):
    """The model to train on `path`: a sequence-classification model (a causal LM gets new score
    heads, drawn from `seed`), or for the `lm` head the causal LM itself."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from robustpo.models import apply_lora, torch_dtype
    from robustpo.rewards.family import quiet_transformers

    kwargs = {"dtype": torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if head == "lm":
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                                       ignore_mismatched_sizes=True, **kwargs)
    # The model pools the last non-pad token, so it must know which id pads.
    model.config.pad_token_id = pad_token_id
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora is None:
        return model
    # LoRA on the backbone; a new score head is trained in full (peft's SEQ_CLS task saves it).
    return apply_lora(model, cfg, task_type="CAUSAL_LM" if head == "lm" else "SEQ_CLS")


def make_collate(pad_id: int):
    from robustpo.data.collate import collate_pairs

    def collate(items):
        batch = collate_pairs(items, pad_id)
        for key in ("margin", "head_weights", "pair_weight", "chosen_confound", "rejected_confound"):
            if key in items[0]:
                batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)   # (B,) / (B, K)
        return batch

    return collate


def make_step_fn(center_coef: float, use_margin: bool, decorrelate: float = 0.0):
    from robustpo.data.collate import split_sequences
    from robustpo.logprobs import IGNORE_INDEX
    from robustpo.rewards.objective import bradley_terry_loss, decorrelation_penalty

    def step(module, batch):
        rewards, coef = module(batch["input_ids"], batch["attention_mask"], batch["labels"] != IGNORE_INDEX)
        chosen_rewards, rejected_rewards, _ = split_sequences(rewards, batch)           # (B, K), (B, K)
        weights = batch.get("head_weights")
        if "pair_weight" in batch:
            weights = batch["pair_weight"][:, None]                                     # (B, 1)
        confound_logit, metrics = None, {}
        if coef is not None:
            dphi = batch["chosen_confound"] - batch["rejected_confound"]                # (B,)
            confound_logit = dphi[:, None] * coef[None, :]                              # (B, K)
            metrics["confound/b"] = coef.detach().mean().item()
        loss, _ = bradley_terry_loss(chosen_rewards, rejected_rewards,
                                     margin=batch.get("margin") if use_margin else None,
                                     center_coef=center_coef, weights=weights, confound_logit=confound_logit)
        if "chosen_confound" in batch:
            phi = torch.cat([batch["chosen_confound"], batch["rejected_confound"]])   # (2B,)
            penalty = decorrelation_penalty(torch.cat([chosen_rewards, rejected_rewards]), phi)   # (2B, K), (2B,)
            metrics["confound/corr_sq"] = penalty.item()
            if decorrelate:
                loss = loss + decorrelate * penalty
        delta = (chosen_rewards - rejected_rewards).detach()
        metrics.update({"accuracy": (delta > 0).float().mean().item(), "margin": delta.mean().item(),
                        "rewards/chosen": chosen_rewards.detach().mean().item(),
                        "rewards/rejected": rejected_rewards.detach().mean().item()})
        return loss, metrics

    return step


def train_member(accelerator, cfg: RewardRunConfig, plan: MemberPlan, base: str, tokenizer, family_dir: Path,
                 resume: bool, card_rows: dict) -> dict:
    """Train one model (a member, a span fit, a multi-head model) and save it under members/<name>,
    with its model card (`card_rows`: the data's row counts, robustpo.model_card.data_section)."""
    from accelerate.utils import set_seed

    from robustpo.data.io import atomic_dir, write_json_atomic
    from robustpo.model_card import reward_card, write_card
    from robustpo.models import save_final, transformers_model
    from robustpo.rewards.family import quiet_transformers
    from robustpo.rewards.pooling import CONFIG_KEY
    from robustpo.train.loop import check_finite_weights, make_optimizer_and_scheduler, run_loop
    from robustpo.train.preference import check_trainable_precision

    run_dir, out_dir = family_dir / "runs" / plan.name, family_dir / "members" / plan.name
    tc = dataclasses.replace(cfg.train, seed=plan.seed, output_dir=str(run_dir))
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "data_rows.json", {k: v for k, v in plan.data.items()})
    set_seed(plan.seed)
    confound = cfg.reward.confound
    r = cfg.reward
    model = load_reward_backbone(base, plan.num_labels, cfg.model, tokenizer.pad_token_id, plan.seed, r.head)
    check_trainable_precision(model)
    module = RewardModule(model, r.head, r.pooling, plan.num_labels, plan.debias)
    collate = make_collate(tokenizer.pad_token_id)
    scale0, coef0 = initial_scalars(module, plan.items, collate, r.eval_batch_size, accelerator.device)
    module = RewardModule(model, r.head, r.pooling, plan.num_labels, plan.debias, scale=scale0, coef=coef0)
    scalars = [p for p in (module.scale, module.confound_coef) if p is not None]
    groups = [{"params": [p for p in module.model.parameters() if p.requires_grad]}]
    if scalars:   # b and s start at their logistic fits; they need bigger steps than the weights, and no decay
        groups.append({"params": scalars, "lr": r.scalar_learning_rate, "weight_decay": 0.0})
    optimizer, scheduler, total = make_optimizer_and_scheduler(groups, tc, len(plan.items), accelerator.num_processes)
    module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    last: dict = {}
    started = time.perf_counter()
    decorrelate = confound.decorrelate if confound is not None and plan.role != "slope-probe" else 0.0
    state = run_loop(accelerator=accelerator, model=module, optimizer=optimizer, scheduler=scheduler,
                     dataset=plan.items, collate_fn=collate,
                     step_fn=make_step_fn(cfg.reward.center_coef, cfg.reward.use_margin, decorrelate),
                     cfg=tc, run_dir=run_dir, total_steps=total, resume=resume, on_log=last.update,
                     source=cfg.data.train, saves=f"members/{plan.name}", log_prefix=f"{plan.name}/")
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(module)
    check_finite_weights(trained, f"members/{plan.name}")
    summary = {"steps": state.step, "seed": plan.seed, "heads": plan.num_labels,
               "nonfinite_skipped": state.nonfinite_skipped,
               "loop_seconds": round(time.perf_counter() - started, 3),   # this process's share, if resumed
               "final_train_metrics": {k: last[k] for k in ("loss", "accuracy", "margin") if k in last}}
    summary["initial"] = {"scale": scale0, "confound_coef": coef0}
    if trained.confound_coef is not None:
        summary["confound_coef_fitted"] = trained.confound_coef.detach().float().tolist()   # b̂ per head
    spec = {"head": r.head, "pooling": r.pooling}
    if trained.scale is not None:
        spec["scale"] = summary["scale"] = float(trained.scale.detach())
    if spec != {"head": "score", "pooling": "last"}:   # how robustpo turns the model's outputs into a reward
        setattr(transformers_model(trained.model).config, CONFIG_KEY, spec)
    if accelerator.is_main_process:
        with atomic_dir(out_dir) as tmp, quiet_transformers():
            save_final(trained.model, tokenizer, tmp)
            write_card(tmp, reward_card(cfg, plan, summary, card_rows))   # refreshed once family.json is written
        write_json_atomic(run_dir / "summary.json", summary)   # last: marks the member finished
    accelerator.wait_for_everyone()
    accelerator.free_memory()   # drop references to this member's model and optimizer
    return summary


def _made(cfg: RewardRunConfig, plan: MemberPlan, summary: dict, head: int) -> dict:
    made = {"mode": cfg.reward.family.mode, "seed": plan.seed, "steps": summary["steps"],
            "loop_seconds": summary.get("loop_seconds"), "base_model": cfg.model.name_or_path,
            "reward_head": cfg.reward.head, "pooling": cfg.reward.pooling, "center_coef": cfg.reward.center_coef,
            "use_margin": cfg.reward.use_margin, "final_train_metrics": summary["final_train_metrics"]}
    if plan.num_labels > 1:
        made.update(head=head, bootstrap_draw=head)
    elif cfg.reward.family.mode in ("bootstrap", "span") and cfg.reward.family.size > 1:
        made["bootstrap_draw"] = int(plan.name.split("-")[1])
    if cfg.reward.confound is not None:
        made["confound"] = dataclasses.asdict(cfg.reward.confound) | {"debias": plan.debias}
        if "confound_coef_fitted" in summary:
            made["confound_coef_fitted"] = summary["confound_coef_fitted"][head]
        if "confound_corr_train" in summary:
            made["confound_corr_train"] = summary["confound_corr_train"][head]
    if "target" in plan.data:
        made["reweight_target"] = plan.data["target"]
    return made


def _training_correlations(family_dir: Path, plans: list[MemberPlan], items: list, rows: list, cfg) -> dict:
    """corr(r_θ, φ̃) over the training responses for every trained model, and for span families
    with `span_scale: slope`, each plain model's slope of Δr on Δφ̃ (through the origin)."""
    from robustpo.data.collate import pair_layout, split_pairs
    from robustpo.rewards.family import load_family
    from robustpo.rewards.objective import pearson

    by_index = {r["index"]: r for r in rows}
    src = [by_index[it["index"]] for it in items]
    prompts = [r["prompt"] for r in src]
    prompts = pair_layout(prompts, prompts)
    responses = pair_layout([r["chosen"] for r in src], [r["rejected"] for r in src])
    phi = torch.tensor(pair_layout([it["chosen_confound"] for it in items],
                                   [it["rejected_confound"] for it in items]))                   # (2N,)
    out = {}
    for plan in plans:
        folder = family_dir / "members" / plan.name
        family = load_family(folder, batch_size=cfg.reward.eval_batch_size)
        r = family.score(prompts, responses)                                              # (2N, K)
        result = {"corr": [pearson(r[:, k], phi) for k in range(r.shape[1])]}
        if plan.role == "slope-probe":
            r_chosen, r_rejected = split_pairs(r[:, 0], len(items))                       # (N,) each
            phi_chosen, phi_rejected = split_pairs(phi, len(items))
            dr, dphi = r_chosen - r_rejected, phi_chosen - phi_rejected
            result["slope"] = float((dr.double() * dphi.double()).sum() / (dphi.double() ** 2).sum())
        out[plan.name] = result
    return out


def _manifest_members(cfg, plans, summaries, family_dir) -> list[dict]:
    from robustpo.rewards.family import member_entry

    fam = cfg.reward.family
    members = []
    for plan in plans:
        if plan.role == "slope-probe":
            continue
        data = {"source": cfg.data.train, **{k: v for k, v in plan.data.items() if k != "rows"},
                "rows_file": f"runs/{plan.name}/data_rows.json"}
        folder = family_dir / "members" / plan.name
        if plan.role == "span-fit":
            if fam.span_scale == "fitted":
                scale = summaries[plan.name]["confound_coef_fitted"][0]
            else:
                scale = summaries[plan.name.replace("fit-", "plain-")]["slope"]
            prefix = "" if fam.size == 1 else f"{plan.name}-"
            for w in fam.weights:
                made = _made(cfg, plan, summaries[plan.name], 0) | {
                    "span": {"weight": float(w), "scale": scale, "scale_from": fam.span_scale}}
                members.append(member_entry(family_dir, folder, 0, f"{prefix}w{w:g}", confound_coef=float(w) * scale,
                                            made=made, data=data))
            continue
        for head in range(plan.num_labels):
            name = plan.name if plan.num_labels == 1 else f"head-{head}"
            members.append(member_entry(family_dir, folder, head, name,
                                        made=_made(cfg, plan, summaries[plan.name], head), data=data))
    return members


# Everything a reward run writes in OUTPUT_DIR (robustpo.train.run_folder.RunLayout).
REWARD_RUN_FILES = ("family.json", "members", "runs", "base_model", "config.yaml", "config_changes.jsonl",
                    "inputs.json")


def _reward_progress(family_dir: Path) -> bool:
    from robustpo.train.run_folder import has_steps

    runs = [d for d in (family_dir / "runs").glob("*") if d.is_dir()]
    return ((family_dir / "family.json").exists() or any((family_dir / "members").glob("*"))
            or any((d / "summary.json").exists() or has_steps(d) for d in runs))


def reward_layout():
    from robustpo.train.run_folder import RunLayout

    return RunLayout(owned=REWARD_RUN_FILES, progress=_reward_progress, what="a reward run",
                     other=lambda d: "a preference run (robustpo train)" if (d / "final").exists()
                     or (d / "train_summary.json").exists() or (d / "checkpoints").is_dir() else None)


def train_reward_family(cfg: RewardRunConfig, *, resume: bool = False, overwrite: bool = False,
                        allow_changes: bool = False) -> Path:
    """Train the reward model(s) of `cfg`, write the family folder (train.output_dir), return it.

    As for preference training, config values, paths and data are all checked before
    OUTPUT_DIR is touched, and OUTPUT_DIR is locked for the whole run (train.run_folder.run_folder)."""
    from robustpo.train.loop import make_accelerator
    from robustpo.train.run_folder import preflight, run_folder

    preflight(cfg)
    check_config(cfg)
    tc = cfg.train
    family_dir = Path(tc.output_dir)
    rows, report = _load_rows(cfg, cfg.data.train)
    if cfg.reward.heldout:
        train_rows, (held_rows, held_report) = rows, _load_rows(cfg, cfg.reward.heldout)
    else:
        (train_rows, held_rows), held_report = split_heldout(rows, cfg.reward.heldout_fraction, tc.seed), None

    accelerator = make_accelerator(tc, family_dir)
    with run_folder(accelerator, family_dir, cfg, reward_layout(), resume=resume, overwrite=overwrite,
                    allow_changes=allow_changes):
        return _train_family(cfg, accelerator, family_dir, report, train_rows, held_rows, resume, held_report)


def _train_family(cfg: RewardRunConfig, accelerator, family_dir: Path, report, train_rows, held_rows,
                  resume: bool, held_report=None) -> Path:
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.model_card import reward_card, write_card
    from robustpo.models import load_tokenizer
    from robustpo.rewards.family import write_manifest
    from robustpo.train.loop import shared_base, start_trackers

    tc, fam, confound = cfg.train, cfg.reward.family, cfg.reward.confound
    start_trackers(accelerator, cfg, "robustpo-reward")
    card_rows = {"data.train": (report.rows_read, f"{len(train_rows)} pairs for training"
                                + ("" if held_report else f", {len(held_rows)} held out"))}
    if held_report is not None:
        card_rows["reward.heldout"] = (held_report.rows_read, f"{len(held_rows)} pairs held out")
    if cfg.reward.kind == "pairwise":   # a cross-encoder of both responses: rewards/pairwise.py
        from robustpo.rewards.pairwise import train_pairwise_family

        return train_pairwise_family(cfg, accelerator, family_dir, report, train_rows, held_rows, resume, card_rows)
    accelerator.print(f"{report.summary()}; {len(train_rows)} for training, {len(held_rows)} held out")

    texts = lambda: (str(t) for r in train_rows for t in (r["prompt"], r["chosen"], r["rejected"]))  # noqa: E731
    base = shared_base(accelerator, cfg.model, family_dir, texts, tc.seed)
    tokenizer = load_tokenizer(base, cfg.model)
    items, stats = tokenize_pairs(train_rows, tokenizer, max_length=cfg.data.max_length,
                                  max_prompt_length=cfg.data.max_prompt_length, source=cfg.data.train)
    accelerator.print(stats.summary())
    confound_stats = attach_confound(items, train_rows, confound.feature, cfg.data.train) if confound else None

    plans = plan_members(items, cfg, cfg.data.train)   # a reweight set no weighting can fix fails here
    summaries = {}
    for plan in plans:
        done = family_dir / "runs" / plan.name / "summary.json"
        if resume and done.exists() and (family_dir / "members" / plan.name / "config.json").exists():
            summaries[plan.name] = json.loads(done.read_text())
            accelerator.print(f"{plan.name}: already trained, kept")
            continue
        accelerator.print(f"training {plan.name} ({plan.data.get('pairs')} pairs, {plan.num_labels} head(s))")
        summaries[plan.name] = train_member(accelerator, cfg, plan, base, tokenizer, family_dir, resume, card_rows)

    if accelerator.is_main_process:   # the manifest and its measurements are process 0's job
        if confound is not None:
            for name, result in _training_correlations(family_dir, plans, items, train_rows, cfg).items():
                summaries[name]["confound_corr_train"] = result["corr"]
                if "slope" in result:
                    summaries[name]["slope"] = result["slope"]
        members = _manifest_members(cfg, plans, summaries, family_dir)
        manifest = {"mode": fam.mode, "size": len(members), "max_length": cfg.data.max_length,
                    "max_prompt_length": cfg.data.max_prompt_length, "reward_head": cfg.reward.head,
                    "pooling": cfg.reward.pooling,
                    "train_data": report.summary(), "truncation": stats.as_dict(), "members": members}
        if confound_stats is not None:
            manifest["confound"] = confound_stats
        write_manifest(family_dir, manifest)
        if held_rows:
            from robustpo.rewards.evaluate import evaluate_family

            held_source = cfg.reward.heldout or f"{cfg.data.train} (held-out {cfg.reward.heldout_fraction:.0%})"
            metrics = evaluate_family(family_dir, held_rows, batch_size=cfg.reward.eval_batch_size,
                                      bins=cfg.reward.calibration_bins, device=str(accelerator.device))
            for m in members:
                m["heldout"] = metrics["members"][m["name"]]
            manifest["heldout"] = {"source": held_source, **{k: v for k, v in metrics.items() if k != "members"}}
            write_manifest(family_dir, manifest)
        for plan in plans:   # each card again, now with its members' names and held-out metrics
            folder = family_dir / "members" / plan.name
            entries = [m for m in members if Path(family_dir, m["path"]).resolve() == folder.resolve()]
            write_card(folder, reward_card(cfg, plan, summaries[plan.name], card_rows, entries))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return family_dir

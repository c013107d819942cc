"""Bradley–Terry reward models and families of them, on the one training loop (train/loop.py).

`robustpo reward train RECIPE.yaml` trains `reward.family.size` = K reward models and writes
a family folder (rewards/family.py):

    OUTPUT_DIR/family.json           manifest: how each member was made, its data, held-out metrics
    OUTPUT_DIR/members/<name>/       each member, a plain `transformers` sequence-classification folder
    OUTPUT_DIR/runs/<name>/          its loop run: metrics.jsonl, checkpoints, data_rows.json, summary.json

Family modes (`reward.family.mode`), each member trained on:
- seed:      all training pairs, its own seed (score-head init and data order);
- bootstrap: N pairs drawn with replacement from the N training pairs (its own draw);
- subsets:   a disjoint 1/K share of the pairs;
- multihead: ONE model, a shared backbone with K score heads (num_labels=K), head k weighting
             each pair by its count in bootstrap draw k (the same draws `bootstrap` makes),
             trained in one pass: a K-member family for about the cost of one member.
A size-1 family is a single reward model. Members already finished are skipped on
`--resume`; the one that was running resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustpo.config import DataConfig, ModelConfig, TrainConfig
from robustpo.errors import ConfigError, DataError

MODES = ("seed", "bootstrap", "subsets", "multihead")


@dataclass
class FamilyConfig:
    size: int = 1
    mode: str = "seed"                  # seed | bootstrap | subsets | multihead


@dataclass
class RewardConfig:
    use_margin: bool = False             # subtract each row's `margin` inside the BT logistic
    center_coef: float = 0.0             # c of c·(r(w) + r(l))²
    heldout: str | None = None           # held-out pairs file; default: a split of data.train
    heldout_fraction: float = 0.1        # share of data.train held out when `heldout` is unset
    family: FamilyConfig = field(default_factory=FamilyConfig)
    eval_batch_size: int = 32
    calibration_bins: int = 10


@dataclass
class RewardRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/reward", learning_rate=1e-5))
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class MemberPlan:
    name: str
    seed: int
    items: list            # tokenized pairs (bootstrap: with repeats)
    num_labels: int = 1
    data: dict = field(default_factory=dict)


def _check_config(cfg: RewardRunConfig) -> None:
    fam = cfg.reward.family
    if fam.mode not in MODES:
        raise ConfigError(f"reward.family.mode must be one of {', '.join(MODES)}, got '{fam.mode}'")
    if fam.size < 1:
        raise ConfigError(f"reward.family.size must be at least 1, got {fam.size}")
    if not cfg.data.train:
        raise ConfigError("data.train is required (a file, a saved dataset folder or a hub id)")
    if not 0.0 <= cfg.reward.heldout_fraction < 1.0:
        raise ConfigError(f"reward.heldout_fraction must lie in [0, 1), got {cfg.reward.heldout_fraction}")


def _load_rows(cfg: RewardRunConfig, source: str):
    from robustpo.data.schema import load_preferences

    d = cfg.data
    rows, report = load_preferences(source, split=d.split, fmt=d.format, strict=d.strict, drop_empty=d.drop_empty,
                                    max_rows=d.max_rows if source == d.train else None)
    if cfg.reward.use_margin:
        for r in rows:
            m = r.get("margin")
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not np.isfinite(m):
                raise DataError(f"reward.use_margin needs a finite number here, got {m!r}", file=source,
                                row=r["index"], field="margin")
    return rows, report


def split_heldout(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded random `fraction` of the rows held out (at least one if > 0)."""
    if fraction <= 0:
        return rows, []
    n_held = max(1, round(fraction * len(rows)))
    if n_held >= len(rows):
        raise ConfigError(f"reward.heldout_fraction={fraction} leaves no training pairs out of {len(rows)}")
    perm = np.random.default_rng([seed, 7919]).permutation(len(rows))
    held = set(perm[:n_held].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def bootstrap_counts(n: int, seed: int, member: int) -> np.ndarray:
    """How often each of n pairs appears in bootstrap draw `member` (n draws with replacement)."""
    draw = np.random.default_rng([seed, 104729, member]).integers(0, n, n)
    return np.bincount(draw, minlength=n)


def plan_members(items: list, cfg: RewardRunConfig) -> list[MemberPlan]:
    fam, seed = cfg.reward.family, cfg.train.seed
    K, n = fam.size, len(items)

    def describe(chosen):
        rows = [items[i]["index"] for i in chosen]
        return {"pairs": len(rows), "unique_pairs": len(set(rows))}, rows

    if fam.mode == "multihead":
        counts = np.stack([bootstrap_counts(n, seed, k) for k in range(K)], axis=1)        # (n, K)
        weighted = [{**it, "head_weights": counts[i].tolist()} for i, it in enumerate(items)]
        data = {"pairs": n, "unique_pairs_per_head": [int((counts[:, k] > 0).sum()) for k in range(K)]}
        return [MemberPlan("multihead", seed, weighted, num_labels=K, data=data)]
    if fam.mode == "subsets" and K > n:
        raise ConfigError(f"reward.family.size={K} disjoint subsets need at least {K} training pairs, have {n}")
    plans = []
    for k in range(K):
        if fam.mode == "seed":
            chosen = list(range(n))
        elif fam.mode == "bootstrap":
            chosen = np.repeat(np.arange(n), bootstrap_counts(n, seed, k)).tolist()
        else:
            perm = np.random.default_rng([seed, 15485863]).permutation(n)
            chosen = sorted(np.array_split(perm, K)[k].tolist())
        data, rows = describe(chosen)
        plans.append(MemberPlan(f"member-{k}", seed + k, [items[i] for i in chosen], data={**data, "rows": rows}))
    return plans


def apply_reward_lora(model, cfg: ModelConfig):
    """LoRA on the backbone; the new score head is trained in full (peft's SEQ_CLS task saves it)."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, task_type="SEQ_CLS"))


def load_reward_backbone(path: str, num_labels: int, cfg: ModelConfig, pad_token_id: int, seed: int):
    """A sequence-classification model on `path` (a causal LM gets new score heads, drawn from `seed`)."""
    from transformers import AutoModelForSequenceClassification

    from robustpo.models import torch_dtype
    from robustpo.rewards.family import quiet_transformers

    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=torch_dtype(cfg.dtype), trust_remote_code=cfg.trust_remote_code,
            ignore_mismatched_sizes=True)
    # The model pools the last non-pad token, so it must know which id pads.
    model.config.pad_token_id = pad_token_id
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return apply_reward_lora(model, cfg) if cfg.lora is not None else model


def make_collate(pad_id: int):
    from robustpo.data.collate import collate_pairs

    def collate(items):
        batch = collate_pairs(items, pad_id)
        for key in ("margin", "head_weights"):
            if key in items[0]:
                batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)   # (B,) / (B, K)
        return batch

    return collate


def make_step_fn(center_coef: float, use_margin: bool):
    from robustpo.rewards.objective import bradley_terry_loss

    def step(model, batch):
        B = batch["index"].shape[0]
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()  # (2B, K)
        rc, rr = rewards[:B], rewards[B:2 * B]                                                         # (B, K)
        loss, _ = bradley_terry_loss(rc, rr, margin=batch.get("margin") if use_margin else None,
                                     center_coef=center_coef, weights=batch.get("head_weights"))
        delta = (rc - rr).detach()
        return loss, {"accuracy": (delta > 0).float().mean().item(), "margin": delta.mean().item(),
                      "rewards/chosen": rc.detach().mean().item(), "rewards/rejected": rr.detach().mean().item()}

    return step


def train_member(accelerator, cfg: RewardRunConfig, plan: MemberPlan, base: str, tokenizer, family_dir: Path,
                 resume: bool) -> dict:
    """Train one member (or the multi-head model) and save it under members/<name>. Returns its summary."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from robustpo.data.io import atomic_dir, write_json_atomic
    from robustpo.models import save_final
    from robustpo.rewards.family import quiet_transformers
    from robustpo.train.loop import run_loop, total_optimizer_steps

    run_dir, out_dir = family_dir / "runs" / plan.name, family_dir / "members" / plan.name
    tc = dataclasses.replace(cfg.train, seed=plan.seed, output_dir=str(run_dir))
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "data_rows.json", {k: v for k, v in plan.data.items()})
    set_seed(plan.seed)
    model = load_reward_backbone(base, plan.num_labels, cfg.model, tokenizer.pad_token_id, plan.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, betas=tuple(tc.adam_betas),
                                  weight_decay=tc.weight_decay)
    total = total_optimizer_steps(len(plan.items), tc, accelerator.num_processes)
    # accelerate steps a prepared scheduler once per process per optimizer step: scale to match.
    scheduler = get_scheduler(tc.scheduler, optimizer,
                              num_warmup_steps=int(tc.warmup_ratio * total) * accelerator.num_processes,
                              num_training_steps=total * accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    last: dict = {}
    started = time.perf_counter()
    state = run_loop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                     dataset=plan.items, collate_fn=make_collate(tokenizer.pad_token_id),
                     step_fn=make_step_fn(cfg.reward.center_coef, cfg.reward.use_margin), cfg=tc, run_dir=run_dir,
                     total_steps=total, resume=resume, on_log=last.update)
    accelerator.wait_for_everyone()
    summary = {"steps": state.step, "seed": plan.seed, "heads": plan.num_labels,
               "loop_seconds": round(time.perf_counter() - started, 3),   # this process's share, if resumed
               "final_train_metrics": {k: last[k] for k in ("loss", "accuracy", "margin") if k in last}}
    if accelerator.is_main_process:
        with atomic_dir(out_dir) as tmp, quiet_transformers():
            save_final(accelerator.unwrap_model(model), tokenizer, tmp)
        write_json_atomic(run_dir / "summary.json", summary)   # last: marks the member finished
    accelerator.wait_for_everyone()
    accelerator.free_memory()   # drop references to this member's model and optimizer
    return summary


def _member_made(cfg: RewardRunConfig, plan: MemberPlan, summary: dict, head: int) -> dict:
    made = {"mode": cfg.reward.family.mode, "seed": plan.seed, "steps": summary["steps"],
            "loop_seconds": summary.get("loop_seconds"),
            "base_model": cfg.model.name_or_path, "center_coef": cfg.reward.center_coef,
            "use_margin": cfg.reward.use_margin, "final_train_metrics": summary["final_train_metrics"]}
    if plan.num_labels > 1:
        made.update(head=head, bootstrap_draw=head)
    elif cfg.reward.family.mode == "bootstrap":
        made["bootstrap_draw"] = int(plan.name.split("-")[1])
    return made


def train_reward_family(cfg: RewardRunConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train the reward model(s) of `cfg`, write the family folder (train.output_dir), return it."""
    from robustpo.train.loop import make_accelerator, open_run_dir

    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.models import load_tokenizer, materialize_base
    from robustpo.rewards.family import member_entry, write_manifest

    _check_config(cfg)
    tc, fam = cfg.train, cfg.reward.family
    family_dir = Path(tc.output_dir)
    accelerator = make_accelerator(tc, family_dir)
    open_run_dir(accelerator, family_dir, cfg, resume=resume, overwrite=overwrite, what="a reward run",
                 evidence=("family.json", "runs", "members"), cleared=("base_model", "config.yaml"))

    rows, report = _load_rows(cfg, cfg.data.train)
    if cfg.reward.heldout:
        train_rows, (held_rows, _) = rows, _load_rows(cfg, cfg.reward.heldout)
    else:
        train_rows, held_rows = split_heldout(rows, cfg.reward.heldout_fraction, tc.seed)
    accelerator.print(f"{report.summary()}; {len(train_rows)} for training, {len(held_rows)} held out")

    texts = lambda: (str(t) for r in train_rows for t in (r["prompt"], r["chosen"], r["rejected"]))  # noqa: E731
    if accelerator.is_main_process:
        materialize_base(cfg.model, family_dir, texts, tc.seed)
    accelerator.wait_for_everyone()
    base = materialize_base(cfg.model, family_dir, texts, tc.seed)
    tokenizer = load_tokenizer(base, cfg.model)
    items, stats = tokenize_pairs(train_rows, tokenizer, max_length=cfg.data.max_length,
                                  max_prompt_length=cfg.data.max_prompt_length, source=cfg.data.train)
    accelerator.print(stats.summary())

    plans = plan_members(items, cfg)
    summaries = {}
    for plan in plans:
        done = family_dir / "runs" / plan.name / "summary.json"
        if resume and done.exists() and (family_dir / "members" / plan.name / "config.json").exists():
            import json

            summaries[plan.name] = json.loads(done.read_text())
            accelerator.print(f"{plan.name}: already trained, kept")
            continue
        accelerator.print(f"training {plan.name} ({plan.data.get('pairs')} pairs, {plan.num_labels} head(s))")
        summaries[plan.name] = train_member(accelerator, cfg, plan, base, tokenizer, family_dir, resume)

    members = []
    for plan in plans:
        for head in range(plan.num_labels):
            name = plan.name if plan.num_labels == 1 else f"head-{head}"
            data = {"source": cfg.data.train, **{k: v for k, v in plan.data.items() if k != "rows"},
                    "rows_file": f"runs/{plan.name}/data_rows.json"}
            members.append(member_entry(family_dir, family_dir / "members" / plan.name, head, name,
                                        made=_member_made(cfg, plan, summaries[plan.name], head), data=data))
    manifest = {"mode": fam.mode, "size": len(members), "max_length": cfg.data.max_length,
                "max_prompt_length": cfg.data.max_prompt_length, "train_data": report.summary(),
                "truncation": stats.as_dict(), "members": members}
    if accelerator.is_main_process:
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
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return family_dir

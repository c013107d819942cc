"""Pairwise preference models (`reward.kind: pairwise`): P(A ≻ B | x) from one joint reading.

A cross-encoder on any causal-LM backbone: a sequence-classification model with one output
reads the prompt and both responses in ONE sequence (template below) and its score head at
the sequence's final position gives f(x, A, B). The preference logit is

    logit(x, A, B) = f(x, A, B) − f(x, B, A),     P(A ≻ B) = σ(logit)

so P(A ≻ B) + P(B ≻ A) = 1 exactly, by construction (not by averaging probabilities), and
every training pair is seen in both orders in every step: its loss −log σ(logit(x, w, l))
runs the forward of (x, w, l) and of (x, l, w). Unlike a Bradley–Terry model, f sees both
responses at once, so it can express preferences that depend on the pair jointly.

Template (token ids; `robustpo_pairwise.json` in each saved folder records it):

    [BOS if the tokenizer adds one] prompt  A [EOS]  B [EOS]

Prompts and responses are plain text (a message list is flattened by `judges.base.as_text`).
Truncation rule, when the whole exceeds `max_length`: the prompt keeps its last
`max_prompt_length` tokens (as for Bradley–Terry models); then, with `room` tokens left,
if the shorter response fits in room // 2 the longer keeps its first room − shorter tokens,
otherwise both keep their first room // 2. The rule is symmetric in A and B, so both orders
see the same tokens. Every cut is counted (`PairEncoder.stats`), never silent.

Saved folders are plain `transformers` sequence-classification folders: reloading with
`AutoModelForSequenceClassification.from_pretrained` and reading the score head at the last
position (`model.score(model.model(ids).last_hidden_state[:, -1])`, or `model(ids).logits`
when pad ≠ EOS) gives f; the last position is read explicitly because with pad = EOS the
transformers pooling would skip the closing EOS.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from robustpo.errors import DataError

PAIRWISE_FILE = "robustpo_pairwise.json"
FORMAT = "robustpo.pairwise"
TEMPLATE = "[BOS] prompt A [EOS] B [EOS]"


@dataclass
class PairTruncation:
    pairs: int = 0
    prompt_truncated: int = 0
    responses_truncated: int = 0

    def as_dict(self) -> dict:
        return {"pairs": self.pairs, "prompt_truncated": self.prompt_truncated,
                "responses_truncated": self.responses_truncated}


def join_pair(p: list[int], a: list[int], b: list[int], *, bos, add_bos: bool, eos, max_length: int,
              max_prompt_length: int) -> tuple[list[int], bool, bool]:
    """The template and truncation rule (module docstring) on token ids without special tokens.
    Returns (ids, prompt truncated?, responses truncated?)."""
    from robustpo.data.tokenize import _truncate_prompt

    if add_bos and (not p or p[0] != bos):
        p = [bos] + p
    if eos is not None:
        a, b = a + [eos], b + [eos]
    prompt_cut = len(p) + len(a) + len(b) > max_length and len(p) > max_prompt_length
    if prompt_cut:
        p = _truncate_prompt(p, max_prompt_length, bos if add_bos else None)
    room = max_length - len(p)
    cut = len(a) + len(b) > room
    if cut:
        short = min(len(a), len(b))
        if short <= room // 2:   # the shorter stays whole, the longer takes the rest
            keep_a, keep_b = (len(a), room - len(a)) if len(a) <= len(b) else (room - len(b), len(b))
        else:
            keep_a = keep_b = room // 2
        a, b = a[:keep_a], b[:keep_b]
    return p + a + b, prompt_cut, cut


class PairEncoder:
    """Token ids of (x, A, B) by the template; `stats` counts the pairs and every truncation."""

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int):
        from robustpo.data.tokenize import SpecialTokens

        if max_prompt_length >= max_length:
            raise DataError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
        self.tokenizer, self.max_length, self.max_prompt_length = tokenizer, int(max_length), int(max_prompt_length)
        self.specials = SpecialTokens.of(tokenizer)
        self.stats = PairTruncation()

    def ids(self, texts: list) -> list[list[int]]:
        from robustpo.judges.base import as_text

        return self.tokenizer([as_text(t) for t in texts], add_special_tokens=False)["input_ids"]

    def encode(self, prompts: list, first: list, second: list) -> list[list[int]]:
        """Also sets `last_cut`: for each pair, whether anything of it was truncated."""
        s = self.specials
        out, self.last_cut = [], []
        for p, a, b in zip(self.ids(prompts), self.ids(first), self.ids(second)):
            seq, pc, rc = join_pair(p, a, b, bos=s.bos, add_bos=s.add_bos, eos=s.eos, max_length=self.max_length,
                                    max_prompt_length=self.max_prompt_length)
            self.stats.pairs += 1
            self.stats.prompt_truncated += pc
            self.stats.responses_truncated += rc
            self.last_cut.append(bool(pc or rc))
            out.append(seq)
        return out


def last_position_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(S,) f: the score head (column 0) at each right-padded sequence's last real token."""
    from robustpo.rewards.pooling import per_position_scores

    scores = per_position_scores(model, input_ids, attention_mask)[..., 0]          # (S, T)
    last = attention_mask.sum(dim=1) - 1                                             # (S,)
    return scores[torch.arange(len(last), device=scores.device), last]


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)      # (S, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)            # (S, T)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


class PairwiseModule(torch.nn.Module):
    """What training optimizes: f over a batch of sequences. One module, so DDP wraps it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return last_position_scores(self.model, input_ids, attention_mask)


def make_pair_collate(pad_id: int):
    """Rows 0..B−1: (x, w, l); rows B..2B−1: (x, l, w)."""
    def collate(items):
        ids, mask = pad_batch([it["ab_ids"] for it in items] + [it["ba_ids"] for it in items], pad_id)
        return {"input_ids": ids, "attention_mask": mask, "index": torch.tensor([it["index"] for it in items])}

    return collate


def pair_step(module, batch):
    f = module(batch["input_ids"], batch["attention_mask"])                         # (2B,)
    B = len(batch["index"])
    logit = f[:B] - f[B:]                                                           # (B,) logit(x, w, l)
    loss = -torch.nn.functional.logsigmoid(logit).mean()
    d = logit.detach()
    return loss, {"accuracy": (d > 0).float().mean().item(), "margin": d.mean().item()}


def is_pairwise_folder(path) -> bool:
    path = Path(path)
    if (path / PAIRWISE_FILE).exists():
        return True
    try:
        return json.loads((path / "family.json").read_text()).get("kind") == "pairwise"
    except (OSError, ValueError, AttributeError):
        return False


class PairwiseFamily:
    """K pairwise models (a family folder with "kind": "pairwise", or one saved model folder).
    `logits(prompts, first, second)` -> (N, K) antisymmetric logits; `stats` counts truncations."""

    def __init__(self, path, *, batch_size: int = 16, device: str = "cpu", max_length: int | None = None,
                 dtype: str = "float32"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from robustpo.models import torch_dtype
        from robustpo.rewards.family import FamilyError, check_members, member_entry, quiet_transformers

        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_dir():
            raise FamilyError(f"{self.path}: no such pairwise model folder")
        if not is_pairwise_folder(self.path):
            raise FamilyError(f"{self.path}: not a pairwise preference model (no {PAIRWISE_FILE}, no family.json "
                              "with \"kind\": \"pairwise\"); a Bradley–Terry reward model scores responses one at a "
                              "time: use it as reward:PATH / family:PATH")
        if (self.path / "family.json").exists():
            from robustpo.rewards.family import read_manifest

            manifest = read_manifest(self.path)
        else:
            spec = json.loads((self.path / PAIRWISE_FILE).read_text())
            manifest = {"members": [member_entry(self.path, self.path, 0, "pairwise")],
                        "max_length": spec.get("max_length"), "max_prompt_length": spec.get("max_prompt_length")}
        self.members = manifest["members"]
        dirs = check_members(self.path, manifest, pairwise=True)   # fingerprints, one tokenizer for all
        self.max_length = int(max_length or manifest.get("max_length") or 512)
        mpl = int(manifest.get("max_prompt_length") or self.max_length // 2)
        self.tokenizer = AutoTokenizer.from_pretrained(dirs[0])
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.encoder = PairEncoder(self.tokenizer, self.max_length, min(mpl, self.max_length - 1))
        self.batch_size, self.device = int(batch_size), device
        self.last_cut: list[bool] = []   # per pair of the last logits() call: was it truncated?
        self.models = []
        for m, d in zip(self.members, dirs):
            try:
                with quiet_transformers():
                    model = AutoModelForSequenceClassification.from_pretrained(d, dtype=torch_dtype(dtype))
            except (OSError, ValueError) as e:
                raise FamilyError(f"pairwise member '{m['name']}' ({d}): cannot load: {e}") from None
            self.models.append(model.to(device).eval())

    @property
    def stats(self) -> PairTruncation:
        return self.encoder.stats

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.members]

    @torch.no_grad()
    def f(self, seqs: list[list[int]]) -> torch.Tensor:
        """(S, K) f of each sequence by each member, batched over similar lengths."""
        out = torch.empty(len(seqs), len(self.models))
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            ids, mask = pad_batch([seqs[i] for i in chunk], self.tokenizer.pad_token_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            out[chunk] = torch.stack([last_position_scores(m, ids, mask).float().cpu() for m in self.models], dim=1)
        return out

    def logits(self, prompts: list, first: list, second: list) -> torch.Tensor:
        n = len(prompts)
        # Counted once per comparison: the (B, A) order holds the same tokens (the rule is symmetric).
        seqs = self.encoder.encode(prompts, first, second)
        before, cut = self.stats.as_dict(), self.encoder.last_cut
        seqs += self.encoder.encode(prompts, second, first)
        self.encoder.stats, self.last_cut = PairTruncation(**before), cut
        f = self.f(seqs)                                                              # (2N, K)
        out = f[:n] - f[n:]
        if not torch.isfinite(out).all():
            raise DataError(f"{self.name}: a pairwise member gave a non-finite logit; its weights are likely broken")
        return out


def pairwise_metrics(family: PairwiseFamily, rows: list[dict], bins: int) -> dict:
    """Held-out accuracy, ECE, Brier per member and of the mean logit (rewards/objective.py),
    from logit(x, chosen, rejected) in the place of a Bradley–Terry margin."""
    from robustpo.rewards.objective import family_metrics

    delta = family.logits([r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
    return family_metrics(delta, family.names, bins)


def pairwise_items(rows: list[dict], encoder: PairEncoder) -> list[dict]:
    prompts = [r["prompt"] for r in rows]
    w, lo = [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    ab = encoder.encode(prompts, w, lo)
    before = encoder.stats.as_dict()
    ba = encoder.encode(prompts, lo, w)   # the same tokens (symmetric rule): counted once
    encoder.stats = PairTruncation(**before)
    return [{"index": r["index"], "ab_ids": x, "ba_ids": y} for r, x, y in zip(rows, ab, ba)]


def spec_json(max_length: int, max_prompt_length: int) -> dict:
    return {"format": FORMAT, "version": 1, "template": TEMPLATE, "score": "score head at the last position",
            "logit": "f(x, A, B) - f(x, B, A)", "max_length": max_length, "max_prompt_length": max_prompt_length}


def train_pairwise_family(cfg, accelerator, family_dir: Path, report, train_rows, held_rows, resume: bool,
                          card_rows: dict) -> Path:
    """train/reward.py's `_train_family` for `reward.kind: pairwise` (members: seed | bootstrap).
    `card_rows`: the data's row counts for the model cards (robustpo.model_card.data_section)."""
    import time

    from accelerate.utils import set_seed

    from robustpo.data.io import atomic_dir, write_json_atomic
    from robustpo.model_card import reward_card, write_card
    from robustpo.models import load_tokenizer, save_final
    from robustpo.rewards.family import member_entry, quiet_transformers, write_manifest
    from robustpo.rewards.plan import plan_members
    from robustpo.train.loop import check_finite_weights, make_optimizer_and_scheduler, run_loop, shared_base
    from robustpo.train.reward import load_reward_backbone

    tc, d = cfg.train, cfg.data
    accelerator.print(f"{report.summary()}; {len(train_rows)} for training, {len(held_rows)} held out")
    texts = lambda: (str(t) for r in train_rows for t in (r["prompt"], r["chosen"], r["rejected"]))  # noqa: E731
    base = shared_base(accelerator, cfg.model, family_dir, texts, tc.seed)
    tokenizer = load_tokenizer(base, cfg.model)
    encoder = PairEncoder(tokenizer, d.max_length, d.max_prompt_length)
    items = pairwise_items(train_rows, encoder)
    truncation = encoder.stats.as_dict()
    accelerator.print(f"pairwise encoding: {truncation}")
    plans = plan_members(items, cfg, d.train)
    members = []
    for plan in plans:
        run_dir, out_dir = family_dir / "runs" / plan.name, family_dir / "members" / plan.name
        done = run_dir / "summary.json"
        if not (resume and done.exists() and (out_dir / "config.json").exists()):
            tcm = dataclasses.replace(tc, seed=plan.seed, output_dir=str(run_dir))
            if accelerator.is_main_process:
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(run_dir / "data_rows.json", dict(plan.data))
            set_seed(plan.seed)
            model = load_reward_backbone(base, 1, cfg.model, tokenizer.pad_token_id, plan.seed)
            module = PairwiseModule(model)
            optimizer, scheduler, total = make_optimizer_and_scheduler(
                [p for p in module.parameters() if p.requires_grad], tcm, len(plan.items), accelerator.num_processes)
            module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
            last: dict = {}
            started = time.perf_counter()
            state = run_loop(accelerator=accelerator, model=module, optimizer=optimizer, scheduler=scheduler,
                             dataset=plan.items, collate_fn=make_pair_collate(tokenizer.pad_token_id),
                             step_fn=pair_step, cfg=tcm, run_dir=run_dir, total_steps=total, resume=resume,
                             on_log=last.update, source=d.train, saves=f"members/{plan.name}",
                             log_prefix=f"{plan.name}/")
            accelerator.wait_for_everyone()
            trained = accelerator.unwrap_model(module)
            check_finite_weights(trained, f"members/{plan.name}")
            summary = {"steps": state.step, "seed": plan.seed, "loop_seconds": round(time.perf_counter() - started, 3),
                       "final_train_metrics": {k: last[k] for k in ("loss", "accuracy", "margin") if k in last}}
            if accelerator.is_main_process:
                with atomic_dir(out_dir) as tmp, quiet_transformers():
                    save_final(trained.model, tokenizer, tmp)
                    write_json_atomic(tmp / PAIRWISE_FILE, spec_json(d.max_length, d.max_prompt_length))
                    write_card(tmp, reward_card(cfg, plan, summary, card_rows))   # refreshed below, with metrics
                write_json_atomic(done, summary)
            accelerator.wait_for_everyone()
            accelerator.free_memory()
        summary = json.loads(done.read_text()) if done.exists() else summary
        made = {"kind": "pairwise", "mode": cfg.reward.family.mode, "seed": plan.seed, "steps": summary["steps"],
                "base_model": cfg.model.name_or_path, "final_train_metrics": summary["final_train_metrics"]}
        data = {"source": d.train, **{k: v for k, v in plan.data.items() if k != "rows"},
                "rows_file": f"runs/{plan.name}/data_rows.json"}
        members.append((plan, out_dir, made, data, summary))
    if accelerator.is_main_process:
        entries = [member_entry(family_dir, o, 0, o.name, made=m, data=dt) for _, o, m, dt, _ in members]
        manifest = {"kind": "pairwise", "mode": cfg.reward.family.mode, "size": len(entries),
                    "max_length": d.max_length, "max_prompt_length": d.max_prompt_length, "template": TEMPLATE,
                    "train_data": report.summary(), "truncation": truncation, "members": entries}
        write_manifest(family_dir, manifest)
        if held_rows:
            fam = PairwiseFamily(family_dir, batch_size=cfg.reward.eval_batch_size, device=str(accelerator.device))
            metrics = pairwise_metrics(fam, held_rows, cfg.reward.calibration_bins)
            for e in entries:
                e["heldout"] = metrics["members"][e["name"]]
            source = cfg.reward.heldout or f"{d.train} (held-out {cfg.reward.heldout_fraction:.0%})"
            manifest["heldout"] = {"source": source, "truncation": fam.stats.as_dict(),
                                   **{k: v for k, v in metrics.items() if k != "members"}}
            write_manifest(family_dir, manifest)
        for (plan, out_dir, _, _, summary), entry in zip(members, entries):   # each card, now with its metrics
            write_card(out_dir, reward_card(cfg, plan, summary, card_rows, [entry]))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return family_dir



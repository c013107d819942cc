"""Training speed: robustpo `dpo` against TRL's DPOTrainer and against the hardware floor.

Same model (a Llama-style config built locally, random init), same data (real HH-RLHF
pairs, tokenized once and filtered so that nothing is truncated: every row sees the same
tokens), same batch size and number of optimizer steps, run in turn, each row in its own
process (so peak memory is that row's alone):

- trl_default:  DPOTrainer with its defaults (gradient checkpointing on, reference model
                forward at every step);
- trl_fastest:  DPOTrainer at its fastest on this machine: reference log-probs precomputed,
                no gradient checkpointing (`padding_free` is disabled in TRL 1.x);
- robustpo:     `robustpo train` with loss `dpo` and defaults (cached reference log-probs,
                prefix sharing, response-only vocabulary projection, length grouping);
- floor:        a bare forward + backward + AdamW step of the same model over the same
                chosen and rejected token sequences, each unpadded, nothing else;
- floor_padded: the same, but the 2B sequences as one right-padded batch: on a CPU one
                batched call beats 2B small ones, so this is the stronger baseline.

Time per step is the median interval between consecutive optimizer-step ends after warm-up
(data loading included, reference precomputation excluded for every row that has one); the
mean over the same steps is shown too, since the rows split the same pairs into steps
differently (robustpo groups by length).
Also checked: TRL's and robustpo's first-step DPO losses on the same first batch, with a
policy that starts away from the reference so that the loss is not trivially log 2.

    python benchmarks/speed.py                 # full run, table to stdout and benchmarks/results/speed.md
    python benchmarks/speed.py --quick         # a few steps (what the test suite runs)
    python benchmarks/speed.py --device cuda --preset gpu   # bf16, ~0.5B config, tokens/s and MFU
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# The real HH-RLHF file is read where the workplace keeps it (its README: not to be committed
# into the project); ROBUSTPO_HH_DATA or --data points elsewhere, as for the tests.
HH = Path(os.environ.get("ROBUSTPO_HH_DATA", ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"))
PRESETS = {
    "cpu": dict(hidden_size=256, num_layers=4, num_heads=4, vocab=4096, dtype="float32"),
    "gpu": dict(hidden_size=1024, num_layers=24, num_heads=16, vocab=32000, dtype="bfloat16"),
}
ROWS = ["trl_default", "trl_fastest", "robustpo", "floor", "floor_padded"]


# ----------------------------------------------------------------------------- set-up


def setup(args, work: Path) -> dict:
    """Tokenizer, policy and reference checkpoints, and the filtered explicit-prompt data."""
    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.tiny import build_tiny_model, train_tokenizer

    p = PRESETS[args.preset]
    rows, _ = load_preferences(str(args.data), drop_empty=True)
    tok = train_tokenizer((r["prompt"] + r["chosen"] for r in rows), vocab_size=p["vocab"])
    items, _ = tokenize_pairs(rows, tok, max_length=10**6, max_prompt_length=10**6 - 1)
    fits = [r for r, it in zip(rows, items)
            if len(it["prompt_ids"]) + max(len(it["chosen_ids"]), len(it["rejected_ids"])) <= args.max_length]
    need = args.batch_size * (args.warmup + args.steps)
    data = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in fits[:need]]
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))

    size = dict(hidden_size=p["hidden_size"], num_layers=p["num_layers"], num_heads=p["num_heads"],
                max_positions=max(1024, args.max_length))
    reference = build_tiny_model(tok, "llama", seed=0, **size)
    reference.save_pretrained(work / "reference")
    tok.save_pretrained(work / "reference")
    # The policy starts a little away from the reference (as after SFT on other data), so that
    # the first-step DPO loss is a real check rather than log 2 for everyone.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=g))
    reference.save_pretrained(work / "policy")
    tok.save_pretrained(work / "policy")
    n_params = sum(x.numel() for x in reference.parameters())
    tokens = [len(it["prompt_ids"]) * 2 + len(it["chosen_ids"]) + len(it["rejected_ids"])
              for it, r in zip(items, rows) if r in fits][:need]
    return {"pairs": len(data), "params": n_params, "tokens_per_pair": statistics.fmean(tokens)}


# ------------------------------------------------------------------------- the rows


def _dtype(args):
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[PRESETS[args.preset]["dtype"]]


def run_trl(args, work: Path, fastest: bool) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    rows = [json.loads(x) for x in (work / "data.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(work / "policy")
    policy = AutoModelForCausalLM.from_pretrained(work / "policy", dtype=_dtype(args))
    reference = AutoModelForCausalLM.from_pretrained(work / "reference", dtype=_dtype(args))
    cfg = DPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size,
                    max_steps=args.warmup + args.steps, learning_rate=1e-5, max_length=args.max_length,
                    report_to=[], logging_steps=10**6, save_strategy="no", use_cpu=args.device == "cpu",
                    bf16=args.preset == "gpu", seed=0,
                    **({"gradient_checkpointing": False, "precompute_ref_log_probs": True} if fastest else {}))
    trainer = DPOTrainer(model=policy, ref_model=reference, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[StepTimes()])
    trainer.train()
    return [b - a for a, b in zip(ends, ends[1:])][args.warmup - 1:]


def run_robustpo(args, work: Path) -> list[float]:
    from robustpo.config import RunConfig, from_dict
    from robustpo.train.preference import train_preference

    cfg = from_dict(RunConfig, {
        "model": {"name_or_path": str(work / "policy"), "reference": str(work / "reference"),
                  "dtype": PRESETS[args.preset]["dtype"]},
        "data": {"train": str(work / "data.jsonl"), "max_length": args.max_length,
                 "max_prompt_length": args.max_length - 1},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(work / "robustpo"), "batch_size": args.batch_size, "learning_rate": 1e-5,
                  "max_steps": args.warmup + args.steps, "logging_steps": 1}})
    train_preference(cfg, overwrite=True)
    metrics = [json.loads(x) for x in (work / "robustpo" / "metrics.jsonl").read_text().splitlines()]
    return [args.batch_size / m["pairs_per_s"] for m in metrics[args.warmup:]]


def run_floor(args, work: Path, padded: bool) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(work / "policy")
    rows, _ = load_preferences(str(work / "data.jsonl"))
    items, _ = tokenize_pairs(rows, tok, max_length=args.max_length, max_prompt_length=args.max_length - 1)
    model = AutoModelForCausalLM.from_pretrained(work / "policy", dtype=_dtype(args)).to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ends = []
    for step in range(args.warmup + args.steps):
        seqs = [it["prompt_ids"] + r for it in items[step * args.batch_size:(step + 1) * args.batch_size]
                for r in (it["chosen_ids"], it["rejected_ids"])]
        if padded:
            T = max(map(len, seqs))
            ids = torch.tensor([s + [tok.pad_token_id] * (T - len(s)) for s in seqs], device=args.device)
            mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs], device=args.device)
            model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
        else:
            for s in seqs:
                ids = torch.tensor([s], device=args.device)
                model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends, ends[1:])][args.warmup - 1:]


def first_step_losses(args, work: Path) -> dict:
    """DPO loss of the first batch (first rows, no shuffle) by each trainer's own code path."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from robustpo.config import RunConfig, from_dict
    from robustpo.train.preference import train_preference

    rows = [json.loads(x) for x in (work / "data.jsonl").read_text().splitlines()][:args.batch_size]
    tok = AutoTokenizer.from_pretrained(work / "policy")
    policy = AutoModelForCausalLM.from_pretrained(work / "policy")
    # bf16=False: on CPU TRL's config defaults to bf16, which runs its (eagerly prepared) reference
    # model under bf16 autocast while the policy stays float32; we compare float32 with float32.
    cfg = DPOConfig(output_dir=str(work / "trl-loss"), per_device_train_batch_size=args.batch_size, report_to=[],
                    max_length=args.max_length, use_cpu=True, bf16=False)
    trainer = DPOTrainer(model=policy, ref_model=AutoModelForCausalLM.from_pretrained(work / "reference"), args=cfg,
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, batch).item()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    (work / "first.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ours = from_dict(RunConfig, {
        "model": {"name_or_path": str(work / "policy"), "reference": str(work / "reference")},
        "data": {"train": str(work / "first.jsonl"), "max_length": args.max_length,
                 "max_prompt_length": args.max_length - 1},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(work / "robustpo-loss"), "batch_size": args.batch_size, "max_steps": 1,
                  "shuffle": False}})
    train_preference(ours, overwrite=True)
    our_loss = json.loads((work / "robustpo-loss" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    return {"trl": trl_loss, "robustpo": our_loss}


def row_main(args) -> None:
    """Child process: run one row, print its JSON."""
    work = Path(args.work)
    torch.manual_seed(0)
    runners = {"trl_default": lambda: run_trl(args, work, False), "trl_fastest": lambda: run_trl(args, work, True),
               "robustpo": lambda: run_robustpo(args, work), "floor": lambda: run_floor(args, work, False),
               "floor_padded": lambda: run_floor(args, work, True)}
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = runners[args.row]()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("ROW " + json.dumps({"name": args.row, "sec_per_step": statistics.median(times),
                               "mean_sec_per_step": statistics.fmean(times), "peak_mem_mb": peak}))


# ------------------------------------------------------------------------- reporting


def table(rows: list[dict], info: dict, args) -> str:
    by = {r["name"]: r for r in rows}
    head = "| row | pairs/s | s/step | mean s/step | peak mem (MB) | speed × TRL fastest | time ÷ floor | time ÷ floor_padded |"
    if args.device == "cuda":
        head = head[:-1] + " tokens/s | MFU |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        speedup = r["pairs_per_s"] / by["trl_fastest"]["pairs_per_s"]
        ratios = [r["sec_per_step"] / by[f]["sec_per_step"] if f in by else float("nan")
                  for f in ("floor", "floor_padded")]
        line = (f"| {r['name']} | {r['pairs_per_s']:.2f} | {r['sec_per_step']:.3f} | {r['mean_sec_per_step']:.3f} | "
                f"{r['peak_mem_mb']:.0f} | "
                f"{speedup:.2f} | {ratios[0]:.2f} | {ratios[1]:.2f} |")
        if args.device == "cuda":
            tok_s = r["pairs_per_s"] * info["tokens_per_pair"]
            flops = 6 * info["params"] * tok_s  # forward + backward on the policy
            peak = 989e12 if "H100" in torch.cuda.get_device_name() else 990e12
            line += f" {tok_s:,.0f} | {flops / peak:.1%} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 warm-up + 3 timed steps")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--preset", default=None, choices=list(PRESETS))
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.md"))
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
    if args.quick:
        args.warmup, args.steps = 2, 3
    if not Path(args.data).exists():
        ap.error(f"--data {args.data}: no such file; this benchmark measures real HH-RLHF pairs "
                 "(hh-rlhf-harmless-base-test.jsonl.gz): pass --data PATH or set ROBUSTPO_HH_DATA")
    if args.row:
        row_main(args)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        info = setup(args, work)
        print(f"model: {info['params'] / 1e6:.1f}M params ({args.preset}); data: {info['pairs']} HH-RLHF pairs, "
              f"{info['tokens_per_pair']:.0f} tokens per pair unshared; batch {args.batch_size}, "
              f"max length {args.max_length}, {args.warmup} warm-up + {args.steps} timed steps", flush=True)
        losses = first_step_losses(args, work)
        agree = abs(losses["trl"] - losses["robustpo"]) < 1e-4
        print(f"first-step loss: TRL {losses['trl']:.6f}, robustpo {losses['robustpo']:.6f} "
              f"({'agree' if agree else 'DISAGREE'})", flush=True)
        rows = []
        for name in args.rows.split(","):
            cmd = [sys.executable, __file__, "--row", name, "--work", str(work), "--device", args.device,
                   "--preset", args.preset, "--batch-size", str(args.batch_size), "--max-length",
                   str(args.max_length), "--warmup", str(args.warmup), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            line = next((x for x in out.stdout.splitlines() if x.startswith("ROW ")), None)
            if out.returncode != 0 or line is None:
                print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"row {name} failed")
            row = json.loads(line[4:])
            row["pairs_per_s"] = args.batch_size / row["sec_per_step"]
            rows.append(row)
            print(f"  {name}: {row['sec_per_step']:.3f} s/step", flush=True)
    text = table(rows, info, args)
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "first_step_loss": losses, "info": info}, indent=2))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

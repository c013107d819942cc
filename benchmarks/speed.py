"""Training speed: robustpo `dpo` against TRL's DPOTrainer, naive floors and the machine's matmul peak.

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

Fair timing: every row trains on the same pairs, batch and number of optimizer steps, and
runs two passes over them; the first pass is the warm-up (untimed; it includes TRL's
reference precomputation), the second is timed whole: total seconds from the end of the
first pass to the end of the last step, every batch and its data loading counted. The
median step of that pass is a secondary column.

The headline is achieved FLOP/s: the useful work of the pairs (benchmarks/flops.py: unique
tokens, the prompt once, the vocabulary projection only at response positions, attention
included, × 3 for forward + backward) over the row's total seconds, and its fraction of the
machine's matmul peak, measured in the same run with the shapes of the model. The useful
work is the same for every row, so the fraction compares the rows directly.

Also checked: TRL's and robustpo's first-step DPO losses on the same first batch, with a
policy that starts away from the reference so that the loss is not trivially log 2.

    python benchmarks/speed.py                 # the table, to stdout and benchmarks/results/speed.md
    python benchmarks/speed.py --quick         # a few steps (what the test suite runs)
    python benchmarks/speed.py --sweep         # only the scaling sweep (speed_sweep.py)
    python benchmarks/speed.py --full          # table + sweep, the wall time printed at the end
    python benchmarks/speed.py --device cuda --preset gpu   # bf16, ~0.5B config, tokens/s; the peak in bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import flops

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


def long_pairs(rows: list[dict], lengths: list[int], target: int) -> list[dict]:
    """Pairs of about `target` tokens: earlier HH dialogues (prompt + chosen) joined in front of
    a pair's prompt, as a longer multi-turn conversation. `lengths[i]`: row i's prompt + chosen
    tokens; the joined text is tokenized again by the caller, which drops what does not fit."""
    out, i = [], 0
    while i < len(rows):
        context, used = "", 0
        while i < len(rows) - 1 and used + lengths[i] + lengths[i + 1] < 0.85 * target:
            context, used, i = context + rows[i]["prompt"] + rows[i]["chosen"], used + lengths[i], i + 1
        r = rows[i]
        out.append({"index": len(out), "prompt": context + r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
        i += 1
    return out


def setup(args, work: Path, tok=None) -> dict:
    """Tokenizer, policy and reference checkpoints, and the filtered explicit-prompt data
    (`batch_size × steps` pairs). `args.vocab` sizes the model's vocabulary (the embedding and
    head rows) beyond the tokenizer's; `args.long` joins dialogues into pairs of about max length."""
    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.tiny import train_tokenizer, tiny_config
    from transformers import AutoModelForCausalLM

    p = PRESETS[args.preset]
    rows, _ = load_preferences(str(args.data), drop_empty=True)
    tok = tok or train_tokenizer((r["prompt"] + r["chosen"] for r in rows), vocab_size=p["vocab"])
    if getattr(args, "long", False):
        sizes = [len(x) + len(y) for x, y in zip(tok([r["prompt"] for r in rows])["input_ids"],
                                                 tok([r["chosen"] for r in rows])["input_ids"])]
        rows = long_pairs(rows, sizes, args.max_length)
    items, _ = tokenize_pairs(rows, tok, max_length=10**6, max_prompt_length=10**6 - 1)
    fits = [(r, it) for r, it in zip(rows, items)
            if len(it["prompt_ids"]) + max(len(it["chosen_ids"]), len(it["rejected_ids"])) <= args.max_length]
    need = args.batch_size * args.steps
    if len(fits) < need:
        raise SystemExit(f"only {len(fits)} pairs fit in {args.max_length} tokens, {need} needed")
    fits = fits[:need]
    (work / "data.jsonl").write_text("".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n"
                                             for r, _ in fits))
    cfg = tiny_config("llama", max(len(tok), getattr(args, "vocab", None) or 0), hidden_size=p["hidden_size"],
                      num_layers=p["num_layers"], num_heads=p["num_heads"], max_positions=max(1024, args.max_length),
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(cfg)
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
    shape = [(len(it["prompt_ids"]), len(it["chosen_ids"]), len(it["rejected_ids"])) for _, it in fits]
    return {"pairs": need, "params": sum(x.numel() for x in reference.parameters()), "vocab": cfg.vocab_size,
            "tokens_per_pair": statistics.fmean(2 * p_ + c + r for p_, c, r in shape),
            "unique_tokens_per_pair": statistics.fmean(p_ + c + r for p_, c, r in shape),
            "response_tokens": sum(c + r for _, c, r in shape),
            "useful_flops": sum(flops.pair_flops(cfg, *x) for x in shape),
            "peak_flops": flops.matmul_peak(flops.model_shapes(
                cfg, args.batch_size * round(statistics.fmean(sum(x) for x in shape)),
                args.batch_size * round(statistics.fmean(c + r for _, c, r in shape))),
                dtype=_dtype(args), device=args.device, seconds=0.2 if args.quick else 1.0)}


# ------------------------------------------------------------------------- the rows
# Each runner trains two passes over the pairs and returns the step times of the second:
# the intervals between consecutive optimizer-step ends, from the end of the first pass.


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
                    num_train_epochs=2, learning_rate=1e-5, max_length=args.max_length,
                    report_to=[], logging_steps=10**6, save_strategy="no", use_cpu=args.device == "cpu",
                    bf16=args.preset == "gpu", seed=0,
                    **({"gradient_checkpointing": False, "precompute_ref_log_probs": True} if fastest else {}))
    trainer = DPOTrainer(model=policy, ref_model=reference, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[StepTimes()])
    trainer.train()
    assert len(ends) == 2 * args.steps, (len(ends), args.steps)
    timed = ends[args.steps - 1:]
    return [b - a for a, b in zip(timed, timed[1:])]


def run_robustpo(args, work: Path, chunked: bool = True) -> list[float]:
    """`chunked=False` turns the chunked head log-probs off (src/robustpo/head_logps.py: plain
    autograd over the response positions at any size), to measure what they save inside a whole
    training step; it is the sweep's `robustpo_unchunked` row, never the library's behaviour."""
    from robustpo.config import RunConfig, from_dict
    from robustpo.train.preference import train_preference

    if not chunked:
        import robustpo.logprobs

        robustpo.logprobs.RECOMPUTE_ABOVE = math.inf

    cfg = from_dict(RunConfig, {
        "model": {"name_or_path": str(work / "policy"), "reference": str(work / "reference"),
                  "dtype": PRESETS[args.preset]["dtype"]},
        "data": {"train": str(work / "data.jsonl"), "max_length": args.max_length,
                 "max_prompt_length": args.max_length - 1},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(work / "robustpo"), "batch_size": args.batch_size, "learning_rate": 1e-5,
                  "epochs": 2, "logging_steps": 1}})
    train_preference(cfg, overwrite=True)
    metrics = [json.loads(x) for x in (work / "robustpo" / "metrics.jsonl").read_text().splitlines()]
    # pairs_per_s of a step is its pairs over the interval since the previous step's end
    return [args.batch_size / m["pairs_per_s"] for m in metrics if m["epoch"] == 1]


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
    for step in list(range(args.steps)) * 2:
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
    timed = ends[args.steps - 1:]
    return [b - a for a, b in zip(timed, timed[1:])]


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
               "robustpo": lambda: run_robustpo(args, work),
               "robustpo_unchunked": lambda: run_robustpo(args, work, chunked=False), "floor": lambda: run_floor(args, work, False),
               "floor_padded": lambda: run_floor(args, work, True)}
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = runners[args.row]()
    assert len(times) == args.steps, (len(times), args.steps)   # every batch of the timed pass
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("ROW " + json.dumps({"name": args.row, "total_s": sum(times), "sec_per_step": statistics.median(times),
                               "peak_mem_mb": peak}))


def run_rows(args, work: Path, names: list[str], info: dict, quiet: bool = False) -> list[dict]:
    """Each row in its own process (its peak memory is its own); adds the rates of `info`."""
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--row", name, "--work", str(work), "--device", args.device,
               "--preset", args.preset, "--batch-size", str(args.batch_size), "--max-length",
               str(args.max_length), "--steps", str(args.steps), "--data", str(args.data)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        line = next((x for x in out.stdout.splitlines() if x.startswith("ROW ")), None)
        if out.returncode != 0 or line is None:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"row {name} failed")
        row = json.loads(line[4:])
        row["pairs_per_s"] = info["pairs"] / row["total_s"]
        row["flops_per_s"] = info["useful_flops"] / row["total_s"]
        row["fraction_of_peak"] = row["flops_per_s"] / info["peak_flops"]
        rows.append(row)
        if not quiet:
            print(f"  {name}: {row['total_s']:.2f} s for {info['pairs']} pairs", flush=True)
    return rows


# ------------------------------------------------------------------------- reporting


def machine(device: str) -> dict:
    """What ran it: machines of one kind can differ in processor, so a table says which."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    out = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu or platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
    for name in ("torch", "transformers", "trl"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_line(m: dict) -> str:
    where = f"{m['gpu']} (host: {m['cpu']})" if m["gpu"] else f"{m['cpu']}, {m['cores']} cores"
    return f"{m['date']}, {where}; torch {m['torch']}, transformers {m['transformers']}, TRL {m['trl']}"


def table(rows: list[dict], info: dict, args) -> str:
    by = {r["name"]: r for r in rows}
    head = ("| row | total s | pairs/s | GFLOP/s (useful) | of measured peak | × TRL fastest | median s/step "
            "| peak mem (MB) |")
    if args.device == "cuda":
        head += " tokens/s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        speedup = by["trl_fastest"]["total_s"] / r["total_s"] if "trl_fastest" in by else float("nan")
        line = (f"| {r['name']} | {r['total_s']:.2f} | {r['pairs_per_s']:.2f} | {r['flops_per_s'] / 1e9:.1f} | "
                f"{r['fraction_of_peak']:.1%} | {speedup:.2f} | {r['sec_per_step']:.3f} | {r['peak_mem_mb']:.0f} |")
        if args.device == "cuda":
            line += f" {r['pairs_per_s'] * info['unique_tokens_per_pair']:,.0f} |"
        lines.append(line)
    lines.append(f"\nmeasured matmul peak ({PRESETS[args.preset]['dtype']}, the model's shapes): "
                 f"{info['peak_flops'] / 1e9:.1f} GFLOP/s; useful work of the {info['pairs']} pairs: "
                 f"{info['useful_flops'] / 1e9:.1f} GFLOP")
    lines.append(f"\nmeasured {machine_line(info['machine'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 steps per pass (the table) or a 2-cell sweep")
    ap.add_argument("--sweep", action="store_true", help="only the scaling sweep (benchmarks/speed_sweep.py)")
    ap.add_argument("--full", action="store_true", help="the table, then the sweep")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--preset", default=None, choices=list(PRESETS))
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per pass (pairs = batch × steps)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.md"))
    ap.add_argument("--sweep-out", default=None, help="sweep files: PATH.md, .json, .png "
                    "(default benchmarks/results/speed_sweep; a --quick sweep writes none unless given)")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
    if not Path(args.data).exists():
        ap.error(f"--data {args.data}: no such file; this benchmark measures real HH-RLHF pairs "
                 "(hh-rlhf-harmless-base-test.jsonl.gz): pass --data PATH or set ROBUSTPO_HH_DATA")
    if args.row:
        row_main(args)
        return 0
    start = time.perf_counter()
    ok = True
    if not args.sweep:
        if args.quick:
            args.steps = 3
        ok = run_table(args)
    if args.sweep or args.full:
        import speed_sweep

        speed_sweep.run(args)
    print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


def run_table(args) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        info = setup(args, work)
        info["machine"] = machine(args.device)
        print(f"model: {info['params'] / 1e6:.1f}M params ({args.preset}); data: {info['pairs']} HH-RLHF pairs, "
              f"{info['unique_tokens_per_pair']:.0f} unique tokens per pair ({info['tokens_per_pair']:.0f} unshared); "
              f"batch {args.batch_size}, max length {args.max_length}, {args.steps} steps per pass, "
              "1 untimed warm-up pass + 1 timed pass", flush=True)
        losses = first_step_losses(args, work)
        agree = abs(losses["trl"] - losses["robustpo"]) < 1e-4
        print(f"first-step loss: TRL {losses['trl']:.6f}, robustpo {losses['robustpo']:.6f} "
              f"({'agree' if agree else 'DISAGREE'})", flush=True)
        rows = run_rows(args, work, args.rows.split(","), info)
    text = table(rows, info, args)
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "first_step_loss": losses, "info": info}, indent=2))
    return agree


if __name__ == "__main__":
    sys.exit(main())

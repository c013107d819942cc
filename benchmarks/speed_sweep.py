"""How the training cost grows: robustpo against TRL at its fastest, one axis at a time.

Around a base cell (max length 512, batch 4, vocabulary 32k) each axis moves alone:
max length 512 / 1024 / 2048, batch 4 / 8 / 16, vocabulary 4k / 32k / 128k. The pairs of
a cell are about its max length long (HH dialogues joined into longer multi-turn ones,
speed.long_pairs), the same 4k tokenizer serves every cell (a larger vocabulary adds
embedding and head rows, so the tokens stay the same and only the vocabulary cost moves),
and each row is timed as in the table (one untimed pass, then the whole second pass), with
one batch per pass.
Peak memory is each row's process peak RSS.

At the longest cell it also times the two parts of robustpo's step that are O(T²) per
row, separately, on the same batches: building the prefix-shared 4-D block mask
(collate_shared) and the attention itself (SDPA forward + backward with that mask, once
per layer), and reports their share of robustpo's median step.

Last, one cell where robustpo's head log-probs are computed in chunks (more than 2**26
response-token × vocabulary logits in a batch: length 512, batch 16, vocabulary 128k; no
other cell reaches it, HH responses being short) runs robustpo twice: as it is, and with
the chunking turned off (`robustpo_unchunked`), for what the chunking saves in a whole
step. TRL is not run there: its float32 logits alone would be 2 × 16 × 512 × 128k × 4 B
≈ 8.6 GB a copy.

    python benchmarks/speed.py --sweep            # 7 cells + the chunking cell, results/speed_sweep.{md,json,png}
    python benchmarks/speed.py --sweep --quick    # 2 small cells (what the test suite runs)
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

import speed

BASE = {"max_length": 512, "batch_size": 4, "vocab": 32768}
AXES = {"max_length": [512, 1024, 2048], "batch_size": [4, 8, 16], "vocab": [4096, 32768, 131072]}
QUICK = [("max_length", {"max_length": 128, "batch_size": 2, "vocab": 4096}),
         ("max_length", {"max_length": 256, "batch_size": 2, "vocab": 4096})]
ROWS = ["trl_fastest", "robustpo"]
CHUNKING = {"max_length": 512, "batch_size": 16, "vocab": 131072}
CHUNKING_ROWS = ["robustpo", "robustpo_unchunked"]


def cells(quick: bool) -> list[tuple[str, dict]]:
    """(axis, cell): the base cell once (under max_length), then each axis's other values."""
    if quick:
        return QUICK
    out = [("max_length", {**BASE, "max_length": v}) for v in AXES["max_length"]]
    out += [(axis, {**BASE, axis: v}) for axis in ("batch_size", "vocab") for v in AXES[axis] if v != BASE[axis]]
    return out


def quadratic_share(args, work: Path, step_s: float) -> dict:
    """Seconds of one step's O(T²) parts at this cell: the 4-D mask and the attention."""
    from transformers import AutoConfig, AutoTokenizer

    from robustpo.data.collate import collate_shared
    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(work / "policy")
    cfg = AutoConfig.from_pretrained(work / "policy")
    rows, _ = load_preferences(str(work / "data.jsonl"))
    items, _ = tokenize_pairs(rows, tok, max_length=args.max_length, max_prompt_length=args.max_length - 1)
    batches = [items[i:i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    mask_s, attn_s = [], []
    hd = cfg.hidden_size // cfg.num_attention_heads
    for batch in batches:
        start = time.perf_counter()
        mask = collate_shared(batch, tok.pad_token_id)["attention_mask"]            # (B, 1, T, T) bool
        mask_s.append(time.perf_counter() - start)
        B, T = mask.shape[0], mask.shape[-1]
        q, k, v = (torch.randn(B, cfg.num_attention_heads, T, hd, requires_grad=True) for _ in range(3))
        for timed in (False, True):   # the first call warms up
            start = time.perf_counter()
            for _ in range(cfg.num_hidden_layers):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
            if timed:
                attn_s.append(time.perf_counter() - start)
    mask_t, attn_t = statistics.fmean(mask_s), statistics.fmean(attn_s)
    return {"max_length": args.max_length, "mask_s": mask_t, "attention_s": attn_t, "step_s": step_s,
            "mask_share": mask_t / step_s, "attention_share": attn_t / step_s}


def run(args) -> list[dict]:
    from robustpo.data.schema import load_preferences
    from robustpo.tiny import train_tokenizer

    start = time.perf_counter()
    rows, _ = load_preferences(str(args.data), drop_empty=True)
    tok = train_tokenizer((r["prompt"] + r["chosen"] for r in rows), vocab_size=speed.PRESETS[args.preset]["vocab"])
    results, quad, chunking = [], None, None
    todo = cells(args.quick)

    def run_cell(axis, cell, rows):
        a = copy.copy(args)
        a.max_length, a.batch_size, a.vocab, a.long = cell["max_length"], cell["batch_size"], cell["vocab"], True
        a.steps = 1   # one step per pass: the sweep must fit in the full run's 15 minutes on 2 cores
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            info = speed.setup(a, work, tok)
            by = {r["name"]: r for r in speed.run_rows(a, work, rows, info, quiet=True)}
            extra = ({"quadratic": quadratic_share(a, work, by["robustpo"]["sec_per_step"])}
                     if not args.quick and axis == "max_length" and cell["max_length"] == max(AXES["max_length"]) else {})
        return {"axis": axis, **cell, "pairs": info["pairs"], "tokens_per_pair": info["unique_tokens_per_pair"],
                "response_tokens": info["response_tokens"], "peak_flops": info["peak_flops"], "rows": by, **extra}

    for n, (axis, cell) in enumerate(todo):
        results.append(run_cell(axis, cell, ROWS))
        by = results[-1]["rows"]
        quad = results[-1].pop("quadratic", quad)
        r, t = by["robustpo"], by["trl_fastest"]
        print(f"  cell {n + 1}/{len(todo)} length {cell['max_length']}, batch {cell['batch_size']}, vocab "
              f"{cell['vocab']}: robustpo {r['total_s']:.2f} s {r['peak_mem_mb']:.0f} MB, TRL fastest "
              f"{t['total_s']:.2f} s {t['peak_mem_mb']:.0f} MB", flush=True)
    if not args.quick:
        chunking = run_cell("chunking", CHUNKING, CHUNKING_ROWS)
        print(f"  chunking cell: robustpo {chunking['rows']['robustpo']['total_s']:.2f} s, unchunked "
              f"{chunking['rows']['robustpo_unchunked']['total_s']:.2f} s", flush=True)
    machine = speed.machine(args.device)
    text = report(results, quad, chunking) + f"\n\nmeasured {speed.machine_line(machine)}"
    print(text)
    print(f"sweep wall time: {time.perf_counter() - start:.0f} s")
    if args.sweep_out is None and args.quick:
        return results   # a quick sweep writes files only where it is told to
    out = Path(args.sweep_out or speed.ROOT / "benchmarks" / "results" / "speed_sweep")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"cells": results, "quadratic": quad, "chunking": chunking,
                                                   "machine": machine}, indent=2))
    figure(results, out.with_suffix(".png"))
    return results


def report(results: list[dict], quad: dict | None, chunking: dict | None = None) -> str:
    head = ("| axis | max length | batch | vocab | tokens/pair | robustpo s | TRL s | time × TRL | robustpo MB "
            "| TRL MB | memory ÷ TRL | robustpo of peak |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in results:
        r, t = c["rows"]["robustpo"], c["rows"]["trl_fastest"]
        lines.append(f"| {c['axis']} | {c['max_length']} | {c['batch_size']} | {c['vocab']} | {c['tokens_per_pair']:.0f} "
                     f"| {r['total_s']:.2f} | {t['total_s']:.2f} | {t['total_s'] / r['total_s']:.2f} "
                     f"| {r['peak_mem_mb']:.0f} | {t['peak_mem_mb']:.0f} | {r['peak_mem_mb'] / t['peak_mem_mb']:.2f} "
                     f"| {r['fraction_of_peak']:.1%} |")
    lengths = [c for c in results if c["axis"] == "max_length"]
    for a, b in zip(lengths, lengths[1:]):
        # time per pair against tokens per pair: exponent 1 is linear, 2 quadratic
        x = math.log(b["tokens_per_pair"] / a["tokens_per_pair"])
        growth = {n: math.log((b["rows"][n]["total_s"] / b["pairs"]) / (a["rows"][n]["total_s"] / a["pairs"])) / x
                  for n in ROWS}
        lines.append(f"\ntime per pair from length {a['max_length']} to {b['max_length']} grows as tokens^"
                     f"{growth['robustpo']:.2f} (robustpo), tokens^{growth['trl_fastest']:.2f} (TRL fastest)")
    if quad:
        lines.append(f"\nat max length {quad['max_length']}: the 4-D block mask takes {quad['mask_s']:.3f} s "
                     f"({quad['mask_share']:.1%}) and attention forward + backward {quad['attention_s']:.3f} s "
                     f"({quad['attention_share']:.1%}) of robustpo's {quad['step_s']:.3f} s median step")
    if chunking:
        from robustpo.logprobs import RECOMPUTE_ABOVE

        c, (r, u) = chunking, (chunking["rows"][n] for n in CHUNKING_ROWS)
        logits = c["response_tokens"] * c["vocab"]
        lines.append(f"\nchunked head log-probs in a whole step (max length {c['max_length']}, batch {c['batch_size']}, "
                     f"vocabulary {c['vocab']}: {c['response_tokens']} response tokens × vocabulary = "
                     f"{logits / RECOMPUTE_ABOVE:.1f} × 2**{RECOMPUTE_ABOVE.bit_length() - 1} logits): robustpo "
                     f"{r['total_s']:.2f} s, {r['peak_mem_mb']:.0f} MB; with the chunking off {u['total_s']:.2f} s, "
                     f"{u['peak_mem_mb']:.0f} MB (memory × {r['peak_mem_mb'] / u['peak_mem_mb']:.2f}, "
                     f"time × {r['total_s'] / u['total_s']:.2f})")
    return "\n".join(lines)


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("max_length", "total_s", "seconds per pair", "max length (tokens)"),
              ("max_length", "peak_mem_mb", "peak memory (MB)", "max length (tokens)"),
              ("vocab", "peak_mem_mb", "peak memory (MB)", "vocabulary")]
    for ax, (axis, key, ylabel, xlabel) in zip(axes, panels):
        cells_ = sorted((c for c in results if c["axis"] == axis or (axis == "vocab" and c["max_length"] == BASE["max_length"]
                         and c["batch_size"] == BASE["batch_size"])), key=lambda c: c[axis])
        cells_ = list({c[axis]: c for c in cells_}.values())
        for name in ROWS:
            ys = [c["rows"][name][key] / (c["pairs"] if key == "total_s" else 1) for c in cells_]
            ax.plot([c[axis] for c in cells_], ys, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
    base = results[0]   # the base cell, or the first quick one
    fig.suptitle("robustpo vs TRL DPOTrainer (fastest settings), one axis at a time around "
                 f"length {base['max_length']}, batch {base['batch_size']}, vocabulary {base['vocab']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

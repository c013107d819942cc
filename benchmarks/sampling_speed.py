"""Sampling speed: `robustpo generate`'s transformers and vLLM backends on the same model,
prompts and settings (samples/s, new tokens/s; the vLLM engine's start-up shown apart).

The model is a Llama-style config built locally with random weights (no download; head size
64, which vLLM's CPU attention supports), the prompts the same strings for both, the
settings the same SamplingSettings (ancestral sampling at temperature 1, top-p 1). Each
backend runs the prompts once to warm up, then `--repeats` timed passes; the table shows
the median pass. Needs the vllm extra (README, "vLLM"); under a minute on a 2-core CPU.

    python benchmarks/sampling_speed.py        # table to stdout and benchmarks/results/sampling_speed.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"Question {i}: tell me something about the number {i}.\nAnswer:" for i in range(16)]


def build_model(path: Path, hidden: int, layers: int) -> None:
    from robustpo.tiny import build_tiny_model, train_tokenizer

    tok = train_tokenizer(PROMPTS * 4, vocab_size=512)
    build_tiny_model(tok, "llama", seed=0, hidden_size=hidden, num_layers=layers,
                     num_heads=hidden // 64).save_pretrained(path)
    tok.save_pretrained(path)


def timed(sampler, settings, repeats: int) -> dict:
    from robustpo.generate.sampling import batch_seed

    def one_pass(seed_base: int) -> tuple[float, int, int]:
        started, samples, tokens = time.perf_counter(), 0, 0
        for b in range(0, len(PROMPTS), settings.batch_size):
            texts, counts = sampler.sample(PROMPTS[b:b + settings.batch_size], settings, batch_seed(seed_base, b))
            samples += sum(len(t) for t in texts)
            tokens += sum(sum(c) for c in counts)
        return time.perf_counter() - started, samples, tokens

    one_pass(99)  # warm-up
    runs = sorted((one_pass(r) for r in range(repeats)), key=lambda r: r[0])
    seconds, samples, tokens = runs[len(runs) // 2]
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
            "samples": samples, "tokens": tokens}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling_speed.md"))
    args = ap.parse_args(argv)

    import torch
    import transformers
    import vllm

    from robustpo.generate.sampling import SamplingSettings, TransformersSampler
    from robustpo.generate.vllm_backend import VLLMSampler

    settings = SamplingSettings(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp), args.hidden_size, args.layers)
        rows = {"transformers": timed(TransformersSampler(tmp), settings, args.repeats)}
        started = time.perf_counter()
        v = VLLMSampler(tmp, dtype="float32", max_model_len=256, enforce_eager=True, gpu_memory_utilization=0.05)
        start_s = time.perf_counter() - started
        rows["vllm"] = {**timed(v, settings, args.repeats), "start_s": start_s}

    lines = [f"Sampling speed, {len(PROMPTS)} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
             f"batch_size={args.batch_size} prompts, temperature 1; Llama hidden {args.hidden_size}, "
             f"{args.layers} layers, float32; median of {args.repeats} passes after a warm-up.",
             f"torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}, "
             f"{platform.machine()} CPU x{__import__('os').cpu_count()}.", "",
             "| backend | samples/s | new tokens/s | pass (s) | engine start (s) |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        start = f"{r['start_s']:.0f}" if "start_s" in r else "-"
        lines.append(f"| {name} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['seconds']:.2f} | {start} |")
    ratio = rows["vllm"]["samples_per_s"] / rows["transformers"]["samples_per_s"]
    lines += ["", f"vllm / transformers: {ratio:.2f}x samples/s. Command: `python benchmarks/sampling_speed.py`."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

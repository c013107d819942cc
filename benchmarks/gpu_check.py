"""Issue 15's GPU checks in one command, sized to finish in under 10 minutes on one GPU.

    python benchmarks/gpu_check.py --out gpu_check                    # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/g  # the same checks, small, on CPU (the suite)

1. **speed**: `benchmarks/speed.py --device cuda --preset gpu` (bf16, SDPA, the ~0.5B Llama
   config, 64 HH pairs): the table with tokens/s and each row's fraction of the bf16 matmul
   peak measured in the same run (MFU against a measured peak, not a datasheet's);
2. **prefix sharing in bf16**: log-probs of the same pairs by the prefix-shared layout (one
   row a pair, 4-D block mask) and the unshared one (one row a sequence), each in bf16 and
   in float32. Sharing changes the order of the floating-point work, not the sums, so:
   - in float32 the two layouts agree to 1e-4 nats per response token;
   - in bf16 they need not agree to that, but sharing must add no error of its own: the
     shared layout's largest error against float32 (nats per response token) is at most
     twice the unshared layout's, plus 1e-3;
3. **LoRA**: `robustpo train` with loss `dpo`, `model.lora: {r: 8}` and the preset's dtype
   for 4 steps: finite losses, `final/adapter/` written, `final/` loads with plain
   `transformers` and differs from the starting weights.

Writes OUT/report.md (and OUT/speed.{md,json,log}); exits 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import speed

FLOAT32_TOLERANCE = 1e-4      # nats per response token, the two layouts in float32
BF16_ERROR_RATIO, BF16_SLACK = 2.0, 1e-3


def run_speed(args, out: Path) -> tuple[bool, str]:
    """Check 1: speed.py as a user runs it, in its own process; its table goes in the report."""
    cmd = [sys.executable, str(Path(__file__).with_name("speed.py")), "--device", args.device, "--data", args.data,
           "--json", str(out / "speed.json"), "--out", str(out / "speed.md")]
    if args.quick:
        cmd += ["--quick", "--batch-size", "2", "--max-length", "256", "--rows", "trl_fastest,robustpo"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out / "speed.log").write_text(proc.stdout + proc.stderr)
    table = [x for x in proc.stdout.splitlines() if x.startswith(("|", "measured", "first-step loss"))]
    if proc.returncode != 0:
        return False, "\n".join(table + [f"\nspeed.py exited {proc.returncode}; see speed.log:\n", proc.stderr[-2000:]])
    return True, "\n".join(table)


def sequence_logps(model, items: list, pad_id: int, device: str, shared: bool, batch_size: int) -> torch.Tensor:
    """Summed log-probs of every pair's chosen and rejected, batch by batch in the collated order
    (a batch's chosen rows, then its rejected rows), by the training path's forward."""
    from robustpo.data.collate import collate_pairs, collate_shared
    from robustpo.train.forward import ResponseLogps, frozen_logps

    collate, f = (collate_shared if shared else collate_pairs), ResponseLogps(model)
    return torch.cat([frozen_logps(f, collate(items[i:i + batch_size], pad_id), device).float().cpu()
                      for i in range(0, len(items), batch_size)])


def response_lengths(items: list, batch_size: int) -> torch.Tensor:
    """Response tokens of each sequence, in sequence_logps's order."""
    return torch.tensor([len(it[key]) for i in range(0, len(items), batch_size)
                         for key in ("chosen_ids", "rejected_ids") for it in items[i:i + batch_size]])


def sharing_verdict(fp32_unshared, fp32_shared, bf16_unshared, bf16_shared, lengths) -> dict:
    """The two rules of check 2 on per-token differences (nats per response token)."""
    per_token = lambda a, b: ((a - b).abs() / lengths.clamp(min=1)).max().item()  # noqa: E731
    v = {"float32_shared_vs_unshared": per_token(fp32_shared, fp32_unshared),
         "bf16_unshared_error": per_token(bf16_unshared, fp32_unshared),
         "bf16_shared_error": per_token(bf16_shared, fp32_unshared),
         "bf16_shared_vs_unshared": per_token(bf16_shared, bf16_unshared)}
    v["float32_ok"] = v["float32_shared_vs_unshared"] <= FLOAT32_TOLERANCE
    v["bf16_ok"] = v["bf16_shared_error"] <= BF16_ERROR_RATIO * v["bf16_unshared_error"] + BF16_SLACK
    return v


def check_sharing(args, work: Path, out: Path) -> tuple[bool, str]:
    """Check 2, on the pairs and the policy speed.setup wrote to `work`; the figures also in OUT/sharing.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(work / "policy")
    rows, _ = load_preferences(str(work / "data.jsonl"))
    items, _ = tokenize_pairs(rows, tok, max_length=args.max_length, max_prompt_length=args.max_length - 1)
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):   # one model a dtype serves both layouts
        model = AutoModelForCausalLM.from_pretrained(work / "policy", dtype=dtype, attn_implementation="sdpa")
        model = model.to(args.device).eval()
        for shared in (False, True):
            runs[dtype, shared] = sequence_logps(model, items, tok.pad_token_id, args.device, shared, args.batch_size)
    lengths = response_lengths(items, args.batch_size)
    v = sharing_verdict(runs[torch.float32, False], runs[torch.float32, True], runs[torch.bfloat16, False],
                        runs[torch.bfloat16, True], lengths)
    text = (f"{len(items)} pairs, {int(lengths.sum())} response tokens; largest difference in nats per response "
            f"token:\n\n- float32, shared vs unshared: {v['float32_shared_vs_unshared']:.2e} "
            f"(tolerance {FLOAT32_TOLERANCE:g}): {'pass' if v['float32_ok'] else 'FAIL'}\n"
            f"- bf16 against float32: unshared {v['bf16_unshared_error']:.2e}, shared {v['bf16_shared_error']:.2e} "
            f"(tolerance {BF16_ERROR_RATIO:g} × unshared + {BF16_SLACK:g}): {'pass' if v['bf16_ok'] else 'FAIL'}\n"
            f"- bf16, shared vs unshared: {v['bf16_shared_vs_unshared']:.2e}")
    (out / "sharing.json").write_text(json.dumps(v, indent=2))
    return v["float32_ok"] and v["bf16_ok"], text


def check_lora(args, work: Path) -> tuple[bool, str]:
    """Check 3: a few LoRA steps through `robustpo train`'s own path, on the same policy and pairs."""
    from transformers import AutoModelForCausalLM

    from robustpo.config import RunConfig, from_dict
    from robustpo.train.preference import train_preference

    steps, out = 4, work / "lora"
    cfg = from_dict(RunConfig, {
        "model": {"name_or_path": str(work / "policy"), "dtype": speed.PRESETS[args.preset]["dtype"],
                  "lora": {"r": 8, "alpha": 16}},
        "data": {"train": str(work / "data.jsonl"), "max_length": args.max_length,
                 "max_prompt_length": args.max_length - 1},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(out), "batch_size": args.batch_size, "max_steps": steps, "learning_rate": 1e-3,
                  "logging_steps": 1}})
    train_preference(cfg, overwrite=True)
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    start = AutoModelForCausalLM.from_pretrained(work / "policy")
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    moved = max((a.float() - b.float()).abs().max().item()
                for a, b in zip(start.state_dict().values(), final.state_dict().values()))
    checks = {f"{steps} logged steps, every loss finite": len(losses) == steps and all(map(math.isfinite, losses)),
              "final/adapter/ written": (out / "final" / "adapter" / "adapter_config.json").exists(),
              "final/ loads with transformers and moved from the start": moved > 0}
    text = (f"losses {', '.join(f'{x:.4f}' for x in losses)}; largest weight change of the merged model {moved:.2e}"
            "\n\n" + "\n".join(f"- {k}: {'pass' if ok else 'FAIL'}" for k, ok in checks.items()))
    return all(checks.values()), text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for report.md and the speed files")
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a CPU run in the test suite")
    ap.add_argument("--data", default=str(speed.HH))
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        ap.error(f"--data {args.data}: no such file (HH-RLHF pairs; or set ROBUSTPO_HH_DATA)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.preset = "gpu" if args.device == "cuda" else "cpu"
    args.batch_size, args.max_length, args.steps = (2, 256, 2) if args.quick else (8, 512, 8)
    started = time.perf_counter()
    machine = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    sections = [("speed", *run_speed(args, out))]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        speed.setup(SimpleNamespace(**vars(args), long=False), work)
        sections.append(("prefix sharing in bf16", *check_sharing(args, work, out)))
        sections.append(("LoRA", *check_lora(args, work)))
    report = [f"# GPU checks ({machine}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s)", ""]
    for name, ok, text in sections:
        report += [f"## {name}: {'pass' if ok else 'FAIL'}", "", text, ""]
    (out / "report.md").write_text("\n".join(report))
    print("\n".join(report))
    return 0 if all(ok for _, ok, _ in sections) else 1


if __name__ == "__main__":
    sys.exit(main())

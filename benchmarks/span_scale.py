"""How a `span` family should measure the confound's effect ĉ (issue 10, item 3): chosen on validation.

    python benchmarks/span_scale.py        # ρ ∈ {0.2, 0.5} × seeds 0–4, ≈ 4 min here

Each variant builds the demo's span family (the likelihood reward model, length, weights
0 / 0.5 / 1) on the ρ-biased set of each seed's testbed and is scored on the 1,024 unbiased
validation pairs: `span_scale: fitted` (ĉ = the debiased fit's own b̂) or `slope` (ĉ = the
slope of a plain model's Δr on Δφ̃), with and without the decorrelation penalty.
Writes OUT/span_scale.md and OUT/provenance.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import provenance
from robustpo.testbed import demo

VARIANTS = {
    "fitted b̂, decorrelate 1 (the default)": demo.FAMILIES["span"],
    "slope of a plain model, decorrelate 1": demo.merged(demo.FAMILIES["span"], {"reward": {"family": {
        "span_scale": "slope"}}}),
    "fitted b̂, decorrelate 0": demo.merged(demo.FAMILIES["span"], {"reward": {"confound": {"decorrelate": 0.0}}}),
    "slope of a plain model, no b, decorrelate 1": demo.merged(demo.FAMILIES["span"], {"reward": {
        "confound": {"debias": False}, "family": {"span_scale": "slope"}}}),
}


def main(argv=None) -> int:
    from robustpo.rewards import load_family
    from robustpo.testbed.build import TestbedConfig, build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rhos", type=float, nargs="+", default=[0.2, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default="benchmarks/results/span_scale")
    ap.add_argument("--cache-dir")
    args = ap.parse_args(argv)
    snap = provenance.snapshot()
    out = Path(args.out)
    rows = []
    for rho in args.rhos:
        for seed in args.seeds:
            tb = build(TestbedConfig(seed=seed, cache_dir=args.cache_dir), log=lambda m: None)
            for i, (name, recipe) in enumerate(VARIANTS.items()):
                folder = demo.reward_family(tb.dataset(rho), tb.reference_path, out / "runs" / f"rho{rho}_s{seed}" /
                                            f"variant{i}", seed=seed, recipe=recipe)
                v = demo.family_validation(load_family(folder), folder, tb.validation_path)
                members = json.loads((folder / "family.json").read_text())["members"]
                rows.append({"rho": rho, "seed": seed, "variant": name, "mean": v["mean_of_members"]["accuracy"],
                             "members": [v["members"][m["name"]]["accuracy"] for m in members],
                             "scale": members[0]["made"]["span"]["scale"]})
                print(f"ρ={rho} seed {seed} {name}: {rows[-1]['mean']:.3f}", flush=True)
    se = lambda v: np.std(v, ddof=1) / np.sqrt(len(v))  # noqa: E731
    lines = [f"Span family on the unbiased validation pairs: mean ± s.e. over seeds {', '.join(map(str, args.seeds))}",
             "", "| ρ | ĉ from | family-mean accuracy | member w = 0 | w = 0.5 | w = 1 | ĉ |",
             "|---|---|---|---|---|---|---|"]
    for rho in args.rhos:
        for name in VARIANTS:
            r = [x for x in rows if x["rho"] == rho and x["variant"] == name]
            mean, members, scale = (np.array([x[k] for x in r]) for k in ("mean", "members", "scale"))
            lines.append(f"| {rho:g} | {name} | {mean.mean():.3f} ± {se(mean):.3f} | " +
                         " | ".join(f"{members[:, k].mean():.3f}" for k in range(members.shape[1])) +
                         f" | {scale.mean():.2f} ± {se(scale):.2f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "span_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    provenance.write(out, snap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

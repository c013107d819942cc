"""Evaluation of a family on preference pairs: per-member accuracy, margin, calibration,
disagreement, and how much of each member's margin the confound explains.

This is the precondition to check before `distill` / `e_dpo`: on unbiased pairs (a small
trusted set, or the testbed's validation pairs) a family whose members all sit near or below
0.5 accuracy, and whose margins follow Δφ closely, learned the data's bias rather than the
task, and distilling it passes the bias on (README, "Reward families and the confound").
"""

from __future__ import annotations

import torch

from robustpo.data.collate import pair_layout, split_pairs
from robustpo.rewards.objective import family_metrics


def pair_deltas(family, rows: list[dict]) -> torch.Tensor:
    """Δ_k = r_k(x, w) − r_k(x, l) for canonical rows: (N, K)."""
    prompts, responses, ids = _pair_texts(rows)
    chosen, rejected = split_pairs(family.score(prompts, responses, row_ids=ids), len(rows))   # (N, K) each
    return chosen - rejected


def confound_deltas(family, rows: list[dict], feature: str | None = None) -> torch.Tensor:
    """Δφ = φ(w) − φ(l): (N,), with the family's confound (default: length in tokens)."""
    prompts, responses, ids = _pair_texts(rows)
    chosen, rejected = split_pairs(family.confound_values(prompts, responses, feature=feature, row_ids=ids),
                                   len(rows))                                                   # (N,) each
    return chosen - rejected


def _pair_texts(rows: list[dict]):
    """(prompts, responses, file row numbers), one per response, in `pair_layout` (2N each)."""
    prompts = [r["prompt"] for r in rows]
    ids = [r.get("index", i) + 1 for i, r in enumerate(rows)]
    return (pair_layout(prompts, prompts), pair_layout([r["chosen"] for r in rows], [r["rejected"] for r in rows]),
            pair_layout(ids, ids))


def evaluate_family(family, rows: list[dict], *, batch_size: int = 32, bins: int = 10, device: str = "cpu",
                    confound: str | None = None) -> dict:
    """family: a loaded family or a folder. Returns `objective.family_metrics` (members, mean,
    disagreement), each member's `confound_corr` = corr(Δr_k, Δφ) and, where it was fitted, its
    `confound_coef_fitted` b̂. `confound`: the feature φ (default: the family's own, else length).
    A pairwise family (a folder, rewards/pairwise.py) gets the same accuracy, ECE and Brier from
    its logit(x, chosen, rejected); it has no per-response reward, so no confound correlation."""
    from robustpo.rewards.family import load_family
    from robustpo.rewards.pairwise import PairwiseFamily, is_pairwise_folder, pairwise_metrics

    if not hasattr(family, "score") and is_pairwise_folder(family):
        return pairwise_metrics(PairwiseFamily(family, batch_size=batch_size, device=device), rows, bins)
    if not hasattr(family, "score"):
        family = load_family(family, batch_size=batch_size, device=device)
    metrics = family_metrics(pair_deltas(family, rows), family.names, bins, confound_deltas(family, rows, confound))
    metrics["confound"] = confound or (family.confound or {}).get("feature", "length")
    for m in family.members:
        fitted = (m.get("made") or {}).get("confound_coef_fitted")
        if fitted is not None:
            metrics["members"][m["name"]]["confound_coef_fitted"] = fitted
    return metrics


def format_metrics(metrics: dict) -> str:
    """A plain-text table of the metrics, one line per member plus the family mean."""
    lines = [f"{'member':<18}{'pairs':>7}{'accuracy':>10}{'margin':>9}{'ECE':>8}{'Brier':>8}"
             f"{'corr(Δr,Δφ)':>13}{'b̂':>8}"]
    rows = list(metrics["members"].items()) + [("mean of members", metrics["mean_of_members"])]
    for name, m in rows:
        corr = f"{m['confound_corr']:>13.3f}" if "confound_corr" in m else f"{'':>13}"
        coef = f"{m['confound_coef_fitted']:>8.3f}" if "confound_coef_fitted" in m else f"{'':>8}"
        lines.append(f"{name:<18}{m['pairs']:>7}{m['accuracy']:>10.3f}{m['mean_margin']:>9.3f}{m['ece']:>8.3f}"
                     f"{m['brier']:>8.3f}{corr}{coef}")
    d = metrics["disagreement"]
    lines.append(f"disagreement over {d['members']} members: std of Δ {d['delta_std']:.3f}, split decisions "
                 f"{d['split_decisions']:.3f}, pairwise flip rate {d['pairwise_flip_rate']:.3f}")
    if "confound" in metrics:
        lines.append(f"φ = {metrics['confound']}; corr(Δr,Δφ): correlation of each member's margin with the "
                     "confound's difference; b̂: the confound coefficient fitted in training")
    return "\n".join(lines)

"""Held-out evaluation of a family: per-member accuracy, margin, calibration, and disagreement."""

from __future__ import annotations

import torch

from robustpo.rewards.objective import family_metrics


def pair_deltas(family, rows: list[dict]) -> torch.Tensor:
    """Δ_k = r_k(x, w) − r_k(x, l) for canonical rows: (N, K)."""
    prompts = [r["prompt"] for r in rows]
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    ids = [r.get("index", i) + 1 for i, r in enumerate(rows)]
    scores = family.score(prompts + prompts, responses, row_ids=ids + ids)    # (2N, K)
    return scores[:len(rows)] - scores[len(rows):]


def evaluate_family(family, rows: list[dict], *, batch_size: int = 32, bins: int = 10,
                    device: str = "cpu") -> dict:
    """family: a loaded family or a folder. Returns `objective.family_metrics` (members, mean, disagreement)."""
    from robustpo.rewards.family import load_family

    if not hasattr(family, "score"):
        family = load_family(family, batch_size=batch_size, device=device)
    return family_metrics(pair_deltas(family, rows), family.names, bins)


def format_metrics(metrics: dict) -> str:
    """A plain-text table of held-out metrics, one line per member plus the family mean."""
    lines = [f"{'member':<16}{'pairs':>7}{'accuracy':>10}{'margin':>9}{'ECE':>8}{'Brier':>8}"]
    rows = list(metrics["members"].items()) + [("mean of members", metrics["mean_of_members"])]
    for name, m in rows:
        lines.append(f"{name:<16}{m['pairs']:>7}{m['accuracy']:>10.3f}{m['mean_margin']:>9.3f}{m['ece']:>8.3f}"
                     f"{m['brier']:>8.3f}")
    d = metrics["disagreement"]
    lines.append(f"disagreement over {d['members']} members: std of Δ {d['delta_std']:.3f}, split decisions "
                 f"{d['split_decisions']:.3f}, pairwise flip rate {d['pairwise_flip_rate']:.3f}")
    return "\n".join(lines)

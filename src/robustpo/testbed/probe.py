"""The gold-feature probe: how much a biased training set says about the task, as a reference line.

A logistic Bradley–Terry model on the gold reward's own four features (coverage, invented
words, repeats, length: task.score_response), fitted to a set of training pairs, then scored
on other pairs. It is a *diagnostic*: it reads the gold reward's features, which no reward
model, family or policy may (issue 10's rules), and it shows what a reward model with the
right features could learn from those labels — e.g. 0.67 on the unbiased validation pairs
from the 512 pairs of the ρ = 0.2 set, 0.70 with its length term dropped.
"""

from __future__ import annotations

import torch

from robustpo.rewards.objective import fit_logistic, pairwise_accuracy
from robustpo.testbed.task import score_response

FEATURES = ("coverage", "invented", "repeats", "length")


def features(prompt: str, response: str) -> list[float]:
    s = score_response(prompt, response)
    return [s.covered / max(1, s.n_items), float(s.hallucinated), float(s.repeated), float(s.length)]


def _deltas(rows: list[dict], keep: list[int]) -> torch.Tensor:
    out = [[c - r for c, r in zip(features(row["prompt"], row["chosen"]), features(row["prompt"], row["rejected"]))]
           for row in rows]
    return torch.tensor(out, dtype=torch.float64)[:, keep]                # (N, d) chosen − rejected


def probe_accuracy(train_rows: list[dict], eval_rows: list[dict], *, drop_length: bool = False) -> dict:
    """Fit on `train_rows`, return {"accuracy" on `eval_rows`, "weights" by feature name}."""
    keep = [i for i, name in enumerate(FEATURES) if not (drop_length and name == "length")]
    theta = torch.tensor(fit_logistic(_deltas(train_rows, keep), l2=1e-3), dtype=torch.float64)
    return {"accuracy": pairwise_accuracy(_deltas(eval_rows, keep) @ theta),
            "weights": {FEATURES[i]: float(w) for i, w in zip(keep, theta)}}

"""Synthetic preference pairs whose preference is a simple, learnable function of the text.

For tests, benchmarks and demos of reward models on a CPU. Each response is a short
review; its gold reward is (# positive words) − (# negative words), and the chosen
response is the one with the higher gold reward (ties are redrawn). With `flip_rate` > 0
that share of labels is swapped, so even a perfect model tops out at 1 − flip_rate
held-out accuracy and calibration has something to measure.
"""

from __future__ import annotations

import random

POSITIVE = ("great", "lovely", "excellent", "wonderful", "superb", "delightful")
NEGATIVE = ("awful", "boring", "terrible", "dull", "broken", "poor")
NEUTRAL = ("the", "film", "book", "plot", "was", "and", "really", "quite", "story", "ending", "cast", "very")
ITEMS = ("film", "novel", "album", "game", "play", "show", "camera", "phone")


def gold_reward(text: str) -> int:
    words = text.replace(".", " ").split()
    return sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)


def _response(rng: random.Random) -> str:
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 6))]
    for _ in range(rng.randint(0, 3)):
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE + NEGATIVE))
    return " " + " ".join(words) + "."


def make_pairs(n: int, *, seed: int = 0, flip_rate: float = 0.0) -> list[dict]:
    """n canonical rows {prompt, chosen, rejected, meta: {gold_chosen, gold_rejected, flipped}}."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        a, b = _response(rng), _response(rng)
        ga, gb = gold_reward(a), gold_reward(b)
        if ga == gb:
            continue
        (w, gw), (l, gl) = ((a, ga), (b, gb)) if ga > gb else ((b, gb), (a, ga))
        flipped = rng.random() < flip_rate
        if flipped:
            (w, gw), (l, gl) = (l, gl), (w, gw)
        rows.append({"prompt": f"Review the {rng.choice(ITEMS)}:", "chosen": w, "rejected": l,
                     "meta": {"gold_chosen": gw, "gold_rejected": gl, "flipped": flipped}})
    return rows


if __name__ == "__main__":  # python -m robustpo.rewards.synthetic OUT.jsonl [N] [FLIP_RATE]
    import json
    import sys

    out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400
    flip = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in make_pairs(n, seed=0, flip_rate=flip))

"""Write the tiny recipes' synthetic preference data (committed; rerun to regenerate).

Arithmetic questions with a correct (chosen) and a wrong (rejected) answer, and three
reward-model-like scores per response: correctness plus member-specific noise, so the
distillation objectives have a family (K=3) to learn from.
"""

import json
import random
from pathlib import Path


def make_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        right, wrong = a + b, a + b + rng.choice([-3, -2, -1, 1, 2, 3])
        chosen = f" {a} plus {b} is {right}."
        rejected = f" {a} plus {b} is {wrong}."
        cr = [round(1.0 + rng.gauss(0, 0.5), 3) for _ in range(3)]
        rr = [round(-1.0 + rng.gauss(0, 0.5), 3) for _ in range(3)]
        rows.append({"prompt": f"Question: what is {a} plus {b}?\nAnswer:", "chosen": chosen, "rejected": rejected,
                     "chosen_rewards": cr, "rejected_rewards": rr})
    return rows


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / "pairs.jsonl"
    out.parent.mkdir(exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in make_rows(96, seed=0)))
    print(f"wrote {out}")

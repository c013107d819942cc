"""Synthetic pairs for the pairwise-model tests (a uniquely named helper module)."""

import numpy as np

HANDS = ("rock", "paper", "scissors")
BEATS = {"rock": "scissors", "scissors": "paper", "paper": "rock"}
NOISE = ("i", "play", "now", "then", "ok", "we", "go", "so")
GOOD, BAD = "great", "meh"


def _noisy(rng, word, k=1):
    words = [NOISE[i] for i in rng.integers(0, len(NOISE), size=k)]
    words.insert(int(rng.integers(0, k + 1)), word)
    return " ".join(words)


def rps_pairs(n: int, seed: int) -> list[dict]:
    """Rock-paper-scissors pairs: each response holds one hand among noise words; chosen = the
    hand that beats the other. The two hands always differ, every ordered hand pair equally often."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(3, size=2, replace=False)
        win, lose = (HANDS[a], HANDS[b]) if BEATS[HANDS[a]] == HANDS[b] else (HANDS[b], HANDS[a])
        rows.append({"prompt": "play a hand:", "chosen": _noisy(rng, win), "rejected": _noisy(rng, lose)})
    return rows


def count_response(rng, k: int, length: int = 5) -> str:
    """`length` words, `k` of them GOOD, the rest BAD, shuffled."""
    words = [GOOD] * k + [BAD] * (length - k)
    rng.shuffle(words)
    return " ".join(words)


def count_pairs(n: int, seed: int) -> list[dict]:
    """A transitive task with a known order: more GOOD words (0..5) is better."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(6, size=2, replace=False)
        hi, lo = max(a, b), min(a, b)
        rows.append({"prompt": "rate it:", "chosen": count_response(rng, hi), "rejected": count_response(rng, lo)})
    return rows

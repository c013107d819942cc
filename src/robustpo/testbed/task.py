"""The testbed task: "summarise" a document by listing its salient items.

A document is a short sequence of words: a few *salient items* (nouns, all distinct) mixed
with filler words. A good summary names every item of the document once, invents none
and repeats none. The gold reward `r*(x, y)` is dominated by that content quality, with a
small bonus per response token, so that - as with the TL;DR oracle used by Fisch et al.
(arXiv 2405.19316) - longer responses score slightly higher on average. That bonus is the
length confound: the bias knob (pairs.py) then builds datasets in which the *shorter*
response usually wins, which the gold reward does not endorse.

    r*(x, y) = COVERAGE_WEIGHT * |items(y) ∩ items(x)| / |items(x)|
             - HALLUCINATION_PENALTY * #(tokens of y that are neither an item of x nor a filler)
             - REPETITION_PENALTY * #(repeated mentions of an item of x)
             + LENGTH_BONUS * n(y)

Prompts and responses are plain strings of space-separated words, so the task plugs into
any text pipeline; the testbed's word-level tokenizer makes one word one token.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

ITEMS = (
    "apple", "river", "horse", "stone", "cloud", "bread", "music", "garden", "doctor",
    "engine", "forest", "letter", "market", "ocean", "pencil", "rabbit", "silver", "tiger",
    "window", "castle",
)
FILLERS = ("the", "a", "of", "and", "in", "with", "on", "to")
PROMPT_HEAD, PROMPT_TAIL = "document:", "summary:"
# Words of the prompt template; the tokenizer splits "summary:" into "summary" and ":".
TEMPLATE_WORDS = ("document", "summary", ":")

COVERAGE_WEIGHT = 4.0        # naming every item is worth 4 nats of preference
HALLUCINATION_PENALTY = 1.0  # an invented item costs about one item's coverage
REPETITION_PENALTY = 0.5
LENGTH_BONUS = 0.25          # the confound: a quarter of one item's worth (4/|items| >= 1)

DOC_LENGTHS = (7, 10)        # inclusive range of document words
ITEMS_PER_DOC = (2, 4)       # inclusive range of salient items per document
DEMO_LENGTHS = (1, 6)        # inclusive range of demonstration lengths (words)

_WORD = re.compile(r"\w+|[^\w\s]+")  # the same split as the tokenizer's pre-tokenizer


def seeded_rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, stage): stages can be rebuilt alone."""
    return np.random.default_rng([seed, *stream.encode()])


def make_prompt(words: list[str]) -> str:
    return f"{PROMPT_HEAD} {' '.join(words)} {PROMPT_TAIL}"


def document_words(prompt: str) -> list[str]:
    """The document's words back from a prompt built by `make_prompt`."""
    words = _WORD.findall(prompt)
    try:
        start, end = words.index("document") + 2, len(words) - 1 - words[::-1].index("summary")
    except ValueError:
        raise ValueError(f"not a testbed prompt: {prompt!r}") from None
    return words[start:end]


def document_items(prompt: str) -> list[str]:
    """Salient items of a prompt, in document order."""
    return [w for w in document_words(prompt) if w in _ITEM_SET]


_ITEM_SET, _FILLER_SET = frozenset(ITEMS), frozenset(FILLERS)


def generate_prompts(n: int, rng: np.random.Generator, *, lengths=None, items_per_doc=None,
                     fillers=None) -> list[str]:
    """`n` documents: distinct items at random positions among filler words (by default the
    in-distribution DOC_LENGTHS, ITEMS_PER_DOC and FILLERS; `generate_shifted_prompts` passes
    the shift's)."""
    lengths, items_per_doc = lengths or DOC_LENGTHS, items_per_doc or ITEMS_PER_DOC
    fillers = fillers or FILLERS
    prompts = []
    for _ in range(n):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        k = int(rng.integers(items_per_doc[0], items_per_doc[1] + 1))
        items = rng.choice(len(ITEMS), size=k, replace=False)
        words = [fillers[i] for i in rng.integers(0, len(fillers), size=length)]
        for pos, item in zip(sorted(rng.choice(length, size=k, replace=False)), items):
            words[pos] = ITEMS[item]
        prompts.append(make_prompt(words))
    return prompts


# Out-of-distribution prompts (a documented shift, used by benchmarks/ipr_vs_pointwise.py):
# longer documents, more salient items, and filler words that training prompts never use.
# Items and the gold reward are unchanged, so a shifted prompt's ideal summary is still its
# items once each in document order; only what surrounds them moves out of distribution.
# The testbed's word-level tokenizer (reference.py) has no ids for SHIFT_FILLERS and reads
# them as <unk>: the reference policy, which is not retrained, has never seen them. A response
# that copies one is scored as junk (a hallucination), like any word outside the task's words.
SHIFT_DOC_LENGTHS = (14, 20)     # inclusive range of document words (in distribution: DOC_LENGTHS)
SHIFT_ITEMS_PER_DOC = (5, 7)     # inclusive range of items per document (in distribution: ITEMS_PER_DOC)
SHIFT_FILLERS = ("but", "or", "so", "at", "by", "for")


def generate_shifted_prompts(n: int, rng: np.random.Generator) -> list[str]:
    """`n` shifted documents (see SHIFT_*): as `generate_prompts`, from the shifted ranges and fillers."""
    return generate_prompts(n, rng, lengths=SHIFT_DOC_LENGTHS, items_per_doc=SHIFT_ITEMS_PER_DOC,
                            fillers=SHIFT_FILLERS)


def shifted_test_prompts(seed: int, n: int) -> list[str]:
    """The shift's own held-out test prompts (a stream no other stage of the testbed draws from)."""
    return generate_shifted_prompts(n, seeded_rng(seed, "shifted-test"))


@dataclass(frozen=True)
class ResponseScore:
    """The parts of the gold reward, for diagnostics and tests."""

    covered: int
    n_items: int
    hallucinated: int
    repeated: int
    length: int

    @property
    def reward(self) -> float:
        return (COVERAGE_WEIGHT * self.covered / max(1, self.n_items)
                - HALLUCINATION_PENALTY * self.hallucinated
                - REPETITION_PENALTY * self.repeated
                + LENGTH_BONUS * self.length)


def score_response(prompt: str, response: str) -> ResponseScore:
    items = set(document_items(prompt))
    seen: set[str] = set()
    hallucinated = repeated = 0
    words = _WORD.findall(response)
    for w in words:
        if w in items:
            repeated += w in seen
            seen.add(w)
        elif w not in _FILLER_SET:
            hallucinated += 1  # an item not in the document, or any other junk token
    return ResponseScore(len(seen), len(items), hallucinated, repeated, len(words))


def gold_reward(prompt: str, response: str) -> float:
    """r*(x, y) for one prompt and response (see the module docstring)."""
    return score_response(prompt, response).reward


def gold_rewards(prompts: list[str], responses: list[str]) -> list[float]:
    """Batched r*; the signature `robustpo eval --gold module:function` expects."""
    return [gold_reward(p, r) for p, r in zip(prompts, responses, strict=True)]


def gold_judge(prompts: list[str], first: list[str], second: list[str]) -> list[float]:
    """P(first better) under the gold Bradley-Terry model, σ(r*(first) − r*(second)).

    The batched `compare` signature of the judges' Python-function backend:
    `robustpo.testbed.task:gold_judge`. Symmetric by construction, so both-order judging
    gives the same answer and a disagreement rate of zero.
    """
    return [sigmoid(gold_reward(p, a) - gold_reward(p, b)) for p, a, b in zip(prompts, first, second, strict=True)]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def demonstration(prompt: str, rng: np.random.Generator) -> str:
    """One demonstration of random length and random quality.

    Length L is uniform over DEMO_LENGTHS and quality q uniform on [0, 1], independently:
    each of the L slots names the next not-yet-named item (document order) with
    probability q, and otherwise is noise - an invented item, a repeat, or a filler, one
    third each. A demonstrator whose length and quality vary independently is what lets the
    reference policy's samples differ in both.
    """
    items = document_items(prompt)
    absent = [w for w in ITEMS if w not in items]
    length = int(rng.integers(DEMO_LENGTHS[0], DEMO_LENGTHS[1] + 1))
    quality = float(rng.random())
    out: list[str] = []
    remaining = list(items)  # not yet named
    for _ in range(length):
        if rng.random() < quality and remaining:
            out.append(remaining.pop(0))
            continue
        kind = int(rng.integers(0, 3))
        if kind == 0:
            out.append(absent[int(rng.integers(0, len(absent)))])
        elif kind == 1 and len(remaining) < len(items):
            named = [w for w in items if w not in remaining]
            out.append(named[int(rng.integers(0, len(named)))])
        else:
            out.append(FILLERS[int(rng.integers(0, len(FILLERS)))])
    return " ".join(out)


def random_response(rng: np.random.Generator) -> str:
    """The "random responses" baseline: uniform length in DEMO_LENGTHS, uniform words."""
    vocab = ITEMS + FILLERS
    length = int(rng.integers(DEMO_LENGTHS[0], DEMO_LENGTHS[1] + 1))
    return " ".join(vocab[i] for i in rng.integers(0, len(vocab), size=length))


def ideal_response(prompt: str) -> str:
    """Every item once, in document order: the best response of its length class."""
    return " ".join(document_items(prompt))

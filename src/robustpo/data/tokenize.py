"""Canonical rows -> token ids, with one documented truncation rule.

Rendering: string prompts are tokenized with the tokenizer's special tokens (a BOS where
the tokenizer adds one) and string responses without, followed by EOS, so the policy
learns to stop. Message lists are rendered with the tokenizer's chat template: the prompt
with `add_generation_prompt=True`, each response as the rest of the full conversation's
rendering (the template's own end-of-turn token ends it).

Truncation rule (`max_length` for prompt + longer response, `max_prompt_length`):
  1. if the pair does not fit and the prompt is longer than `max_prompt_length`, the prompt
     keeps its last `max_prompt_length` tokens (a leading BOS is kept): the end of a
     conversation matters most for the reply;
  2. if it still does not fit, each response keeps its first `max_length − len(prompt)` tokens;
  3. a pair whose responses become identical after truncation is dropped.
Counts of each are reported in `TruncationStats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TypedDict

from robustpo.errors import ConfigError, DataError


class _TokenizedPairKeys(TypedDict):
    index: int                    # the row of the input data (0-based)
    prompt_ids: list[int]
    chosen_ids: list[int]         # EOS-terminated for plain-text responses
    rejected_ids: list[int]


class TokenizedPair(_TokenizedPairKeys, total=False):
    """One tokenized preference pair, as `tokenize_pairs` makes it and the collators
    (data/collate.py) read it. The optional keys ride along when present."""

    chosen_rewards: list[float]           # (K,) from a reward family (robustpo reward score)
    rejected_rewards: list[float]         # (K,)
    margin: float
    reference_sample_ids: list[list[int]]  # M reference samples, truncated like the responses
    # added after tokenizing: cached reference log-probs (train/refcache.attach) ...
    reference_chosen_logps: float
    reference_rejected_logps: float
    reference_sample_logps: list[float]   # (M,)
    # ... and the reward trainer's per-pair fields (train/reward.py, rewards/plan.py)
    chosen_confound: float
    rejected_confound: float
    pair_weight: float
    head_weights: list[float]


@dataclass
class TruncationStats:
    rows: int = 0
    prompt_truncated: int = 0
    response_truncated: int = 0
    dropped_identical_after_truncation: int = 0

    def summary(self) -> str:
        return (f"{self.rows} pairs tokenized: {self.prompt_truncated} prompts and {self.response_truncated} "
                f"responses truncated, {self.dropped_identical_after_truncation} dropped (identical after "
                f"truncation)")

    def as_dict(self) -> dict:
        return asdict(self)


def render_texts(row: dict, tokenizer, *, source: str | None = None) -> tuple[str, str, str, bool]:
    """(prompt, chosen, rejected, templated) as text. Message lists go through the chat template."""
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        return prompt, chosen, rejected, False
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("row is conversational but the tokenizer has no chat template", file=source,
                        row=row.get("index"), field="prompt")
    as_msgs = (lambda v, role: v if isinstance(v, list) else [{"role": role, "content": v}])
    prompt_msgs = as_msgs(prompt, "user")
    prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=bool(prompt_msgs))
    responses = []
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        full = tokenizer.apply_chat_template(prompt_msgs + as_msgs(value, "assistant"), tokenize=False)
        if not full.startswith(prompt_text):
            raise DataError("the chat template does not render the prompt as a prefix of the full conversation",
                            file=source, row=row.get("index"), field=name)
        responses.append(full[len(prompt_text):])
    return prompt_text, responses[0], responses[1], True


def _truncate_prompt(ids: list[int], keep: int, bos_id) -> list[int]:
    if bos_id is not None and ids and ids[0] == bos_id and keep > 1:
        return ids[:1] + ids[len(ids) - keep + 1:]
    return ids[len(ids) - keep:]


@dataclass(frozen=True)
class SpecialTokens:
    """The tokenizer's BOS/EOS ids, and whether string prompts get a BOS (`add_bos_token`)."""
    bos: int | None
    eos: int | None
    add_bos: bool

    @classmethod
    def of(cls, tokenizer) -> "SpecialTokens":
        bos = tokenizer.bos_token_id
        return cls(bos, tokenizer.eos_token_id, bool(getattr(tokenizer, "add_bos_token", False)) and bos is not None)


def encode_ids(prompt: list[int], responses: list[list[int]], specials: SpecialTokens, *, templated: bool,
               max_length: int, max_prompt_length: int) -> tuple[list[int], list[list[int]], bool, bool]:
    """The rendering and truncation rule (module docstring) on one prompt's token ids and its
    responses' (a pair's two, or one text's one), as the tokenizer gave them without special
    tokens. Returns (prompt ids, response ids, prompt truncated?, responses truncated?).

    Plain (not chat-templated) text: the prompt gets a BOS where the tokenizer adds one, each
    response an EOS. Then the rule runs on the longest response: the prompt keeps its last
    `max_prompt_length` tokens if the whole does not fit, and every response its first
    `max_length − len(prompt)`."""
    if not templated:
        if specials.add_bos and (not prompt or prompt[0] != specials.bos):
            prompt = [specials.bos] + prompt
        if specials.eos is not None:
            responses = [r + [specials.eos] for r in responses]
    longest = max((len(r) for r in responses), default=0)
    prompt_truncated = len(prompt) + longest > max_length and len(prompt) > max_prompt_length
    if prompt_truncated:
        prompt = _truncate_prompt(prompt, max_prompt_length, specials.bos if specials.add_bos else None)
    room = max_length - len(prompt)
    responses_truncated = longest > room
    if responses_truncated:
        responses = [r[:room] for r in responses]
    return prompt, responses, prompt_truncated, responses_truncated


def tokenize_pairs(rows: list[dict], tokenizer, *, max_length: int, max_prompt_length: int,
                   source: str | None = None) -> tuple[list[TokenizedPair], TruncationStats]:
    """Tokenize canonical rows. Each output keeps `index` (the input row) and any rewards."""
    if max_prompt_length >= max_length:
        raise ConfigError(f"data.max_prompt_length ({max_prompt_length}) must be below data.max_length "
                          f"({max_length}) to leave room for responses")
    rendered = [render_texts(r, tokenizer, source=source) for r in rows]
    plain = [not t for *_, t in rendered]
    prompts = tokenizer([p for p, *_ in rendered], add_special_tokens=False)["input_ids"]
    chosen = tokenizer([c for _, c, _, _ in rendered], add_special_tokens=False)["input_ids"]
    rejected = tokenizer([r for _, _, r, _ in rendered], add_special_tokens=False)["input_ids"]
    specials = SpecialTokens.of(tokenizer)
    eos = specials.eos

    stats = TruncationStats()
    out: list[TokenizedPair] = []
    for row, p, c, r, is_plain in zip(rows, prompts, chosen, rejected, plain):
        p, (c, r), prompt_cut, responses_cut = encode_ids(p, [c, r], specials, templated=not is_plain,
                                                          max_length=max_length, max_prompt_length=max_prompt_length)
        stats.prompt_truncated += prompt_cut
        room = max_length - len(p)
        if responses_cut:
            stats.response_truncated += 1
            if c == r:
                stats.dropped_identical_after_truncation += 1
                continue
        item: TokenizedPair = {"index": row["index"], "prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
        for key in ("chosen_rewards", "rejected_rewards", "margin"):
            if key in row:
                item[key] = row[key]
        if "reference_samples" in row:
            samples = tokenizer(row["reference_samples"], add_special_tokens=False)["input_ids"]
            item["reference_sample_ids"] = [(s + ([eos] if is_plain and eos is not None else []))[:room]
                                            for s in samples]
        out.append(item)
    stats.rows = len(out)
    if not out:
        raise DataError("every row was dropped by truncation; raise data.max_length", file=source)
    return out, stats

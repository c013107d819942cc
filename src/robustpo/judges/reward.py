"""Reward models as pairwise judges: P(a > b) = σ(r(x, a) − r(x, b)) (Bradley–Terry).

Two sources of r:
- `RewardModelJudge`: one `AutoModelForSequenceClassification` folder with num_labels=1;
- `FamilyJudge`: any object with `.score(prompts, responses) -> Tensor (N, K)` (a family
  of K reward models, issue 3); r is the family mean, or one chosen member.

Both also expose `score(prompts, responses) -> list[float]`, which the pointwise ranking
baseline uses, and memoise scores by (prompt, response) so that ranking N completions
scores each one once however many comparisons it enters.
"""

from __future__ import annotations

import math

import torch

from robustpo.judges.base import Verdict, as_text, text_hash


def _sigmoid(x: float) -> float:
    # Numerically safe for large |x|.
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class _ScoringJudge:
    """Shared compare/score logic over a `_score_uncached(prompts, responses)` backend."""

    name: str

    def __init__(self):
        self._memo: dict[tuple[str, str], float] = {}

    def score(self, prompts: list, responses: list) -> list[float]:
        keys = [(text_hash(p), text_hash(r)) for p, r in zip(prompts, responses)]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        # Deduplicate inside the batch too: the both-order judging sends every text twice.
        uniq = list(dict.fromkeys(keys[i] for i in todo))
        if uniq:
            first_index = {}
            for i in todo:
                first_index.setdefault(keys[i], i)
            idx = [first_index[k] for k in uniq]
            values = self._score_uncached([prompts[i] for i in idx], [responses[i] for i in idx])
            for k, v in zip(uniq, values):
                self._memo[k] = float(v)
        return [self._memo[k] for k in keys]

    def compare_detailed(self, prompts: list, first: list, second: list) -> list[Verdict]:
        r = self.score(list(prompts) * 2, list(first) + list(second))
        n = len(prompts)
        return [Verdict(_sigmoid(r[i] - r[n + i]), raw={"reward_first": r[i], "reward_second": r[n + i]})
                for i in range(n)]

    def compare(self, prompts: list, first: list, second: list) -> list[float]:
        return [v.prob for v in self.compare_detailed(prompts, first, second)]


class RewardModelJudge(_ScoringJudge):
    """A single sequence-classification reward model (num_labels=1) loaded from a folder.

    Text scored: a string prompt followed directly by the response; a chat prompt (list of
    messages) rendered with the tokenizer's chat template with the response as the final
    assistant turn.
    """

    def __init__(self, path: str, *, batch_size: int = 16, device: str = "cpu", max_length: int | None = None,
                 dtype: str = "float32"):
        super().__init__()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from robustpo.errors import ConfigError

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load reward model from '{path}': {e}") from e
        if self.model.config.num_labels != 1:
            raise ConfigError(f"reward model '{path}' has num_labels={self.model.config.num_labels}; expected 1")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.device, self.batch_size, self.max_length = device, int(batch_size), max_length
        self.name = f"reward:{path}"

    def render(self, prompt, response: str) -> str:
        if isinstance(prompt, list) and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                prompt + [{"role": "assistant", "content": as_text(response)}], tokenize=False)
        return as_text(prompt) + as_text(response)

    @torch.no_grad()
    def _score_uncached(self, prompts: list, responses: list) -> list[float]:
        texts = [self.render(p, r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=self.max_length is not None, max_length=self.max_length)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(**enc).logits.float()  # (B, 1)
            out.extend(logits[:, 0].tolist())
        return out


class FamilyJudge(_ScoringJudge):
    """A family of K reward models: `family.score(prompts, responses) -> (N, K)`.

    member=None uses the family mean r̄ = mean_k r_k; member=k uses r_k alone.
    """

    def __init__(self, family, *, member: int | None = None, name: str | None = None):
        super().__init__()
        self.family, self.member = family, member
        base = name or getattr(family, "name", type(family).__name__)
        self.name = f"family:{base}" + ("" if member is None else f"[{member}]")

    def _score_uncached(self, prompts: list, responses: list) -> list[float]:
        from robustpo.judges.base import JudgeError

        scores = torch.as_tensor(self.family.score(prompts, responses), dtype=torch.float32)
        if scores.dim() != 2 or scores.shape[0] != len(prompts):
            raise JudgeError(f"{self.name}: score() must return shape (N, K) with N={len(prompts)}, "
                             f"got {tuple(scores.shape)}")
        if self.member is not None:
            if not 0 <= self.member < scores.shape[1]:
                raise JudgeError(f"{self.name}: member {self.member} out of range for K={scores.shape[1]}")
            return scores[:, self.member].tolist()
        return scores.mean(dim=1).tolist()

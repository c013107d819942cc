"""A local causal language model as a pairwise judge.

The judge prompt (a template with `{prompt}`, `{first}`, `{second}`) shows the two
responses labelled A and B and asks which is better; the verdict is read from the
model's next-token distribution instead of sampled text:

    P(first better) = p(A) / (p(A) + p(B))

where p(label) sums the probabilities of "A" and " A" where each is a single token
(tokenizers split " A" and "A" differently). Reading probabilities gives a
graded verdict, never an unparseable one. This is the local counterpart of the
logprobs path of the HTTP judge.
"""

from __future__ import annotations

import torch

from robustpo.judges.base import Verdict, as_text

DEFAULT_TEMPLATE = (
    "Which response answers the prompt better?\n\n"
    "Prompt:\n{prompt}\n\n"
    "Response A:\n{first}\n\n"
    "Response B:\n{second}\n\n"
    "Answer with a single letter, A or B.\nAnswer:"
)


def render_judge_prompt(template: str, prompt, first, second) -> str:
    # str.replace instead of str.format: responses may contain braces.
    return (template.replace("{prompt}", as_text(prompt))
            .replace("{first}", as_text(first)).replace("{second}", as_text(second)))


class LMJudge:
    def __init__(self, path: str, *, template: str = DEFAULT_TEMPLATE, labels: tuple[str, str] = ("A", "B"),
                 chat: str | bool = "auto", batch_size: int = 8, device: str = "cpu",
                 max_length: int | None = None, dtype: str = "float32"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from robustpo.errors import ConfigError

        for key in ("{prompt}", "{first}", "{second}"):
            if key not in template:
                raise ConfigError(f"LM judge template must contain {key}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load judge model from '{path}': {e}") from e
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval()
        self.template, self.device, self.batch_size, self.max_length = template, device, int(batch_size), max_length
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.use_chat = has_template if chat == "auto" else str(chat).lower() in ("1", "true", "yes")
        self.label_ids = [self._label_token_ids(lbl) for lbl in labels]
        if set(self.label_ids[0]) & set(self.label_ids[1]):
            raise ConfigError(f"judge labels {labels} share a first token; choose distinct labels")
        self.labels = tuple(labels)
        from robustpo.data.io import fingerprint

        self.name = f"lm:{path}#{fingerprint(template, labels, self.use_chat)[:8]}"

    def _label_token_ids(self, label: str) -> list[int]:
        """Token ids that spell the label as the next token: "A" and " A" where each is a
        single token (a split " A" starts with a bare space, shared by every label)."""
        ids = set()
        for variant in (label, " " + label):
            toks = self.tokenizer(variant, add_special_tokens=False).input_ids
            if len(toks) == 1:
                ids.add(toks[0])
        if not ids:  # a multi-token label: its first token stands for it
            ids.add(self.tokenizer(label, add_special_tokens=False).input_ids[0])
        return sorted(ids)

    def render(self, prompt, first, second) -> str:
        text = render_judge_prompt(self.template, prompt, first, second)
        if self.use_chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text

    @torch.no_grad()
    def compare_detailed(self, prompts: list, first: list, second: list) -> list[Verdict]:
        texts = [self.render(p, a, b) for p, a, b in zip(prompts, first, second)]
        out: list[Verdict] = []
        tok = self.tokenizer
        old_side, tok.padding_side = tok.padding_side, "left"  # last position = next token for every row
        # Over-long inputs lose their beginning, never the question and "Answer:" at the end.
        old_trunc, tok.truncation_side = tok.truncation_side, "left"
        try:
            for start in range(0, len(texts), self.batch_size):
                enc = tok(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=not self.use_chat,
                          truncation=self.max_length is not None, max_length=self.max_length)
                mask = enc["attention_mask"].to(self.device)                       # (B, T)
                # Explicit positions so that left padding does not shift them (batch invariance).
                positions = (mask.cumsum(-1) - 1).clamp(min=0)                       # (B, T)
                logits = self.model(input_ids=enc["input_ids"].to(self.device), attention_mask=mask,
                                    position_ids=positions).logits[:, -1, :].float()  # (B, V)
                logp = torch.log_softmax(logits, dim=-1)                             # (B, V)
                lp_a = torch.logsumexp(logp[:, self.label_ids[0]], dim=-1)           # (B,)
                lp_b = torch.logsumexp(logp[:, self.label_ids[1]], dim=-1)           # (B,)
                probs = torch.sigmoid(lp_a - lp_b)                                   # (B,) = pA/(pA+pB)
                for pa, pb, p in zip(lp_a.tolist(), lp_b.tolist(), probs.tolist()):
                    out.append(Verdict(p, raw={"logp_" + self.labels[0]: pa, "logp_" + self.labels[1]: pb}))
        finally:
            tok.padding_side, tok.truncation_side = old_side, old_trunc
        return out

    def compare(self, prompts: list, first: list, second: list) -> list[float]:
        return [v.prob for v in self.compare_detailed(prompts, first, second)]

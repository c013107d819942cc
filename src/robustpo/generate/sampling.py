"""`robustpo generate`: sample N completions per prompt from a policy.

Output (JSONL, one flushed line per prompt, in prompt order):

    {"prompt": <as in the prompts file>, "completions": [str, ... N],
     "meta": {"index": i, "prompt_hash": ..., "model": ..., "backend": ...,
              "settings": {n, temperature, top_p, max_new_tokens, seed, batch_size},
              "new_tokens": [tokens generated per completion]}}

`robustpo rank` reads exactly this. A prompt is a string (tokenised as is) or a list of
`{role, content}` messages rendered with the tokenizer's chat template and the assistant
generation prompt.

Reproducible resume. Batched sampling draws one random stream for the whole batch, so a
prompt's samples depend on which prompts share its batch. Batches are therefore cut on a
fixed grid of prompt indices ([0, B), [B, 2B), ...) and each is seeded from (seed, its
first index). A killed run leaves whole batches behind (rows are written right after a
batch finishes); a rerun skips every finished prompt and regenerates only unfinished
batches, with the same seeds, so the final file equals an uninterrupted run's. The one
exception: a kill in the instant between two rows of the same batch makes the rerun
sample that batch again to write its missing rows (finished rows are not rewritten).

Until every prompt has its row, the rows are in `OUT.partial`, and `OUT` does not exist: a
stopped or killed run never leaves a samples file that `robustpo rank` would take for a
whole one. The last row written, `OUT.partial` is renamed to `OUT`.

This module is also robustpo's one Hugging Face sampling path: `left_padded_generate` (used by
`robustpo generate`, `robustpo eval` and the testbed) and the prompt encoding every caller
shares. `sample_responses` is evaluation's form: plain ancestral sampling (top_k=0, top_p=1
by default, the model's own generation config ignored) so that samples come from π itself
and the Monte-Carlo KL estimate E_π[log π − log π_ref] is unbiased.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from robustpo.data.io import AppendOnlyJsonl, PartialOutput
from robustpo.data.schema import read_prompts
from robustpo.errors import ConfigError
from robustpo.judges.base import text_hash

BACKENDS = ("transformers", "vllm")


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Prompt ids as the training data path makes them (robustpo.data.tokenize)."""
    if isinstance(prompt, list):  # chat messages: the template brings its own special tokens
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def encode_prompts(tokenizer, prompts: list) -> list[list[int]]:
    """`encode_prompt` for many prompts; plain strings go through the tokenizer in one batch."""
    if all(isinstance(p, str) for p in prompts):
        return tokenizer(list(prompts))["input_ids"] if prompts else []
    return [encode_prompt(tokenizer, p) for p in prompts]


def encode_response(tokenizer, response: str, *, add_eos: bool = True) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if add_eos else ids


def left_padded_generate(model, prompt_ids: list[list[int]], pad_id: int, **generate_kwargs) -> list[list[int]]:
    """The new-token rows of one `model.generate` call (the caller seeds the random stream).
    Left padding: every prompt ends at the same column, where generation starts."""
    import torch

    width = max(len(ids) for ids in prompt_ids)
    device = next(model.parameters()).device
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompt_ids], device=device)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=device)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention, **generate_kwargs)
    return out[:, width:].tolist()


@dataclass
class Sample:
    prompt_index: int
    text: str
    token_ids: list[int]   # response ids, EOS included when `ended`
    ended: bool            # False: cut at max_new_tokens


def sample_responses(model, tokenizer, prompts: list, *, n: int = 1, max_new_tokens: int = 64,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                     batch_size: int = 64) -> list[Sample]:
    """`n` samples per prompt (prompt-major order), one random stream seeded once; temperature 0
    means greedy. The global torch random state is left as it was."""
    import torch
    from transformers import GenerationConfig

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen = GenerationConfig(
        do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        top_k=0 if temperature > 0 else None, top_p=top_p if temperature > 0 else None,
        max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
    encoded = encode_prompts(tokenizer, prompts)
    jobs = [(i, ids) for i, ids in enumerate(encoded) for _ in range(n)]
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            rows = left_padded_generate(model, [ids for _, ids in batch], pad, generation_config=gen)
            for (index, _), row in zip(batch, rows):
                ended = eos in row
                ids = row[:row.index(eos) + 1] if ended else row
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                samples.append(Sample(index, text, ids, ended))
    return samples


@dataclass
class SamplingSettings:
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 8

    def check(self) -> None:
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("--max-new-tokens and --batch-size must be at least 1")


class TransformersSampler:
    """Batched `model.generate` with left padding (so every row's new tokens start together)."""

    name = "transformers"

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "float32"):
        from robustpo.models import load_for_inference

        self.model, self.tokenizer = load_for_inference(model, device=device, dtype=dtype)
        self.device = device

    def render(self, prompt) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            return encode_prompt(self.tokenizer, prompt), prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("chat-message prompts need a tokenizer with a chat template; this model has none")
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return encode_prompt(self.tokenizer, prompt), text

    def sample(self, prompts: list, s: SamplingSettings, seed: int) -> tuple[list[list[str]], list[list[int]]]:
        import torch

        ids = [self.render(p)[0] for p in prompts]
        sampling = s.temperature > 0
        # Greedy decoding gives one answer per prompt: decode it once and copy it n times.
        per_prompt = s.n if sampling else 1
        kwargs = dict(do_sample=sampling, num_return_sequences=per_prompt, max_new_tokens=s.max_new_tokens,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if sampling:
            # top_k=0: a model's generation_config often carries top_k=50; only top-p truncates here.
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        torch.manual_seed(seed)
        new = left_padded_generate(self.model, ids, self.tokenizer.pad_token_id, **kwargs)  # B*n rows
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        texts, counts = [], []
        for row in new:
            n_tok = len(row)
            for t, tok in enumerate(row):
                if tok == eos or (tok == pad and pad != eos):
                    n_tok = t + (tok == eos)  # count the eos: it was generated
                    break
            counts.append(n_tok)
            texts.append(self.tokenizer.decode(row[:n_tok], skip_special_tokens=True))
        k = per_prompt
        grouped = [texts[i * k:(i + 1) * k] * (s.n // k) for i in range(len(prompts))]
        grouped_counts = [counts[i * k:(i + 1) * k] * (s.n // k) for i in range(len(prompts))]
        return grouped, grouped_counts


def load_sampler(model: str, backend: str = "transformers", **options):
    if backend == "transformers":
        return TransformersSampler(model, **options)
    if backend == "vllm":  # imported here: vLLM is an optional extra
        from robustpo.generate.vllm_backend import VLLMSampler

        return VLLMSampler(model, **options)
    raise ConfigError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")


def _differences(old: dict, new: dict) -> str:
    flat = lambda d: {**{k: v for k, v in d.items() if k != "settings"}, **(d.get("settings") or {})}  # noqa: E731
    a, b = flat(old), flat(new)
    return ", ".join(f"{k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def batch_seed(seed: int, first_index: int) -> int:
    return (seed * 1_000_003 + first_index) % (2**63)


def generate_file(prompts_path: str, out_path: str, sampler, settings: SamplingSettings, *, model_name: str,
                  overwrite: bool = False, progress: bool = True) -> dict:
    """Sample settings.n completions for every prompt not yet in `out_path`; returns counts."""
    from tqdm import tqdm

    settings.check()
    prompts = read_prompts(prompts_path)
    output = PartialOutput(out_path, overwrite=overwrite)
    key = {"model": model_name, "backend": sampler.name, "settings": {k: v for k, v in vars(settings).items()}}
    done: set[int] = set()
    # Rows go to OUT.partial until every prompt has its row; then it becomes OUT. A finished
    # OUT (or one an older robustpo left unfinished) is read where it is.
    source = output.source
    out = AppendOnlyJsonl(source)
    try:
        for j, row in enumerate(out.rows):
            meta = row.get("meta") or {}
            got = {"model": meta.get("model"), "backend": meta.get("backend"), "settings": meta.get("settings")}
            if got != key:
                raise ConfigError(f"{source} row {j + 1} was generated with other settings "
                                  f"({_differences(got, key)}); use another --out, or --overwrite to start again")
            i = meta.get("index")
            if not isinstance(i, int) or i >= len(prompts) or meta.get("prompt_hash") != text_hash(prompts[i]):
                raise ConfigError(f"{source} row {j + 1} does not match prompt {i} of {prompts_path}: "
                                  "the prompts file changed; use --overwrite to start again")
            done.add(i)
        bs = settings.batch_size
        grid = [list(range(b, min(b + bs, len(prompts)))) for b in range(0, len(prompts), bs)]
        todo_batches = [b for b in grid if any(i not in done for i in b)]
        if todo_batches and output.finished:  # more to write: OUT is not complete any more
            out.close()
            output.reopen()
            source, out = output.partial, AppendOnlyJsonl(output.partial)
        bar = tqdm(total=len(prompts), initial=len(done), desc="generate", unit="prompt", disable=not progress,
                   dynamic_ncols=True)
        tokens, started, written = 0, time.perf_counter(), 0
        for batch in todo_batches:
            texts, counts = sampler.sample([prompts[i] for i in batch], settings, batch_seed(settings.seed, batch[0]))
            for i, comps, cnt in zip(batch, texts, counts):
                if i in done:
                    continue
                out.append({"prompt": prompts[i], "completions": comps,
                            "meta": {"index": i, "prompt_hash": text_hash(prompts[i]), **key, "new_tokens": cnt}})
                done.add(i)
                written += 1
                tokens += sum(cnt)
                bar.update(1)
            bar.set_postfix(tok_per_s=f"{tokens / max(time.perf_counter() - started, 1e-9):.0f}")
        bar.close()
    finally:
        out.close()
    output.complete()
    return {"prompts": len(prompts), "generated": written, "resumed": len(prompts) - written,
            "tokens": tokens, "seconds": time.perf_counter() - started}

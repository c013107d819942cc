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
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from robustpo.data.io import AppendOnlyJsonl, PartialOutput
from robustpo.data.schema import read_prompts
from robustpo.errors import ConfigError
from robustpo.judges.base import text_hash

BACKENDS = ("transformers", "vllm")


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
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load model '{model}': {e}") from e
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval()
        self.device = device

    def render(self, prompt) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids, prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("chat-message prompts need a tokenizer with a chat template; this model has none")
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids, text

    def sample(self, prompts: list, s: SamplingSettings, seed: int) -> tuple[list[list[str]], list[list[int]]]:
        import torch

        ids = [self.render(p)[0] for p in prompts]
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        sampling = s.temperature > 0
        # Greedy decoding gives one answer per prompt: decode it once and copy it n times.
        per_prompt = s.n if sampling else 1
        kwargs = dict(do_sample=sampling, num_return_sequences=per_prompt, max_new_tokens=s.max_new_tokens,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if sampling:
            # top_k=0: a model's generation_config often carries top_k=50; only top-p truncates here.
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=enc["input_ids"].to(self.device),
                                      attention_mask=enc["attention_mask"].to(self.device), **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]                        # (B*n, T_new)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        texts, counts = [], []
        for row in new.tolist():
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


class VLLMSampler:
    """vLLM backend, used only when asked for (`--backend vllm`) and installed."""

    name = "vllm"

    def __init__(self, model: str, **options):
        try:
            import vllm
        except ImportError:
            raise ConfigError("--backend vllm needs the vllm package (pip install vllm, GPU machines); "
                              "or use --backend transformers") from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, **options)
        self.tokenizer = self.llm.get_tokenizer()

    def sample(self, prompts: list, s: SamplingSettings, seed: int):
        params = self._vllm.SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p,
                                           max_tokens=s.max_new_tokens, seed=seed)
        texts = [p if isinstance(p, str) else
                 self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        outs = self.llm.generate(texts, params, use_tqdm=False)
        return ([[c.text for c in o.outputs] for o in outs], [[len(c.token_ids) for c in o.outputs] for o in outs])


def load_sampler(model: str, backend: str = "transformers", **options):
    if backend == "transformers":
        return TransformersSampler(model, **options)
    if backend == "vllm":
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

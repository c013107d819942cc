"""The testbed's reference policy: a tiny Llama trained from scratch on demonstrations.

A word-level tokenizer (one word = one token, so lengths are exact and the vocabulary is a
few dozen ids) and SFT through the training loop (`robustpo.train.sft`), small enough to
finish in well under a minute on two CPU cores. The result is saved with `save_pretrained` (model + tokenizer), so the
training loop and `robustpo eval` load it by path like any other model.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from robustpo.config import TrainConfig
from robustpo.generate.sampling import encode_prompts
from robustpo.testbed.task import FILLERS, ITEMS, TEMPLATE_WORDS
from robustpo.tiny import SPECIAL_TOKENS, tiny_config
from robustpo.train.sft import sft_items, train_sft


def build_tokenizer():
    """Word-level tokenizer over the task's words; splits words from punctuation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *TEMPLATE_WORDS, *ITEMS, *FILLERS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # \w+|[^\w\s]+: "summary:apple" and "summary: apple" tokenise alike, so prompt/response
    # concatenation with or without a space gives the same ids.
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread. A matmul's reduction order, hence the last bits of
    its result, depends on the thread count; the testbed is a cache keyed by its config and
    code, so it must come out bit-identical whichever process (the 1-thread grid workers, a
    default-threaded `robustpo demo`) happens to build it first."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_reference(prompts: list[str], demonstrations: list[str], out_dir: str | Path, *,
                    seed: int = 0, steps: int = 600, batch_size: int = 64, lr: float = 3e-3,
                    hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                    log_every: int = 0, log=print) -> dict:
    """SFT a tiny Llama on (prompt, demonstration) pairs; save model + tokenizer to `out_dir`.

    Loss on response tokens only (EOS included, so the policy learns when to stop);
    AdamW with linear warm-up and cosine decay, on one thread (`one_thread`). Returns a few
    training statistics.
    """
    with one_thread():
        return _train_reference(prompts, demonstrations, out_dir, seed=seed, steps=steps, batch_size=batch_size,
                                lr=lr, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                                log_every=log_every, log=log)


def _train_reference(prompts, demonstrations, out_dir, *, seed, steps, batch_size, lr, hidden_size, num_layers,
                     num_heads, log_every, log) -> dict:
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    config = tiny_config("llama", len(tokenizer), hidden_size=hidden_size, num_layers=num_layers,
                         num_heads=num_heads, max_positions=64, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    # Same ids as robustpo.data.tokenize gives the training loop: prompt, then response + EOS.
    responses = [r + [tokenizer.eos_token_id]
                 for r in tokenizer(list(demonstrations), add_special_tokens=False)["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    # Plain shuffled batches (no length grouping), as the reference was always trained.
    cfg = TrainConfig(seed=seed, max_steps=steps, batch_size=batch_size, max_grad_norm=1.0, group_by_length=False)
    started, losses = time.perf_counter(), []

    def on_log(row):
        losses.append(row["loss"])
        if log_every and row["step"] % log_every == 0:
            log(f"  reference SFT step {row['step']}/{steps}  loss {sum(losses[-log_every:]) / log_every:.3f}")

    train_sft(model, sft_items(encode_prompts(tokenizer, prompts), responses), cfg=cfg,
              pad_id=tokenizer.pad_token_id, optimizer=optimizer, scheduler=schedule, total_steps=steps, on_log=on_log)
    model.eval()
    # The model's saved generation config should not impose top-k etc. on other samplers.
    model.generation_config.do_sample = True
    model.generation_config.top_k = 0
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": steps, "final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started,
            "parameters": sum(p.numel() for p in model.parameters())}

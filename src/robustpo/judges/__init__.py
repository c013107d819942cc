"""Pairwise judges: one protocol, four backends (see `load_judge` for the spec grammar).

Iterative pairwise ranking with a judge follows Chen et al., arXiv 2411.05875.
"""

from __future__ import annotations

from robustpo.judges.base import (TIE, BothOrders, ComparisonLog, Judge, JudgeError, Verdict, as_text,
                                  compare_detailed, judge_both_orders, text_hash)

__all__ = ["TIE", "BothOrders", "ComparisonLog", "Judge", "JudgeError", "Verdict", "as_text", "compare_detailed",
           "judge_both_orders", "text_hash", "load_judge", "JUDGE_SPEC_HELP"]

JUDGE_SPEC_HELP = """judge spec grammar:
  function:MODULE:FN | function:FILE.py:FN   a Python callable fn(prompts, first, second) -> P(first better) list,
                                             or an object with a compare() method
  reward:PATH | family:PATH                  a reward model folder (num_labels=1) or a reward-model family
                                             folder (robustpo reward family); P = sigmoid(r(first) - r(second)),
                                             r = the family mean or member=K; options: member, batch_size,
                                             device, max_length, dtype
  pairwise:PATH | pairwise-family:PATH       a pairwise preference model or family (robustpo reward train,
                                             reward.kind: pairwise) reading prompt + both responses at once;
                                             P = sigmoid(mean logit), antisymmetric; options: member,
                                             batch_size, device, max_length, dtype
  lm:PATH                                    a local causal LM judge reading p(A) vs p(B); options: template,
                                             labels=A,B, chat=auto|true|false, batch_size, device, max_length
  http://HOST/v1 | https://... | openai:URL  an OpenAI-compatible chat-completions endpoint; options: model,
                                             template, labels, system, concurrency, timeout, retries, backoff,
                                             backoff_max, retry_budget, parse_retries, max_tokens,
                                             temperature, logprobs, top_logprobs, cache=PATH, api_key_env
"""


def _labels(options: dict) -> dict:
    if isinstance(options.get("labels"), str):
        options["labels"] = tuple(x.strip() for x in options["labels"].split(","))
    if "labels" in options and len(options["labels"]) != 2:
        from robustpo.errors import ConfigError

        raise ConfigError(f"labels must be two labels like A,B; got {options['labels']!r}")
    return options


def load_judge(spec: str, **options) -> Judge:
    """Build a judge from a spec string (grammar in JUDGE_SPEC_HELP) and backend options."""
    from robustpo.errors import ConfigError

    if not isinstance(spec, str) or not spec:
        raise ConfigError("a judge spec is required (see `robustpo rank --help`)")
    kind, _, rest = spec.partition(":")
    try:
        if spec.startswith(("http://", "https://")) or kind == "openai":
            from robustpo.judges.http_judge import HTTPJudge

            return HTTPJudge(spec if kind != "openai" else rest, **_labels(options))
        if kind == "function":
            from robustpo.judges.function import load_function_judge

            return load_function_judge(rest, **options)
        if kind in ("reward", "family"):
            from robustpo.judges.reward import FamilyJudge
            from robustpo.rewards import load_family

            member = options.pop("member", None)
            return FamilyJudge(load_family(rest, **options), member=None if member is None else int(member),
                               name=rest, kind=kind)
        if kind in ("pairwise", "pairwise-family"):
            from robustpo.judges.pairwise import load_pairwise_judge

            return load_pairwise_judge(rest, kind, **options)
        if kind == "lm":
            from robustpo.judges.lm import LMJudge

            return LMJudge(rest, **_labels(options))
    except TypeError as e:  # an unknown option name reaches the constructor
        if "unexpected keyword" not in str(e):
            raise
        raise ConfigError(f"bad option for judge '{_shown(spec)}': {e}") from None
    raise ConfigError(f"unknown judge spec '{_shown(spec)}'\n{JUDGE_SPEC_HELP}")


def _shown(spec: str) -> str:
    """A spec as it may be printed: a URL's user:password and query values hidden."""
    if "://" not in spec:
        return spec
    from robustpo.judges.http_judge import redact_url

    head, sep, url = spec.partition(":") if spec.startswith("openai:") else ("", "", spec)
    return f"{head}{sep}{redact_url(url)}"

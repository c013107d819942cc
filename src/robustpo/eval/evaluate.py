"""Evaluate policies against their reference on held-out prompts.

For each policy π (and once for the reference π_ref), on the same prompts:
- win rate of π's samples over π_ref's samples, by a gold reward function (1 / ½ / 0 per
  pair: higher reward / tie / lower) and/or by a pairwise judge (its probability, judged in
  both orders to cancel position bias), averaged per prompt, 95% percentile-bootstrap
  interval over prompts;
- mean gold reward and mean response length (response tokens, EOS excluded);
- KL(π‖π_ref) ≈ mean over π's own samples of log π(y|x) − log π_ref(y|x) (unbiased when
  sampling is plain: temperature 1, top_p 1), with its standard error over prompts;
- on the training pairs, mean Δ(w) and Δ(l), Δ(y) = log π(y|x) − log π_ref(y|x): the
  collapse diagnostic (Δ(w) < 0 means the preferred responses lost likelihood).

Policy and reference samples use different seeds, so a policy identical to its reference
is compared on independent samples and its win rate scatters around ½ within the interval.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from robustpo.errors import RobustpoError
from robustpo.eval import metrics
from robustpo.generate.sampling import Sample, encode_prompts, sample_responses
from robustpo.models import load_for_inference

GoldFn = Callable[[list, list[str]], Sequence[float]]  # (prompts, responses) -> rewards


@dataclass
class EvalSettings:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    samples_per_prompt: int = 1
    seed: int = 0
    batch_size: int = 64
    max_train_pairs: int = 256     # rows of the training pairs used for Δ(w), Δ(l)
    bootstrap_resamples: int = 2000
    device: str = "cpu"


def resolve_model_path(path: str | Path) -> Path:
    """A training run folder stands for its final model (RUN_DIR/final)."""
    path = Path(path)
    return path / "final" if (path / "final" / "config.json").exists() else path


def pair_logps(model, items: list, *, pad_token_id: int, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen (N,), rejected (N,)) float32 log π(y | x) of tokenized pairs, by training's own
    forward (the collate layout `robustpo train` picks for this model, `ResponseLogps`), so that
    eval and training can never disagree on a log-prob."""
    from robustpo.data.collate import collate_pairs, collate_shared, split_sequences
    from robustpo.train.forward import ResponseLogps, frozen_logps, supports_prefix_sharing

    module = ResponseLogps(model)
    layout = collate_shared if supports_prefix_sharing(model) else collate_pairs
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(items), batch_size):
        batch = layout(items[start:start + batch_size], pad_token_id)
        c, r, _ = split_sequences(frozen_logps(module, batch, device).float().cpu(), batch)
        chosen.append(c)
        rejected.append(r)
    return (torch.cat(chosen), torch.cat(rejected)) if items else (torch.zeros(0), torch.zeros(0))


def score_logps(model, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                pad_token_id: int, batch_size: int = 64) -> torch.Tensor:
    """(N,) log π(y | x) of each (prompt, response), by one scoring pass (never `generate`'s
    scores): `pair_logps` on pairs whose rejected response is empty (with prefix sharing an
    empty block costs nothing)."""
    items = [{"index": i, "prompt_ids": p, "chosen_ids": r, "rejected_ids": []}
             for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True))]
    return pair_logps(model, items, pad_token_id=pad_token_id, batch_size=batch_size)[0]


def check_same_vocabulary(tokenizer_a, tokenizer_b, *, names=("policy", "reference")) -> None:
    """Log-ratios compare the same token ids under two models: the vocabularies must match."""
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise RobustpoError(f"the {names[0]} and {names[1]} tokenizers differ; "
                            "KL and log-ratios need one shared vocabulary")


@dataclass
class _Drawn:
    samples: list[Sample]
    prompt_ids: list[list[int]]
    self_logps: np.ndarray   # log π(y|x) of each sample under the model that drew it


def _draw(model, tokenizer, prompts: list, settings: EvalSettings, seed: int) -> _Drawn:
    samples = sample_responses(model, tokenizer, prompts, n=settings.samples_per_prompt,
                               max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                               top_p=settings.top_p, seed=seed, batch_size=settings.batch_size)
    encoded = encode_prompts(tokenizer, prompts)
    prompt_ids = [encoded[s.prompt_index] for s in samples]
    logps = score_logps(model, prompt_ids, [s.token_ids for s in samples],
                        pad_token_id=tokenizer.pad_token_id, batch_size=settings.batch_size).numpy()
    return _Drawn(samples, prompt_ids, logps)


def _lengths(drawn: _Drawn) -> np.ndarray:
    return np.array([len(s.token_ids) - s.ended for s in drawn.samples], float)


def _train_pair_logratios(policy, reference, tokenizer, rows: list[dict], settings: EvalSettings) -> dict:
    """Mean Δ(w), Δ(l) on training rows, tokenised exactly as `robustpo train` does."""
    from robustpo.data.tokenize import tokenize_pairs

    rows = [{**r, "index": i} for i, r in enumerate(rows[:settings.max_train_pairs])]
    items, _ = tokenize_pairs(rows, tokenizer, max_length=1 << 30, max_prompt_length=(1 << 30) - 1)
    kw = dict(pad_token_id=tokenizer.pad_token_id, batch_size=settings.batch_size)
    delta = (torch.cat(pair_logps(policy, items, **kw)) - torch.cat(pair_logps(reference, items, **kw))).numpy()
    n = len(items)
    chosen, rejected = metrics.mean_se(delta[:n]), metrics.mean_se(delta[n:])
    return {"n_pairs": n, "logratio_chosen": chosen[0], "logratio_chosen_se": chosen[1],
            "logratio_rejected": rejected[0], "logratio_rejected_se": rejected[1],
            "implicit_accuracy": float(np.mean(delta[:n] > delta[n:]))}


def evaluate_policies(policies: dict[str, str | Path], reference_path: str | Path, prompts: list, *,
                      gold_fn: GoldFn | None = None, judge=None,
                      train_pairs: dict[str, list[dict]] | list[dict] | None = None,
                      settings: EvalSettings | None = None, log: Callable[[str], None] = print) -> dict:
    """Evaluate each named policy against `reference_path` on `prompts`.

    `gold_fn(prompts, responses) -> rewards` (e.g. robustpo.testbed.task:gold_rewards) and/or
    `judge` (any object with `.compare(prompts, first, second) -> P(first better)`): at least
    one. `train_pairs`: canonical rows (one list for every policy, or one per policy name).
    Returns {"settings", "reference": {...}, "policies": {name: {...}}}; the headline
    `win_rate` of a policy is the gold one when `gold_fn` is given, else the judge's.
    """
    if gold_fn is None and judge is None:
        from robustpo.errors import ConfigError

        raise ConfigError("evaluation needs a gold reward function or a judge to compute win rates")
    settings = settings or EvalSettings()
    def summarize(values, index) -> dict:
        return metrics.summarize(values, index, seed=settings.seed, n_resamples=settings.bootstrap_resamples)

    reference, tokenizer = load_for_inference(resolve_model_path(reference_path), device=settings.device)
    started = time.perf_counter()
    ref = _draw(reference, tokenizer, prompts, settings, seed=settings.seed + 1_000_003)
    index = np.array([s.prompt_index for s in ref.samples])
    item_prompts = [prompts[i] for i in index]
    ref_texts = [s.text for s in ref.samples]
    ref_gold = np.asarray(gold_fn(item_prompts, ref_texts), float) if gold_fn else None
    result = {
        "settings": {**asdict(settings), "n_prompts": len(prompts),
                     "win_rate_interval": "95% percentile bootstrap over prompts"},
        "reference": {"path": str(reference_path), "length": float(_lengths(ref).mean()),
                      "ended_rate": float(np.mean([s.ended for s in ref.samples])),
                      **({"gold_reward": float(ref_gold.mean()),
                          "gold_reward_se": summarize(ref_gold, index)["se"]} if gold_fn else {})},
        "policies": {},
        "samples": {},   # per policy: one row per comparison; write_eval_outputs puts them in samples.jsonl
    }
    log(f"eval: reference sampled in {time.perf_counter() - started:.1f} s")

    for name, path in policies.items():
        started = time.perf_counter()
        policy, policy_tokenizer = load_for_inference(resolve_model_path(path), device=settings.device)
        check_same_vocabulary(policy_tokenizer, tokenizer)
        pol = _draw(policy, tokenizer, prompts, settings, seed=settings.seed)
        texts = [s.text for s in pol.samples]
        ref_logps = score_logps(reference, pol.prompt_ids, [s.token_ids for s in pol.samples],
                                pad_token_id=tokenizer.pad_token_id, batch_size=settings.batch_size).numpy()
        kl = summarize(pol.self_logps - ref_logps, index)
        out = {"path": str(path), "length": float(_lengths(pol).mean()),
               "ended_rate": float(np.mean([s.ended for s in pol.samples])),
               "kl": kl["mean"], "kl_se": kl["se"],
               "kl_ci": [kl["mean"] - 1.96 * kl["se"], kl["mean"] + 1.96 * kl["se"]]}  # normal interval
        rows = [{"prompt": p, "policy": t, "reference": r, "policy_ended": s.ended,
                 "kl_term": float(k)} for p, t, r, s, k in zip(item_prompts, texts, ref_texts, pol.samples,
                                                               pol.self_logps - ref_logps)]
        if gold_fn:
            gold = np.asarray(gold_fn(item_prompts, texts), float)
            for row, g, rg in zip(rows, gold, ref_gold):
                row.update(policy_gold=float(g), reference_gold=float(rg))
            wins = summarize(metrics.paired_wins(gold, ref_gold), index)
            reward = summarize(gold, index)
            out.update(gold_reward=reward["mean"], gold_reward_se=reward["se"],
                       gold_win_rate=wins["mean"], gold_win_rate_ci=wins["ci"])
        if judge is not None:
            from robustpo.judges import judge_both_orders

            verdicts = judge_both_orders(judge, item_prompts, texts, ref_texts)
            for row, prob in zip(rows, verdicts.probs):
                row["judge_p_policy"] = prob
            wins = summarize(verdicts.probs, index)
            out.update(judge=getattr(judge, "name", type(judge).__name__), judge_win_rate=wins["mean"],
                       judge_win_rate_ci=wins["ci"], judge_disagreement_rate=verdicts.disagreement_rate)
        source = "gold" if gold_fn else "judge"
        out.update(win_rate=out[f"{source}_win_rate"], win_rate_ci=out[f"{source}_win_rate_ci"], win_rate_by=source)
        pairs = train_pairs.get(name) if isinstance(train_pairs, dict) else train_pairs
        if pairs:
            out["train_pairs"] = _train_pair_logratios(policy, reference, tokenizer, pairs, settings)
            out["logratio_chosen"] = out["train_pairs"]["logratio_chosen"]
        out["seconds"] = time.perf_counter() - started
        result["policies"][name] = out
        result["samples"][name] = rows
        log(f"eval: {name}: win rate {out['win_rate']:.3f} [{out['win_rate_ci'][0]:.3f}, {out['win_rate_ci'][1]:.3f}]"
            f" ({source}), KL {out['kl']:.3f} ± {out['kl_se']:.3f}, length {out['length']:.1f}"
            f" in {out['seconds']:.1f} s")
    return result


def evaluate_policy(policy_path: str | Path, reference_path: str | Path, prompts: list, **kwargs) -> dict:
    """One policy: the policy's entry of `evaluate_policies`, with the reference's under "reference"."""
    result = evaluate_policies({"policy": policy_path}, reference_path, prompts, **kwargs)
    return {**result["policies"]["policy"], "reference": result["reference"], "settings": result["settings"]}

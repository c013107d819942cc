"""End to end on CPU: every objective trains, logs, saves and reloads."""

import json

import pytest
import torch

from robustpo.config import from_dict, RunConfig
from robustpo.loss_spec import LOSSES
from robustpo.train.preference import train_preference

from testdata import TINY_PAIRS

OBJECTIVES = [n for n, s in LOSSES.items() if s.kind == "objective"]
REFERENCE_METRICS = {"logratio/chosen", "logratio/rejected", "kl_forward"}
STANDARD_METRICS = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                    "logps/chosen", "logps/rejected", "logratio/chosen", "kl_forward", "grad_norm", "lr"}


def make_cfg(tmp_path, model_dir, loss, regularizers=(), **overrides) -> RunConfig:
    data = {"model": {"name_or_path": str(model_dir)},
            "data": {"train": str(TINY_PAIRS), "max_length": 48, "max_prompt_length": 24, "max_rows": 16},
            "loss": loss, "regularizers": list(regularizers),
            "train": {"output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 3, "learning_rate": 1e-2,
                      "warmup_ratio": 0.0, "scheduler": "constant", "reference_cache_dir": str(tmp_path / "cache")}}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return from_dict(RunConfig, data)


def batch_logps(model, tokenizer_dir, rows=8):
    """Sequence log-probs of the chosen responses of the first rows, with a plain forward."""
    from transformers import AutoTokenizer

    from robustpo.data.collate import collate_pairs
    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.logprobs import sequence_logps

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data, _ = load_preferences(str(TINY_PAIRS), max_rows=rows)
    items, _ = tokenize_pairs(data, tok, max_length=48, max_prompt_length=24)
    batch = collate_pairs(items, tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["labels"]).logps


@pytest.mark.parametrize("loss", OBJECTIVES + ["dpo+bcr", "dpo+nll"])
def test_each_objective_trains_end_to_end(tmp_path, tiny_model_dir, loss):
    from transformers import AutoModelForCausalLM

    name, _, reg = loss.partition("+")
    # bcr with a zero budget, so that it is active from the first drop.
    regularizers = [{"name": reg, "budget": 0.0} if reg == "bcr" else {"name": reg}] if reg else []
    cfg = make_cfg(tmp_path, tiny_model_dir, {"name": name}, regularizers)
    result = train_preference(cfg)
    assert result.steps == 3

    # Every trainable parameter tensor moved away from its starting value.
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trained = dict(result.model.named_parameters())
    unchanged = [n for n, p in start.named_parameters() if torch.equal(p, trained[n].detach())]
    assert unchanged == []

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    if LOSSES[name].needs_reference:
        assert STANDARD_METRICS <= set(rows[-1])
    else:  # no reference, so no log-ratio against it
        assert STANDARD_METRICS - REFERENCE_METRICS <= set(rows[-1]) and not REFERENCE_METRICS & set(rows[-1])
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for v in r.values())
    if reg:
        assert f"loss/{reg}" in rows[-1]

    # The saved model reloads with plain transformers and gives the same log-probs.
    reloaded = AutoModelForCausalLM.from_pretrained(result.final_dir)
    result.model.eval()
    assert torch.allclose(batch_logps(reloaded, result.final_dir), batch_logps(result.model, result.final_dir),
                          atol=1e-5)


def test_first_step_metrics_at_the_reference(tmp_path, tiny_model_dir):
    """Before any update the policy is the reference: Δ = 0, so DPO's loss is log 2 exactly
    and every implicit reward is 0 (the metrics are logged before the step's update)."""
    cfg = make_cfg(tmp_path, tiny_model_dir, {"name": "dpo"}, train__max_steps=1)
    train_preference(cfg)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert row["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert row["logratio/chosen"] == pytest.approx(0.0, abs=1e-5)


def test_simpo_trains_with_no_reference_loaded_cached_or_computed(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """simpo's spec needs no reference: the reference set-up is never called (it raises here),
    no model is loaded frozen, no cache is written, and the first step's loss is SimPO's formula
    on a plain forward of the first batch (no shuffling: pairs 0-3), at β = 2, γ_m = 0.5."""
    import torch.nn.functional as F

    from robustpo import models
    from robustpo.train import refcache

    def no_reference(*args, **kwargs):
        raise AssertionError("reference work for a reference-free loss")

    loads = []
    load = models.load_causal_lm
    monkeypatch.setattr(refcache, "setup_reference", no_reference)
    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: loads.append(k) or load(*a, **k))
    cfg = make_cfg(tmp_path, tiny_model_dir, {"name": "simpo"}, train__max_steps=2, train__shuffle=False,
                   train__group_by_length=False)
    result = train_preference(cfg)
    assert result.steps == 2
    assert loads == [{}]  # the policy alone (a reference is loaded with trainable=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "reference_cache").exists()
    assert "reference: not needed by 'simpo'; none loaded or cached" in capsys.readouterr().out

    logps, lengths = first_batch_logps(tiny_model_dir, pairs=4)
    w, l, nw, nl = logps[:4], logps[4:], lengths[:4], lengths[4:]
    want = -F.logsigmoid(2.0 * (w / nw - l / nl) - 0.5).mean().item()
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] == pytest.approx(want, abs=1e-5)
    assert row["rewards/chosen"] == pytest.approx((2.0 * w / nw).mean().item(), abs=1e-5)


def first_batch_logps(model_dir, pairs):
    """Sequence log-probs and response lengths of the first `pairs` chosen, then rejected, rows of
    the e2e data, from a plain forward (one row per sequence) of the saved model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustpo.data.collate import collate_pairs
    from robustpo.data.schema import load_preferences
    from robustpo.data.tokenize import tokenize_pairs
    from robustpo.logprobs import sequence_logps

    tok = AutoTokenizer.from_pretrained(model_dir)
    data, _ = load_preferences(str(TINY_PAIRS), max_rows=16)
    items, _ = tokenize_pairs(data, tok, max_length=48, max_prompt_length=24)
    batch = collate_pairs(items[:pairs], tok.pad_token_id)
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=batch["input_ids"],
                                                                 attention_mask=batch["attention_mask"]).logits
    seq = sequence_logps(logits, batch["labels"])
    return seq.logps[:2 * pairs], seq.lengths[:2 * pairs].float()


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, tiny_model_dir):
    """Batch 4 × accumulation 1 and batch 2 × accumulation 2 see the same pairs per step, so
    for a loss that is a mean over pairs the accumulated gradient must be the same: same
    pre-clipping gradient norm and loss each step (twice the norm would mean the micro-batch
    losses were summed, not averaged). Adam is scale-invariant, so the weights alone could
    not tell; they agree up to float noise that Adam amplifies on near-zero gradients."""
    a = train_preference(make_cfg(tmp_path / "a", tiny_model_dir, {"name": "dpo"}, train__batch_size=4,
                                  train__max_grad_norm=1e9))
    b = train_preference(make_cfg(tmp_path / "b", tiny_model_dir, {"name": "dpo"}, train__batch_size=2,
                                  train__grad_accum=2, train__max_grad_norm=1e9))
    rows = [[json.loads(line) for line in (tmp_path / x / "run" / "metrics.jsonl").read_text().splitlines()]
            for x in ("a", "b")]
    for ra, rb in zip(*rows):
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6)
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-3), name


def test_reference_cache_is_reused_and_invalidated(tmp_path, tiny_model_dir, capsys):
    cache = tmp_path / "cache"
    train_preference(make_cfg(tmp_path / "a", tiny_model_dir, {"name": "dpo"}, train__max_steps=1,
                              train__reference_cache_dir=str(cache)))
    assert len(list(cache.glob("*.json"))) == 1
    capsys.readouterr()
    train_preference(make_cfg(tmp_path / "b", tiny_model_dir, {"name": "dpo"}, train__max_steps=1,
                              train__reference_cache_dir=str(cache)))
    assert "reference log-probs: cached" in capsys.readouterr().out
    # Different data (fewer rows) -> a new cache entry, not a stale hit.
    train_preference(make_cfg(tmp_path / "c", tiny_model_dir, {"name": "dpo"}, train__max_steps=1,
                              train__reference_cache_dir=str(cache), data__max_rows=12))
    assert len(list(cache.glob("*.json"))) == 2


def test_on_the_fly_reference_matches_the_cache(tmp_path, tiny_model_dir):
    cached = train_preference(make_cfg(tmp_path / "a", tiny_model_dir, {"name": "dpo"}))
    live = train_preference(make_cfg(tmp_path / "b", tiny_model_dir, {"name": "dpo"},
                                     train__precompute_reference=False))
    for (name, pa), (_, pb) in zip(cached.model.named_parameters(), live.model.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name


@pytest.mark.parametrize("precompute", [True, False])
def test_lora_reference_is_the_adapter_disabled_base(tmp_path, tiny_model_dir, precompute):
    """With LoRA the adapter starts at zero (B = 0), so the first step sits at the reference:
    loss log 2 whether the reference comes from the cache or from disabling the adapter."""
    from transformers import AutoModelForCausalLM

    cfg = make_cfg(tmp_path, tiny_model_dir, {"name": "dpo"}, model__lora={"r": 4, "alpha": 8},
                   train__precompute_reference=precompute)
    result = train_preference(cfg)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert (result.final_dir / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(result.final_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)  # not a LoRA target


def test_loss_needing_rewards_on_data_without_them(tmp_path, tiny_model_dir, write_jsonl):
    from robustpo.errors import ConfigError

    path = write_jsonl([{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    cfg = make_cfg(tmp_path, tiny_model_dir, {"name": "e_dpo"}, data__train=str(path))
    with pytest.raises(ConfigError, match="loss 'e_dpo' needs chosen_rewards/rejected_rewards"):
        train_preference(cfg)
    assert not (tmp_path / "run" / "final").exists()


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_model_dir):
    from robustpo.errors import ConfigError

    train_preference(make_cfg(tmp_path, tiny_model_dir, {"name": "dpo"}, train__max_steps=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        train_preference(make_cfg(tmp_path, tiny_model_dir, {"name": "dpo"}, train__max_steps=1))
    train_preference(make_cfg(tmp_path, tiny_model_dir, {"name": "dpo"}, train__max_steps=1), overwrite=True)


def test_bf16_mixed_precision_trains_with_float32_loss_maths(tmp_path, tiny_model_dir):
    """accelerate's bf16 autocast (available on CPU): the run trains, metrics stay finite,
    and the saved weights stay float32 (autocast changes compute, not storage)."""
    from safetensors.torch import load_file

    result = train_preference(make_cfg(tmp_path, tiny_model_dir, {"name": "dpo"}, train__mixed_precision="bf16"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] == pytest.approx(0.693147, abs=1e-3)  # at the reference, up to bf16 rounding
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    weights = load_file(result.final_dir / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())

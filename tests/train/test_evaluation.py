"""Evaluation during training (issue 13 item 1): eval/ metrics, best/, and exactly-once rows on resume."""

import json

import pytest
import torch
import torch.nn.functional as F

from robustpo.config import RunConfig, from_dict
from robustpo.errors import ConfigError, DataError
from robustpo.train.preference import train_preference

from testdata import TINY_PAIRS, read_card

BETA = 0.1


def make_cfg(tmp_path, model_dir, data=None, train=None) -> RunConfig:
    return from_dict(RunConfig, {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(TINY_PAIRS), "max_length": 96, "max_prompt_length": 48, "max_rows": 40,
                 **(data or {})},
        "loss": {"name": "dpo", "beta": BETA},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 4, "learning_rate": 1e-2,
                  "warmup_ratio": 0.0, "scheduler": "constant", "reference_cache_dir": str(tmp_path / "cache"),
                  **(train or {})}})


def eval_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith("eval/") for k in r)]


def summed_response_logps(model, tok, prompt: str, response: str) -> float:
    """log π(response | prompt), by hand: plain text, BOS where the tokenizer adds one, an EOS
    after the response (the data/tokenize.py rule; nothing is truncated at these lengths)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None:
        p = [tok.bos_token_id] + p
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(logp[len(p) + j - 1, t].item() for j, t in enumerate(r))


def direct_dpo_metrics(policy_dir, reference_dir, rows) -> dict:
    """eval/ metrics recomputed from saved weights: DPO loss −log σ(β·h), h = Δ(w) − Δ(l)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(reference_dir).eval()
    h = []
    for r in rows:
        lw = [summed_response_logps(m, tok, r["prompt"], r["chosen"]) for m in (policy, reference)]
        ll = [summed_response_logps(m, tok, r["prompt"], r["rejected"]) for m in (policy, reference)]
        h.append((lw[0] - lw[1]) - (ll[0] - ll[1]))
    h = torch.tensor(h, dtype=torch.float64)
    return {"eval/loss": (-F.logsigmoid(BETA * h)).mean().item(), "eval/rewards/accuracies": (h > 0).double().mean().item(),
            "eval/rewards/margins": (BETA * h).mean().item()}


def test_eval_metrics_equal_a_direct_recomputation_and_best_holds_the_best(tmp_path, tiny_model_dir):
    from robustpo.rewards.plan import split_heldout

    # eval/rewards/margins, min: the best evaluation is an early one (margins grow), so best/ is not final/
    cfg = make_cfg(tmp_path, tiny_model_dir, {"eval_fraction": 0.25},
                   {"epochs": 2, "eval_steps": 3, "eval_batch_size": 3, "save_steps": 3,
                    "save_best": {"metric": "eval/rewards/margins", "mode": "min"}})
    result = train_preference(cfg)
    run = tmp_path / "run"
    all_rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()][:40]
    _, held = split_heldout(list(range(40)), 0.25, 0)
    assert json.loads((run / "eval_rows.json").read_text())["rows"] == held
    assert result.steps == 16   # 30 training pairs (40 − 10 held out): ceil(30 / 4) batches × 2 epochs

    evals = eval_rows(run)
    assert [r["step"] for r in evals] == [3, 6, 9, 12, 15, 16]   # every 3 steps and at the end
    assert {"eval/loss", "eval/rewards/accuracies", "eval/rewards/margins", "eval/logratio/chosen",
            "eval/kl_forward"} <= evals[-1].keys()
    assert all(set(r) == {"step"} | {k for k in r if k.startswith("eval/")} for r in evals)

    held_rows = [all_rows[i] for i in held]
    direct = direct_dpo_metrics(run / "final", tiny_model_dir, held_rows)
    for key, value in direct.items():
        assert evals[-1][key] == pytest.approx(value, abs=2e-5), key

    margins = [r["eval/rewards/margins"] for r in evals]
    best_step = evals[margins.index(min(margins))]["step"]   # the first on ties: strictly better only
    assert best_step != 16
    best = json.loads((run / "best.json").read_text())
    assert best == {"step": best_step, "metric": "eval/rewards/margins", "value": min(margins)}
    again = direct_dpo_metrics(run / "best", tiny_model_dir, held_rows)
    assert again["eval/rewards/margins"] == pytest.approx(min(margins), abs=2e-5)
    front, sections = read_card(run / "best")
    assert f"at step {best_step}" in sections["Results"]
    assert "10 of them held out for evaluation" in sections["Data"]
    assert "at step 16" in read_card(run / "final")[1]["Results"]


def test_eval_file_with_a_bad_row_fails_before_training(tmp_path, tiny_model_dir, write_jsonl):
    bad = write_jsonl([{"prompt": "a", "chosen": " b", "rejected": " c"}, {"prompt": "a", "chosen": " b"}],
                      name="eval.jsonl")
    cfg = make_cfg(tmp_path, tiny_model_dir, {"eval": str(bad)}, {"max_steps": 2})
    with pytest.raises(DataError) as e:
        train_preference(cfg)
    assert "eval.jsonl" in str(e.value) and "rejected" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_eval_file_is_evaluated_at_the_end(tmp_path, tiny_model_dir, write_jsonl):
    rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()][60:67]
    path = write_jsonl(rows, name="eval.jsonl")
    train_preference(make_cfg(tmp_path, tiny_model_dir, {"eval": str(path)}, {"max_steps": 2}))
    evals = eval_rows(tmp_path / "run")
    assert [r["step"] for r in evals] == [2]
    direct = direct_dpo_metrics(tmp_path / "run" / "final", tiny_model_dir, rows)
    assert evals[0]["eval/loss"] == pytest.approx(direct["eval/loss"], abs=2e-5)


def test_an_unknown_best_metric_stops_before_training(tmp_path, tiny_model_dir):
    cfg = make_cfg(tmp_path, tiny_model_dir, {"eval_fraction": 0.25},
                   {"max_steps": 2, "save_best": {"metric": "eval/rewards/accuracy"}})
    with pytest.raises(ConfigError, match="train.save_best.metric must be one of the eval metrics"):
        train_preference(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not (tmp_path / "run" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("data,train,message", [
    ({"eval": "x.jsonl", "eval_fraction": 0.1}, {}, "data.eval_fraction must be unset when data.eval is set"),
    ({"eval_fraction": 1.0}, {}, "data.eval_fraction must be"),
    ({}, {"save_best": {}}, "train.save_best must be unset without eval pairs"),
    ({}, {"eval_steps": 5}, "train.eval_steps must be 0 without eval pairs"),
    ({"eval_fraction": 0.1}, {"save_best": {"metric": "rewards/accuracies"}}, "train.save_best.metric must be an eval"),
    ({"eval_fraction": 0.1}, {"save_best": {"mode": "maximum"}}, "train.save_best.mode must be"),
])
def test_eval_config_errors_at_recipe_load(tmp_path, data, train, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(tmp_path, "tiny:llama", data, train)


def test_reward_recipes_refuse_the_policy_eval_keys():
    from robustpo.rewards.plan import RewardRunConfig

    with pytest.raises(ConfigError, match="data.eval_fraction must be unset in a reward recipe"):
        from_dict(RewardRunConfig, {"data": {"train": "x.jsonl", "eval_fraction": 0.1}})


def test_reference_free_objective_evaluates_without_a_reference(tmp_path, tiny_model_dir):
    cfg = make_cfg(tmp_path, tiny_model_dir, {"eval_fraction": 0.25}, {"max_steps": 2})
    cfg.loss = from_dict(RunConfig, {"loss": {"name": "simpo"}}).loss
    train_preference(cfg)
    (row,) = eval_rows(tmp_path / "run")
    assert "eval/loss" in row and "eval/rewards/accuracies" in row and "eval/logratio/chosen" not in row
    assert not (tmp_path / "cache").exists()


def test_best_with_lora_leaves_the_adapter_training(tmp_path, tiny_model_dir):
    """best/ is saved merged from a copy: the run goes on training its adapter after it."""
    cfg = make_cfg(tmp_path, tiny_model_dir, {"eval_fraction": 0.25},
                   {"max_steps": 3, "eval_steps": 1, "save_best": {"metric": "eval/loss", "mode": "max"}})
    cfg.model.lora = from_dict(RunConfig, {"model": {"lora": {"r": 4}}}).model.lora
    train_preference(cfg)
    run = tmp_path / "run"
    assert (run / "final" / "adapter").is_dir() and (run / "best" / "adapter").is_dir()
    steps = [r["step"] for r in eval_rows(run)]
    assert steps == [1, 2, 3]
    best = json.loads((run / "best.json").read_text())
    direct = direct_dpo_metrics(run / "best", tiny_model_dir, [
        [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()][i]
        for i in json.loads((run / "eval_rows.json").read_text())["rows"]])
    assert direct["eval/loss"] == pytest.approx(best["value"], abs=2e-5)

"""The built testbed: the reference policy learns the task; datasets are valid, biased as asked, cached."""

import json

import numpy as np
import pytest

from robustpo.data.io import read_records
from robustpo.testbed import TestbedConfig, build, task
from robustpo.testbed.pairs import longer_preferred_rate


def _reference_vs_random(tb, n_prompts=256):
    from robustpo.generate.sampling import sample_responses
    from robustpo.models import load_for_inference

    model, tok = load_for_inference(tb.reference_path)
    prompts = task.generate_prompts(n_prompts, task.seeded_rng(123, "learns"))
    samples = sample_responses(model, tok, prompts, max_new_tokens=tb.config.max_new_tokens, seed=5)
    reference = np.array(task.gold_rewards(prompts, [s.text for s in samples]))
    rng = task.seeded_rng(123, "random")
    random = np.array(task.gold_rewards(prompts, [task.random_response(rng) for _ in prompts]))
    return reference, random


def test_quick_reference_policy_learns_the_task(quick_testbed):
    """Measured (seed 0, 250 SFT steps of 32): reference ≈ 0.87, random responses ≈ −0.81
    gold reward, a margin of ≈ 1.7. We require the margin to exceed 1.0 and 5 standard errors."""
    reference, random = _reference_vs_random(quick_testbed)
    margin = reference.mean() - random.mean()
    se = np.sqrt(reference.var(ddof=1) / len(reference) + random.var(ddof=1) / len(random))
    assert margin > 1.0 and margin > 5 * se, (reference.mean(), random.mean())


@pytest.mark.slow
def test_full_reference_policy_learns_the_task(tmp_path):
    """The default testbed (700 SFT steps of 64, 30-45 s). Measured: reference ≈ 1.7, random
    ≈ −0.8 gold reward (margin ≈ 2.5), demonstrations ≈ 2.0. Required: margin > 2.0."""
    tb = build(TestbedConfig(cache_dir=str(tmp_path)), log=lambda _: None)
    reference, random = _reference_vs_random(tb)
    assert reference.mean() - random.mean() > 2.0
    # The samples differ in length and quality.
    assert tb.stats["reference_length"] > 2.0 and reference.std() > 1.0


def test_datasets_are_valid_training_data_biased_as_asked(quick_testbed):
    from robustpo.data.schema import load_preferences

    tb = quick_testbed
    for rho, path in tb.train_paths.items():
        rows, report = load_preferences(str(path), strict=True)  # strict: identical pairs are errors
        assert len(rows) == tb.config.n_train_pairs
        assert abs(longer_preferred_rate(read_records(path)) - rho) <= 1 / (2 * len(rows))
    validation = read_records(tb.validation_path)
    assert len(validation) == tb.config.n_validation_pairs
    load_preferences(str(tb.validation_path), strict=True)
    test_prompts = tb.test_prompts()
    assert len(test_prompts) == tb.config.n_test_prompts
    # Held out: no test prompt appears in the training pool or the validation set.
    seen = {r["prompt"] for r in read_records(tb.pool_path)} | {r["prompt"] for r in validation}
    assert not seen & set(test_prompts)
    # Pool labels are sampled from the gold model: pairs whose chosen response is the worse one exist.
    pool = read_records(tb.pool_path)
    assert any(r["meta"]["gold_chosen"] < r["meta"]["gold_rejected"] for r in pool)


def test_rebuild_is_cached_and_a_new_rho_reuses_the_pool(quick_testbed, tmp_path):
    tb = quick_testbed
    messages = []
    again = build(TestbedConfig.quick(cache_dir=tb.config.cache_dir, rhos=(0.5,)), log=messages.append)
    assert messages == []  # nothing trained or sampled again
    assert again.reference_path == tb.reference_path and again.pool_path == tb.pool_path
    assert abs(longer_preferred_rate(read_records(again.dataset(0.5))) - 0.5) <= 1 / 256
    # Another seed is another testbed.
    assert TestbedConfig.quick(seed=1).reference_key() != TestbedConfig.quick().reference_key()
    assert TestbedConfig.quick(n_train_pairs=64).reference_key() == TestbedConfig.quick().reference_key()
    manifest = json.loads((tb.root / "manifest.json").read_text())
    assert manifest["pool_pairs"] == len(read_records(tb.pool_path))


def test_gold_judge_plugs_into_the_judges_function_backend(quick_testbed):
    from robustpo.judges import judge_both_orders, load_judge

    judge = load_judge(f"function:{quick_testbed.gold_judge_spec}")
    prompt = "document: the apple of river stone a summary:"
    verdict = judge_both_orders(judge, [prompt], ["apple river stone"], ["tiger"])
    assert verdict.probs[0] == pytest.approx(task.gold_judge([prompt], ["apple river stone"], ["tiger"])[0])
    assert verdict.disagreement_rate == 0.0


def test_extra_reference_samples_reuse_the_reference_and_pass_validation(quick_testbed):
    from robustpo.data.schema import load_preferences

    messages = []
    config = TestbedConfig.quick(cache_dir=quick_testbed.config.cache_dir, rhos=(0.2,), n_reference_samples=2)
    tb = build(config, log=messages.append)
    assert tb.reference_path == quick_testbed.reference_path  # same reference, new pairs stage
    assert not any("training the reference" in m for m in messages)
    rows, report = load_preferences(str(tb.dataset(0.2)), strict=True)
    assert report.has_reference_samples
    assert all(len(r["reference_samples"]) == 2 and all(s.strip() for s in r["reference_samples"]) for r in rows)


def test_demo_api_evaluates_policies_on_the_testbed(quick_testbed):
    """What `robustpo demo` calls: tb.evaluate(...) then results_summary(...), with the
    schema issue 5 gives for results.json."""
    from robustpo.eval import results_summary

    tb = quick_testbed
    result = tb.evaluate({"same": tb.reference_path}, rho=0.2, log=lambda _: None)
    summary = results_summary(result, rho=0.2, seed=tb.config.seed)
    method = summary["methods"]["same"]
    assert set(method) == {"win_rate", "win_rate_ci", "gold_reward", "length", "kl", "logratio_chosen"}
    assert method["win_rate_ci"][0] <= method["win_rate"] <= method["win_rate_ci"][1]
    assert method["logratio_chosen"] == pytest.approx(0.0, abs=1e-5) and method["kl"] == pytest.approx(0.0, abs=1e-5)
    assert set(summary["reference"]) == {"gold_reward", "length"} and summary["rho"] == 0.2
    assert result["settings"]["max_new_tokens"] == tb.config.max_new_tokens


def test_same_seed_same_pairs(quick_testbed):
    """Deleting the pairs stage and rebuilding it gives byte-identical files (seeded sampling
    and labels); the reference is not retrained."""
    import shutil

    tb = quick_testbed
    before = {name: (tb.root / name).read_bytes() for name in ("pool.jsonl", "validation.jsonl", "test_prompts.jsonl")}
    shutil.rmtree(tb.root)
    messages = []
    again = build(tb.config, log=messages.append)
    assert again.root == tb.root and not any("training" in m for m in messages)
    assert {name: (again.root / name).read_bytes() for name in before} == before


_BUILD_WITH_THREADS = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from robustpo.testbed import TestbedConfig, build
tb = build(TestbedConfig(seed=3, cache_dir=sys.argv[2]), log=lambda _: None)
print(hashlib.sha256((tb.reference_path / "model.safetensors").read_bytes()).hexdigest(),
      hashlib.sha256(tb.pool_path.read_bytes()).hexdigest(), torch.get_num_threads())
"""


@pytest.mark.slow
def test_full_testbed_is_the_same_whatever_thread_count_builds_it(tmp_path):
    """Seed 3's full-size reference came out with different weights when a 1-thread process
    (a grid worker) or a 2-thread one (`robustpo demo`) built it first (measured before the
    pin: 18eddccd… vs e76c0f59…). Built in two processes with 1 and 2 threads, into two
    caches, the reference weights and the sampled pairs must be byte-identical, and the
    builder's own thread setting must come back unchanged. About 50 s."""
    import subprocess
    import sys

    out = [subprocess.run([sys.executable, "-c", _BUILD_WITH_THREADS, str(n), str(tmp_path / f"t{n}")],
                          check=True, capture_output=True, text=True).stdout.split() for n in (1, 2)]
    assert out[0][:2] == out[1][:2]
    assert [o[2] for o in out] == ["1", "2"]

"""Sampling and scoring on tiny random models (no training needed)."""

import numpy as np
import pytest
import torch

from robustpo.eval.evaluate import score_logps
from robustpo.generate.sampling import encode_prompt, sample_responses
from robustpo.testbed import task
from robustpo.testbed.reference import build_tokenizer
from robustpo.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def two_models(tok):
    return (build_tiny_model(tok, "llama", seed=1, hidden_size=32, num_layers=1).eval(),
            build_tiny_model(tok, "llama", seed=2, hidden_size=32, num_layers=1).eval())


PROMPTS = task.generate_prompts(12, task.seeded_rng(0, "sampling-test"))  # documents of 7-10 words


def test_batched_left_padded_generation_matches_one_at_a_time(tok, two_models):
    """Greedy decoding is deterministic, so padding must not change any output."""
    model = two_models[0]
    assert len({len(encode_prompt(tok, p)) for p in PROMPTS}) > 1  # lengths differ: padding is exercised
    batched = sample_responses(model, tok, PROMPTS, temperature=0, max_new_tokens=6, batch_size=12)
    alone = [sample_responses(model, tok, [p], temperature=0, max_new_tokens=6)[0] for p in PROMPTS]
    assert [s.token_ids for s in batched] == [s.token_ids for s in alone]


def test_score_logps_matches_token_by_token_log_softmax(tok, two_models):
    """Sum over response tokens of log softmax(logits at the previous position)[token],
    computed one unpadded sequence at a time."""
    model = two_models[0]
    samples = sample_responses(model, tok, PROMPTS, max_new_tokens=5, seed=3)
    prompt_ids = [encode_prompt(tok, PROMPTS[s.prompt_index]) for s in samples]
    batched = score_logps(model, prompt_ids, [s.token_ids for s in samples], pad_token_id=tok.pad_token_id)
    for b, (p, s) in enumerate(zip(prompt_ids, samples)):
        ids = torch.tensor([p + s.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        expected = sum(logp[len(p) - 1 + t, tok_id].item() for t, tok_id in enumerate(s.token_ids))
        assert batched[b].item() == pytest.approx(expected, abs=1e-4)


def test_sample_kl_estimate_agrees_with_exact_per_step_kl(tok, two_models):
    """Two unbiased estimates of KL(π‖π_ref) for sequences: the Monte-Carlo mean of
    log π(y) − log π_ref(y) (what eval reports), and the mean over the same samples of
    Σ_t KL(π(·|x, y_<t) ‖ π_ref(·|x, y_<t)) computed exactly over the vocabulary at every
    step (the chain rule of KL). Their difference must be within 4 standard errors."""
    import copy

    base, reference = two_models
    policy = copy.deepcopy(base)
    with torch.no_grad():
        policy.lm_head.weight.mul_(10.0)  # sharper than a fresh init, so the KL is not tiny
    samples = sample_responses(policy, tok, PROMPTS, n=40, max_new_tokens=6, seed=11, batch_size=240)
    prompt_ids = [encode_prompt(tok, PROMPTS[s.prompt_index]) for s in samples]
    responses = [s.token_ids for s in samples]
    mc = (score_logps(policy, prompt_ids, responses, pad_token_id=0)
          - score_logps(reference, prompt_ids, responses, pad_token_id=0)).numpy()
    exact = []
    for p, r in zip(prompt_ids, responses):
        ids = torch.tensor([p + r])
        with torch.no_grad():
            lp = torch.log_softmax(policy(input_ids=ids).logits[0].double(), -1)
            lq = torch.log_softmax(reference(input_ids=ids).logits[0].double(), -1)
        steps = range(len(p) - 1, len(p) - 1 + len(r))  # positions that predict response tokens
        exact.append(sum((lp[t].exp() * (lp[t] - lq[t])).sum().item() for t in steps))
    diff = mc - np.array(exact)
    assert np.mean(exact) > 0.5  # the models really differ
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(len(diff)), (mc.mean(), np.mean(exact))

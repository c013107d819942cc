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


def _train_items(tok, n=6):
    from robustpo.data.tokenize import tokenize_pairs

    rng = task.seeded_rng(0, "eval-train-parity")
    prompts = task.generate_prompts(n, rng)
    rows = [{"prompt": p, "chosen": " ".join(p.split()[:3]), "rejected": " ".join(p.split()[-2:]), "index": i}
            for i, p in enumerate(prompts)]
    return tokenize_pairs(rows, tok, max_length=512, max_prompt_length=256)[0]


def test_eval_pair_logps_are_the_training_reference_pass(tok, two_models):
    """Eval's Δ(w), Δ(l) log-probs equal those `robustpo train` caches for its reference
    (train/refcache.compute_reference_logps, fed by training's collate), bit for bit on the
    same batches, and to float precision on other batches."""
    from types import SimpleNamespace

    from robustpo.data.collate import collate_shared
    from robustpo.eval.evaluate import pair_logps
    from robustpo.train.forward import ResponseLogps
    from robustpo.train.refcache import compute_reference_logps

    model, items = two_models[1], _train_items(tok)
    one_process = SimpleNamespace(process_index=0, num_processes=1, is_local_main_process=False, device="cpu")
    cached = compute_reference_logps(ResponseLogps(model), items, lambda b: collate_shared(b, tok.pad_token_id),
                                     batch_size=1, accelerator=one_process)
    chosen, rejected = pair_logps(model, items, pad_token_id=tok.pad_token_id, batch_size=1)
    assert chosen.tolist() == [cached[it["index"]]["chosen"] for it in items]
    assert rejected.tolist() == [cached[it["index"]]["rejected"] for it in items]
    batched = pair_logps(model, items, pad_token_id=tok.pad_token_id, batch_size=4)
    torch.testing.assert_close(batched[0], chosen, rtol=0, atol=1e-5)
    torch.testing.assert_close(batched[1], rejected, rtol=0, atol=1e-5)


def test_eval_pair_logps_match_plain_transformers(tok, two_models):
    """The same values by hand: one unpadded sequence at a time through the plain model, the
    sum of log_softmax at the positions before each response token, gathered at that token."""
    from robustpo.eval.evaluate import pair_logps

    model, items = two_models[0], _train_items(tok)
    chosen, rejected = pair_logps(model, items, pad_token_id=tok.pad_token_id)
    for it, c, r in zip(items, chosen, rejected):
        for response, got in ((it["chosen_ids"], c), (it["rejected_ids"], r)):
            p = it["prompt_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([p + response])).logits[0].double()
            logp = torch.log_softmax(logits, -1)[len(p) - 1:len(p) - 1 + len(response)]
            expected = logp.gather(-1, torch.tensor(response)[:, None]).sum().item()
            assert got.item() == pytest.approx(expected, abs=1e-4)

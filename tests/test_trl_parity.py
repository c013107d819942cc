"""Parity with the peer: our objectives equal TRL DPOTrainer's on the same model and batch.

TRL builds the batch (its own tokenization, EOS handling and completion mask) and computes
its loss with a policy whose weights were perturbed away from the reference. We take the
same token ids, build labels from TRL's completion mask, compute log-probs with our forward
and apply our loss. `bf16=False` matters: on CPU TRL's config defaults to bf16, and the
reference model, which TRL prepares eagerly, then runs under bf16 autocast. TRL `sigmoid` <-> `dpo`, `ipo` (length-normalized, TRL's β is τ) <->
`ipo`, `hinge` <-> `hinge`, `robust` <-> `rdpo`; and the reference-free `simpo` against TRL's
`CPOTrainer(loss_type="simpo")`, with `cpo_alpha=0` (CPO's default adds an NLL term). We also
check that our tokenization of the same rows gives TRL's token ids.
"""

import copy

import pytest
import torch

pytest.importorskip("trl")

ROWS = [{"prompt": f"Question: what is {a} plus {b}?\nAnswer:", "chosen": f" {a + b}.",
         "rejected": f" {a + b + 1}, or so I think."} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]

CASES = [
    ("sigmoid", "dpo", {"beta": 0.1}, {}),
    ("ipo", "ipo", {"beta": 0.1}, {"length_normalize": True}),
    ("hinge", "hinge", {"beta": 0.1}, {}),
    ("robust", "rdpo", {"beta": 0.1, "label_smoothing": 0.2}, {"label_smoothing": 0.2}),
]


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    from robustpo.tiny import build_tiny_model

    reference = build_tiny_model(tiny_tokenizer, "llama", seed=0, hidden_size=32)
    policy = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return policy, reference


@pytest.mark.parametrize("trl_type,ours,trl_kwargs,our_kwargs", CASES)
def test_loss_matches_trl(tmp_path, tiny_tokenizer, models, trl_type, ours, trl_kwargs, our_kwargs):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from robustpo.logprobs import targets_from_labels
    from robustpo.loss_spec import LOSSES
    from robustpo.train.forward import ResponseLogps

    policy, reference = models
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, loss_type=[trl_type],
                     report_to=[], max_length=64, use_cpu=True, bf16=False, **trl_kwargs)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(ROWS),
                         processing_class=tiny_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, batch).item()

    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    t = targets_from_labels(labels)
    response = (t.pred_index, t.targets, t.segment, t.num_sequences)
    with torch.no_grad():
        logps, lengths = ResponseLogps(policy)(batch["input_ids"], batch["attention_mask"], *response)
        ref_logps, _ = ResponseLogps(reference)(batch["input_ids"], batch["attention_mask"], *response)
    B = len(ROWS)
    inputs = {"chosen_lengths": lengths[:B], "rejected_lengths": lengths[B:]}
    params = {"beta": trl_kwargs["beta"]} if ours != "ipo" else {"tau": trl_kwargs["beta"]}
    out = LOSSES[ours].call(logps[:B], logps[B:], ref_logps[:B], ref_logps[B:], inputs, {**params, **our_kwargs})
    assert abs(trl_loss) > 1e-3  # the perturbed policy gives a non-trivial loss
    assert out.loss.item() == pytest.approx(trl_loss, abs=1e-5)


@pytest.mark.filterwarnings("ignore:You are importing from 'trl.experimental'")
def test_simpo_matches_trl_cpo_simpo(tmp_path, tiny_tokenizer, models):
    """TRL's CPO `simpo`: −log σ(β·(logp(w)/n(w) − logp(l)/n(l)) − simpo_gamma), no reference model."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from robustpo.logprobs import targets_from_labels
    from robustpo.loss_spec import LOSSES
    from robustpo.train.forward import ResponseLogps

    policy, _ = models
    args = CPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, loss_type="simpo", beta=2.0,
                     simpo_gamma=0.7, cpo_alpha=0.0, report_to=[], max_length=64, use_cpu=True, bf16=False)
    trainer = CPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(ROWS),
                         processing_class=tiny_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss, trl_metrics = trainer.compute_loss(policy, batch, return_outputs=True)

    both = trainer.concatenated_inputs(batch, padding_value=tiny_tokenizer.pad_token_id)   # chosen rows, then rejected
    t = targets_from_labels(both["concatenated_labels"])
    with torch.no_grad():
        logps, lengths = ResponseLogps(policy)(both["concatenated_input_ids"], both["concatenated_attention_mask"],
                                               t.pred_index, t.targets, t.segment, t.num_sequences)
    B = len(ROWS)
    inputs = {"chosen_lengths": lengths[:B], "rejected_lengths": lengths[B:]}
    out = LOSSES["simpo"].call(logps[:B], logps[B:], None, None, inputs, {"beta": 2.0, "target_margin": 0.7})
    assert abs(trl_metrics["rewards/margins"]) > 1e-2  # the per-token term is not trivially zero
    assert out.loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    # TRL reports β·(mean log-prob) as the rewards, as we do.
    assert out.chosen_rewards.mean().item() == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-5)
    assert out.rejected_rewards.mean().item() == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-5)


def test_tokenization_matches_trl(tmp_path, tiny_tokenizer, models):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from robustpo.data.collate import collate_pairs
    from robustpo.data.schema import validate_rows
    from robustpo.data.tokenize import tokenize_pairs

    policy, reference = models
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], max_length=64,
                     use_cpu=True, bf16=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(ROWS),
                         processing_class=tiny_tokenizer)
    trl_batch = next(iter(trainer.get_train_dataloader()))
    rows, _ = validate_rows(ROWS, source="rows")
    items, _ = tokenize_pairs(rows, tiny_tokenizer, max_length=64, max_prompt_length=32)
    ours = collate_pairs(items, tiny_tokenizer.pad_token_id)

    def row_set(ids, attention, completion):
        # TRL shuffles its loader: compare the multiset of (tokens, completion mask) rows.
        return sorted((tuple(i[a.bool()].tolist()), tuple(c[a.bool()].tolist()))
                      for i, a, c in zip(ids, attention, completion))

    assert row_set(ours["input_ids"], ours["attention_mask"], (ours["labels"] != -100).long()) == \
        row_set(trl_batch["input_ids"], trl_batch["attention_mask"], trl_batch["completion_mask"])

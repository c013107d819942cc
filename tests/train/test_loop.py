"""train/loop.py's run_loop on a tiny model (a 3 → 1 linear layer, no language model): the data
order of each epoch and the resume position, read from the items each step function sees.

Covered elsewhere, not repeated here: gradient accumulation (batch 4 against batch 2 × 2
accumulation, same gradient norm and loss each step: tests/train/test_train_e2e.py::
test_gradient_accumulation_matches_a_larger_batch), length-grouped epoch orders
(tests/test_prefix_sharing.py), and a run killed with SIGKILL resuming to the same final
weights (tests/train/test_resume.py).
"""

import pytest
import torch

from robustpo.config import TrainConfig
from robustpo.train.loop import epoch_order, make_accelerator, run_loop

N = 12   # items


def dataset():
    g = torch.Generator().manual_seed(0)
    return [{"index": i, "x": torch.randn(3, generator=g).tolist()} for i in range(N)]


def collate(items):
    return {"index": torch.tensor([it["index"] for it in items]), "x": torch.tensor([it["x"] for it in items])}


class Interrupt(Exception):
    pass


def train(run_dir, *, resume=False, stop_after=None, **overrides):
    """run_loop over `dataset()`; returns (the item indices of every micro-batch, in order; the model).
    `stop_after=n`: the (n+1)-th micro-batch raises, as a crash would."""
    cfg = TrainConfig(output_dir=str(run_dir), logging_steps=1000, max_grad_norm=0.0, **overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(cfg, run_dir)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    seen = []

    def step_fn(m, batch):
        if stop_after is not None and len(seen) == stop_after:
            raise Interrupt
        seen.append(batch["index"].tolist())
        return (m(batch["x"]) - 1).pow(2).mean(), {}

    micro_per_epoch = -(-N // cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * -(-micro_per_epoch // cfg.grad_accum)
    try:
        run_loop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, dataset=dataset(),
                 collate_fn=collate, step_fn=step_fn, cfg=cfg, run_dir=run_dir, total_steps=total, resume=resume)
    except Interrupt:
        pass
    return seen, accelerator.unwrap_model(model)


def epochs_of(seen, per_epoch):
    flat = [i for batch in seen for i in batch]
    return [flat[e * per_epoch:(e + 1) * per_epoch] for e in range(len(flat) // per_epoch)]


def test_each_epoch_is_a_new_seeded_permutation(tmp_path):
    seen, _ = train(tmp_path / "a", seed=5, epochs=3, batch_size=3)
    assert [len(b) for b in seen] == [3] * 12            # 4 micro-batches of 3 per epoch, 3 epochs
    orders = epochs_of(seen, N)
    assert len(orders) == 3
    for order in orders:
        assert sorted(order) == list(range(N))            # every item exactly once per epoch
    assert len({tuple(o) for o in orders}) == 3           # a different order each epoch
    assert orders[0] != list(range(N))                    # shuffled
    # the order is the documented function of (seed, epoch), nothing else
    assert orders == [epoch_order(N, 5, e, True) for e in range(3)]
    again, _ = train(tmp_path / "b", seed=5, epochs=3, batch_size=3)
    assert again == seen
    other, _ = train(tmp_path / "c", seed=6, epochs=3, batch_size=3)
    assert epochs_of(other, N) != orders


def test_epoch_order_ignores_the_global_rng_and_unshuffled_is_the_data_order():
    torch.manual_seed(1)
    a = epoch_order(N, 5, 2, True)
    torch.manual_seed(2)
    torch.rand(10)
    assert epoch_order(N, 5, 2, True) == a
    assert epoch_order(N, 5, 2, False) == list(range(N))


def test_unshuffled_run_sees_the_data_in_order_every_epoch(tmp_path):
    seen, _ = train(tmp_path / "a", epochs=2, batch_size=4, shuffle=False)
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] * 2


@pytest.mark.parametrize("stop_step", [2, 4])   # 2: inside epoch 0; 4: one step into epoch 1
def test_resume_sees_exactly_what_the_uninterrupted_run_sees_after_the_checkpoint(tmp_path, stop_step):
    """batch 2 × accumulation 2: 6 micro-batches (3 steps) per epoch, 3 epochs, checkpoints every
    2 steps. The run crashes on the micro-batch after step `stop_step` (its checkpoint is the last
    one written); the resumed run must see the uninterrupted run's micro-batches from 2·stop_step
    on, in order, and end with bit-identical weights."""
    opts = dict(seed=3, epochs=3, batch_size=2, grad_accum=2, save_steps=2, save_total_limit=10)
    full, full_model = train(tmp_path / "full", **opts)
    assert len(full) == 18
    first, _ = train(tmp_path / "cut", stop_after=2 * stop_step, **opts)
    assert first == full[:2 * stop_step]
    assert (tmp_path / "cut" / "checkpoints" / f"step-{stop_step}").is_dir()
    assert not (tmp_path / "cut" / "checkpoints" / f"step-{stop_step + 2}").exists()
    rest, resumed_model = train(tmp_path / "cut", resume=True, **opts)
    assert rest == full[2 * stop_step:]
    for (name, a), (_, b) in zip(full_model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(a, b), name

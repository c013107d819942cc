"""Issue 11, item 1: a run that went non-finite never looks finished.

Checked every step (the loss of each micro-batch, the inputs of the objective, the gradient
norm); a non-finite value stops the run naming the step, the batch's rows and the last good
checkpoint, exit status non-zero, and final/ is never written; `train.skip_nonfinite: N` skips
up to N such batches and counts them."""

import json
import math

import pytest
import torch
import yaml

from robustpo.cli import main
from robustpo.errors import NonFiniteError, TrainingError
from robustpo.loss_spec import LOSSES

from testdata import REPO, TINY_PAIRS

HUGE = 1e30   # finite in float32, and so is the margin 2e30; the squared error (βh − Δr)² is not


def rows_with_huge_rewards(path, bad_rows):
    """The tiny pairs (K=3 rewards each) with rewards HUGE / −HUGE on the 1-based `bad_rows`."""
    rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()]
    for r in bad_rows:
        rows[r - 1]["chosen_rewards"], rows[r - 1]["rejected_rewards"] = [HUGE] * 3, [-HUGE] * 3
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def distill_recipe(tmp_path, model_dir, data, **train):
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data), "max_length": 48, "max_prompt_length": 24},
        "loss": {"name": "distill", "beta": 0.1},
        # no shuffling: the batch of step s holds the 1-based rows 8(s−1)+1 … 8s
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 8, "shuffle": False,
                  "learning_rate": 1e-3, "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 2,
                  "reference_cache_dir": str(tmp_path / "cache"), **train},
    }))
    return path


def test_pure_float16_weights_are_refused_at_load(tmp_path, capsys):
    """Today `robustpo train recipes/tiny/dpo.yaml --model.dtype=float16 --train.max_steps=4` turns
    every weight into NaN from step 2, exits 0 and prints "saved …/final"."""
    recipe = REPO / "recipes" / "tiny" / "dpo.yaml"
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--model.dtype=float16", "--train.max_steps=4",
                 f"--train.output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"robustpo train: error: {recipe}: model.dtype must not be float16 here") and \
        err.count("\n") == 1
    assert "use model.dtype: float32 with train.mixed_precision: fp16" in err and "bfloat16" in err
    assert not run.exists()
    # float16 with mixed precision but no LoRA would still train float16 weights: refused too
    assert main(["train", str(recipe), "--model.dtype=float16", "--train.mixed_precision=fp16",
                 f"--train.output_dir={run}"]) == 2
    assert "model.dtype must not be float16" in capsys.readouterr().err


def test_a_nonfinite_loss_stops_the_run_naming_step_rows_and_checkpoint(tmp_path, tiny_model_dir, capsys):
    data = rows_with_huge_rewards(tmp_path / "huge.jsonl", [44])   # in the batch of step 6: rows 41-48
    recipe = distill_recipe(tmp_path, tiny_model_dir, data)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    run = tmp_path / "run"
    assert err[-1] == (f"robustpo train: error: step 6: non-finite loss (inf) on the batch of rows 41, 42, 43, 44, "
                       f"45, 46, 47, 48 of {data}; training stopped and final/ was not written; the last good "
                       f"checkpoint is {run / 'checkpoints' / 'step-4'} (step 4): --resume continues from it; "
                       "train.skip_nonfinite: N skips up to N such batches")
    assert not (run / "final").exists() and not (run / "train_summary.json").exists()
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5]          # nothing logged from the bad step


def test_skip_nonfinite_skips_and_counts_the_bad_batches(tmp_path, tiny_model_dir, capsys):
    data = rows_with_huge_rewards(tmp_path / "huge.jsonl", [3, 44])   # steps 1 and 6
    recipe = distill_recipe(tmp_path, tiny_model_dir, data, skip_nonfinite=2)
    assert main(["train", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "step 1: non-finite loss (inf) on the batch of rows 1, 2, 3, 4, 5, 6, 7, 8" in out
    assert "step 6: non-finite loss (inf) on the batch of rows 41, 42" in out and "skipped, no update (2 of" in out
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 5, 7, 8]
    assert [r["nonfinite_skipped"] for r in rows] == [1, 1, 1, 1, 2, 2]
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert json.loads((run / "train_summary.json").read_text())["nonfinite_skipped"] == 2
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(run / "final" / "model.safetensors").values())

    # A third bad batch is one too many: the run stops, naming it.
    data = rows_with_huge_rewards(tmp_path / "huge3.jsonl", [3, 20, 44])
    recipe = distill_recipe(tmp_path, tiny_model_dir, data, skip_nonfinite=2, output_dir=str(tmp_path / "run3"))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "step 6: non-finite loss (inf) on the batch of rows 41" in err
    assert "the 2 bad batch(es) train.skip_nonfinite allows were already skipped" in err
    assert not (tmp_path / "run3" / "final").exists()


def test_a_run_stopped_at_its_first_step_leaves_nothing_that_blocks_a_rerun(tmp_path, tiny_model_dir, capsys):
    """Today an error at the first step leaves metrics.jsonl, so the rerun needs --overwrite."""
    recipe = distill_recipe(tmp_path, tiny_model_dir, rows_with_huge_rewards(tmp_path / "huge.jsonl", [5]),
                            max_steps=2)
    assert main(["train", str(recipe)]) == 2
    assert "step 1: non-finite loss" in capsys.readouterr().err
    good = distill_recipe(tmp_path, tiny_model_dir, TINY_PAIRS, max_steps=2)
    assert main(["train", str(good)]) == 0            # no --overwrite needed: nothing of value was there
    assert "removed what a run that stopped before its first step left" in capsys.readouterr().out
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def inputs_for(spec, B=4):
    t = lambda: torch.randn(B)  # noqa: E731
    inputs = {"chosen_lengths": torch.full((B,), 5), "rejected_lengths": torch.full((B,), 7),
              "chosen_rewards": torch.randn(B, 2), "rejected_rewards": torch.randn(B, 2)}
    return t(), t(), t(), t(), inputs


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_objective_refuses_nonfinite_log_probs(name, bad):
    spec = LOSSES[name]
    pc, pr, rc, rr, inputs = inputs_for(spec)
    params = spec.resolve({})
    assert torch.isfinite(spec.call(pc, pr, rc, rr, inputs, params).loss)       # finite in, finite out
    pr[2] = bad
    with pytest.raises(NonFiniteError) as e:
        spec.call(pc, pr, rc, rr, inputs, params)
    assert e.value.positions == (2,)
    assert str(e.value) == f"{spec.kind} '{name}' was given non-finite policy_rejected_logps ({bad}) at batch position 2"
    if spec.needs_rewards:
        pr[2] = 0.0
        inputs["chosen_rewards"][1, 0] = bad
        with pytest.raises(NonFiniteError, match=r"non-finite chosen_rewards .* at batch position 1$"):
            spec.call(pc, pr, rc, rr, inputs, params)


def test_a_nonfinite_gradient_norm_stops_the_loop(tmp_path):
    """A finite loss with an infinite gradient (d√x/dx at 0): the update is never made."""
    from accelerate import Accelerator

    from robustpo.config import TrainConfig
    from robustpo.train.loop import run_loop

    model = torch.nn.Linear(1, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    data = [{"index": i} for i in range(8)]

    def step(m, batch):
        w = m.weight.sum()
        return torch.sqrt(w - w.detach()), {}          # 0, with gradient +inf

    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    collate = lambda items: {"index": torch.tensor([it["index"] for it in items])}  # noqa: E731
    for max_grad_norm in (1.0, 0.0):   # clipping on or off, the norm is checked
        with pytest.raises(TrainingError) as e:
            run_loop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, dataset=data,
                     collate_fn=collate, step_fn=step, cfg=TrainConfig(batch_size=4, max_steps=2, shuffle=False,
                                                                        max_grad_norm=max_grad_norm),
                     run_dir=tmp_path, total_steps=2, resume=False, source="pairs.jsonl")
        assert str(e.value).startswith("step 1: non-finite gradient norm (inf) on the batch of rows 1, 2, 3, 4 of "
                                       "pairs.jsonl; training stopped and final/ was not written")
        assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())   # no update was made


def test_with_loss_scaling_overflow_is_left_to_the_scaler_and_a_nan_loss_is_skipped(tmp_path):
    """fp16 on a GPU: accelerate's GradScaler skips a step whose scaled gradients overflow and
    lowers its scale; that is no reason to stop. A NaN loss is skipped before the scaler sees
    it (no backward, no unscale), and training goes on with the scaler intact. Simulated on CPU
    with accelerate's own fp16 path and a CPU GradScaler."""
    from accelerate import Accelerator

    from robustpo.config import TrainConfig
    from robustpo.train.loop import run_loop

    accelerator = Accelerator(cpu=True, mixed_precision="fp16")
    accelerator.native_amp, accelerator.scaler = True, torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    def step(m, batch):
        y = m(torch.ones(1, 1)).float().sum()
        i = batch["index"][0].item()
        return y * {0: 1e35, 4: float("nan")}.get(i, 1.0), {}   # row 1: overflows once scaled; row 5: NaN

    collate = lambda items: {"index": torch.tensor([it["index"] for it in items])}  # noqa: E731
    state = run_loop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                     dataset=[{"index": i} for i in range(8)], collate_fn=collate, step_fn=step,
                     cfg=TrainConfig(batch_size=1, max_steps=8, shuffle=False, skip_nonfinite=1),
                     run_dir=tmp_path, total_steps=8, resume=False)
    assert state.step == 8 and state.nonfinite_skipped == 1
    assert accelerator.scaler.get_scale() == 2.0 ** 15            # halved once, by the overflow at step 1
    # updates: none at step 1 (the scaler's skip) and step 5 (ours); 6 of lr·1 each
    assert model.weight.item() == pytest.approx(1.0 - 6e-3, abs=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 6, 7, 8]
    assert rows[1]["grad_norm"] == pytest.approx(1.0)              # unscaled before it is measured

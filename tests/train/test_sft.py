"""train/sft.py: the NLL step equals transformers' own SFT loss; training through run_loop learns."""

import torch

from robustpo.config import TrainConfig
from robustpo.data.collate import collate_pairs, collate_shared
from robustpo.testbed.reference import build_tokenizer
from robustpo.tiny import build_tiny_model
from robustpo.train.forward import ResponseLogps
from robustpo.train.sft import nll_step, sft_items, train_sft


def _setup():
    tok = build_tokenizer()
    prompts = tok(["summary: apple", "summary: pear banana", "summary:"], add_special_tokens=True)["input_ids"]
    responses = [r + [tok.eos_token_id] for r in tok(["apple", "pear banana", "banana"],
                                                      add_special_tokens=False)["input_ids"]]
    return tok, sft_items(prompts, responses)


def test_nll_step_is_the_token_mean_loss_of_transformers():
    tok, items = _setup()
    model = build_tiny_model(tok, "llama", seed=0, hidden_size=32, num_layers=1).eval()
    rows = collate_pairs(items, tok.pad_token_id)
    B = len(items)
    with torch.no_grad():
        expected = model(input_ids=rows["input_ids"][:B], attention_mask=rows["attention_mask"][:B],
                         labels=rows["labels"][:B]).loss
        for layout in (collate_pairs, collate_shared):
            loss, _ = nll_step(ResponseLogps(model), layout(items, tok.pad_token_id))
            torch.testing.assert_close(loss, expected, rtol=0, atol=1e-5)


def test_train_sft_lowers_the_loss_and_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tok, items = _setup()
    model = build_tiny_model(tok, "llama", seed=0, hidden_size=32, num_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    rows = []
    state = train_sft(model, items, cfg=TrainConfig(max_steps=30, batch_size=3), pad_id=tok.pad_token_id,
                      optimizer=optimizer, scheduler=scheduler, total_steps=30, on_log=rows.append)
    assert state.step == 30 and len(rows) == 30
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert list(tmp_path.iterdir()) == []

"""The `http://` judge against vLLM's real OpenAI-compatible server.

The served model is a tiny Llama fine-tuned for a few seconds to answer the judge's question
with "A" when the first response is the helpful one and "B" otherwise, so verdicts carry
information and both labels are among the top log-probs. The independent check: the HTTP
judge's verdicts, read from the server's top_logprobs, equal the `lm:` judge's, computed
in this process by transformers on the same weights and template, in both orders.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from vllmhelpers import VLLMServer, build_llama

sys.path[:0] = [str(Path(__file__).parents[1] / "generate")]
from genhelpers import cli_command, write_jsonl  # noqa: E402

pytestmark = pytest.mark.vllm

GOOD = ["a kind helpful answer", "a clear correct reply", "a polite useful note", "a careful true answer"]
BAD = ["rude wrong words", "an angry false claim", "a lazy useless line", "a mean silly retort"]
PROMPTS = ["Tell me about cats.", "What is 2 plus 3?", "Help me write a letter.", "Name a colour."]
# float32 on both sides (measured max 6.8e-5); the server's top-20 may leave out a label
# variant's tiny mass.
VERDICT_TOL = 1e-3


def _pairs():
    """(prompt, good, bad) for every combination: 64 pairs."""
    return [(p, g, b) for p in PROMPTS for g in GOOD for b in BAD]


def _fine_tune(path):
    """A tiny Llama trained to put its next-token mass after the judge prompt on the label of the
    helpful response (loss on that one token)."""
    from robustpo.judges.lm import DEFAULT_TEMPLATE, LMJudge

    texts = [DEFAULT_TEMPLATE, "A B"] + PROMPTS + GOOD + BAD
    model, tok = build_llama(path, texts * 3, seed=1)
    judge = LMJudge(str(path))  # only for its rendering (chat template) and label ids
    rows = [(judge.render(p, g, b), "A") for p, g, b in _pairs()] + [(judge.render(p, b, g), "B")
                                                                     for p, g, b in _pairs()]
    targets = {lbl: tok(lbl, add_special_tokens=False).input_ids[0] for lbl in "AB"}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    tok.padding_side = "left"
    for _ in range(60):
        batch = [rows[i] for i in torch.randperm(len(rows), generator=gen)[:16]]
        enc = tok([t for t, _ in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = model(**enc, position_ids=pos).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([targets[lbl] for _, lbl in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    return loss.item()


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm-judge")
    assert _fine_tune(path) < 0.1
    return str(path)


@pytest.fixture(scope="module")
def server(judge_dir, tmp_path_factory):
    srv = VLLMServer(judge_dir, tmp_path_factory.mktemp("server") / "server.log").start()
    yield srv
    srv.stop()


def _http(server, judge_dir, cache, **options):
    from robustpo.judges.http_judge import HTTPJudge
    from robustpo.judges.lm import DEFAULT_TEMPLATE

    return HTTPJudge(server.url, model=judge_dir, template=DEFAULT_TEMPLATE, top_logprobs=20, cache=str(cache),
                     **options)


def test_http_verdicts_from_logprobs_equal_the_lm_judge_in_both_orders(server, judge_dir, tmp_path):
    from robustpo.judges.lm import LMJudge

    prompts, good, bad = map(list, zip(*_pairs()[::4]))  # 16 pairs
    http = _http(server, judge_dir, tmp_path / "cache.jsonl")
    lm = LMJudge(judge_dir)
    for first, second in ((good, bad), (bad, good)):
        got = http.compare_detailed(prompts, first, second)
        assert {v.raw["source"] for v in got} == {"logprobs"}
        want = torch.tensor(lm.compare(prompts, first, second))
        diff = (torch.tensor([v.prob for v in got]) - want).abs().max().item()
        assert diff < VERDICT_TOL, f"max |http - lm| = {diff:.2e}"
        print(f"MEASURED max |http - lm| verdict = {diff:.2e}")
    assert min(lm.compare(prompts, good, bad)) > 0.9 and max(lm.compare(prompts, bad, good)) < 0.1

    again = _http(server, judge_dir, tmp_path / "cache.jsonl")  # a second run: all from the cache
    assert again.compare(prompts, good, bad) == [v.prob for v in http.compare_detailed(prompts, good, bad)]
    assert again.requests_sent == 0


def test_a_request_the_server_refuses_names_its_message(server, judge_dir, tmp_path):
    """vLLM answers 400 with {"error": {"message": ...}} when top_logprobs passes its --max-logprobs."""
    from robustpo.judges.base import JudgeError

    judge = _http(server, judge_dir, tmp_path / "c.jsonl")
    judge.top_logprobs = 21
    with pytest.raises(JudgeError) as e:
        judge.compare(["p"], ["a"], ["b"])
    msg = str(e.value)
    assert "HTTP 400" in msg and '{"' not in msg and "smaller top_logprobs" in msg, msg
    assert judge.requests_sent == 1  # a refusal is not retried


def test_server_stopped_mid_run_then_rerun_finishes_without_repaying(server, judge_dir, tmp_path):
    """`robustpo label` in a subprocess; the server is killed after some verdicts are cached; the
    command retries, gives up with a clear message; a rerun on the restarted server asks only for
    the comparisons that were not judged."""
    import subprocess

    import time

    from robustpo.judges.lm import DEFAULT_TEMPLATE

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": b, "rejected": g} for p, g, b in _pairs()])
    out = tmp_path / "labelled.jsonl"
    cache = Path(str(out) + ".judge-cache.jsonl")
    argv = ["label", "--judge", server.url, "--in", pairs, "--out", out, "--no-progress", "--chunk", 8,
            "-J", f"model={judge_dir}", "-J", "top_logprobs=20", "-J", "retries=2", "-J", "backoff=0.2",
            "-J", "template=" + DEFAULT_TEMPLATE]
    run = subprocess.Popen(cli_command(argv), stderr=subprocess.PIPE, text=True)
    while not (cache.exists() and cache.read_text().count("\n") >= 20):
        assert run.poll() is None, run.stderr.read()[-2000:]
        time.sleep(0.02)
    server.stop()
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "rerun to continue" in err, err[-2000:]
    assert "failed 3 times in a row" in err  # the first try and retries=2, then it gave up
    judged = cache.read_text().count("\n")
    assert 20 <= judged < 128 and not out.exists()

    server.start()
    done = subprocess.run(cli_command(argv), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.requests_served() == 128 - judged  # only what the first run had not judged
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 64 and all(r["chosen"] in GOOD and r["meta"]["label"]["swapped"] for r in rows)

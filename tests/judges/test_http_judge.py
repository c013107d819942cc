"""The HTTP judge against a real chat-completions server process on 127.0.0.1.

The server's truth (see chat_server.py): the longer response is better. So for
prompts/responses below, P(first better) is 1.0 when `first` is longer, 0.0 when shorter
(text replies), 0.8 / 0.2 when the server offers logprobs with P(better label) = 0.8.
"""

import json
import time

import pytest

from robustpo.judges import judge_both_orders, load_judge
from robustpo.judges.base import JudgeError
from robustpo.judges.http_judge import JudgeUnavailable, parse_verdict

PROMPTS = ["q1", "q2", "q3", "q4"]
FIRST = ["a long answer", "x", "medium one", "y"]
SECOND = ["short", "a much longer answer", "tiny", "longer than y"]
TRUTH = [1.0, 0.0, 1.0, 0.0]  # first longer -> 1


def make(server, tmp_path=None, **kw):
    opts = dict(retries=3, backoff=0.01, backoff_max=0.05, timeout=5.0, concurrency=2, logprobs=False)
    opts.update(kw)
    return load_judge(server.url, **opts)


def test_normal_replies(server):
    judge = make(server)
    assert judge.compare(PROMPTS, FIRST, SECOND) == TRUTH
    assert server.requests == 4


def test_logprobs_give_graded_verdicts(server):
    server.script(default="logprobs")
    judge = make(server, logprobs=True)
    verdicts = judge.compare_detailed(PROMPTS, FIRST, SECOND)
    assert [round(v.prob, 6) for v in verdicts] == [0.8, 0.2, 0.8, 0.2]
    assert all(v.raw["source"] == "logprobs" for v in verdicts)


def test_unparseable_replies_are_retried_then_counted_as_ties(server):
    server.script(queue=["garbage"] * 3)
    judge = make(server, parse_retries=2, concurrency=1)
    [v] = judge.compare_detailed(["q"], ["long answer"], ["short"])
    assert (v.prob, v.parsed) == (0.5, False)  # a tie, never a guess
    assert server.requests == 3                # first try + 2 retries
    # One garbled reply, then a good one: the retry reads the real verdict.
    server.script(queue=["garbage"])
    judge = make(server, parse_retries=2, concurrency=1)
    [v] = judge.compare_detailed(["q"], ["long answer"], ["short"])
    assert (v.prob, v.parsed) == (1.0, True)
    assert server.requests == 2


def test_server_errors_are_retried_with_exponential_backoff(server):
    server.script(queue=["500", "503", "bad_json"])
    judge = make(server, backoff=0.1, backoff_max=10, concurrency=1)
    assert judge.compare(["q"], ["short"], ["much longer"]) == [0.0]
    log = server.stats()["log"]
    assert [e["action"] for e in log] == ["500", "503", "bad_json", "ok"]
    gaps = [b["t"] - a["t"] for a, b in zip(log, log[1:])]
    # backoff * 2^k: waits of at least 0.1, 0.2, 0.4 s between the attempts.
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4


def test_rate_limits_wait_at_least_retry_after(server):
    server.script(queue=["429"], delay=0.3)
    judge = make(server, backoff=0.01, backoff_max=1.0, concurrency=1)  # Retry-After is within the cap
    assert judge.compare(["q"], ["longer"], ["s"]) == [1.0]
    log = server.stats()["log"]
    assert [e["action"] for e in log] == ["429", "ok"] and log[1]["t"] - log[0]["t"] >= 0.3


def test_timeouts_and_dropped_connections_are_retried(server):
    server.script(queue=["timeout", "close"], delay=2.0)
    judge = make(server, timeout=0.3, concurrency=1)
    t0 = time.perf_counter()
    assert judge.compare(["q"], ["longer answer"], ["short"]) == [1.0]
    assert time.perf_counter() - t0 < 1.9  # did not wait for the slow reply
    assert [e["action"] for e in server.stats()["log"]] == ["timeout", "close", "ok"]


def test_concurrency_limit(server):
    server.script(default="slow", delay=0.15)
    judge = make(server, concurrency=3)
    t0 = time.perf_counter()
    prompts = [f"{p}-{k}" for k in range(3) for p in PROMPTS]  # 12 distinct comparisons
    assert judge.compare(prompts, FIRST * 3, SECOND * 3) == TRUTH * 3
    elapsed = time.perf_counter() - t0
    assert server.requests == 12
    assert 2 <= server.stats()["max_in_flight"] <= 3  # parallel, but never more than the limit
    assert elapsed >= 0.15 * 12 / 3               # 12 requests, 3 at a time, 0.15 s each
    # Identical comparisons inside one batch are asked once.
    server.script()
    assert make(server).compare(PROMPTS * 3, FIRST * 3, SECOND * 3) == TRUTH * 3
    assert server.requests == 4


def test_client_errors_are_not_retried(server):
    server.script(default="400")
    with pytest.raises(JudgeError, match="HTTP 400"):
        make(server).compare(["q"], ["a"], ["bb"])
    assert server.requests == 1


def test_cache_means_a_second_run_sends_no_requests(server, tmp_path):
    cache = tmp_path / "cache.jsonl"
    first_run = make(server, cache=str(cache)).compare(PROMPTS, FIRST, SECOND)
    assert server.requests == 4
    server.script()  # reset the counter
    second_run = make(server, cache=str(cache)).compare(PROMPTS, FIRST, SECOND)  # a fresh judge, same cache file
    assert second_run == first_run == TRUTH
    assert server.requests == 0
    # A different template is a different judge: it is asked again.
    make(server, cache=str(cache), template="{prompt}\n[Response A]\n{first}\n\n[Response B]\n{second}\n\nWhich?"
         ).compare(PROMPTS[:1], FIRST[:1], SECOND[:1])
    assert server.requests == 1


def test_final_failure_keeps_everything_judged_so_far(server, tmp_path):
    cache = tmp_path / "cache.jsonl"
    server.script(queue=["ok", "ok"], default="503")  # two answers, then the server stays down
    judge = make(server, cache=str(cache), concurrency=1, retries=2)
    with pytest.raises(JudgeUnavailable, match=r"2 of 4 new comparisons .* judged"):
        judge.compare(PROMPTS, FIRST, SECOND)
    assert server.requests == 2 + 3  # two verdicts, then first try + 2 retries of the third
    assert len([json.loads(x) for x in cache.read_text().splitlines()]) == 2
    server.script()  # the server is back: only the two missing comparisons are paid for
    assert make(server, cache=str(cache)).compare(PROMPTS, FIRST, SECOND) == TRUTH
    assert server.requests == 2


def test_both_orders_cancel_a_judge_that_always_says_a(server):
    server.script(default="always_a")
    both = judge_both_orders(make(server), PROMPTS, FIRST, SECOND)
    assert both.probs == [0.5] * 4           # (1 + (1 - 1)) / 2
    assert both.disagreement_rate == 1.0     # the orders always point opposite ways


@pytest.mark.parametrize("text,expected", [
    ("A", 1.0), (" b.", 0.0), ("**A**", 1.0), ("(B)", 0.0), ("[[A]]", 1.0), ("My verdict: [[B]]", 0.0),
    ("[[tie]]", 0.5), ("Answer: B", 0.0), ("Response A is better because it is concise.", 1.0),
    ("A. It is more accurate.", 1.0), ("The better response is: B", 0.0),
    ("", None), ("I cannot decide.", None), ("[[A]] or maybe [[B]]", None), ("Answer: A. Verdict: B", None),
    ("a lot of text without a verdict", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected

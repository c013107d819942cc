"""Issue 11, item 2: the HTTP judge never waits without bound, never follows a redirect and
never prints a credential. Each case runs against real server processes on 127.0.0.1
(chat_server.py) that misbehave in one way, with small limits so each test takes seconds.
Expected values come from the servers' own request logs and from hand arithmetic."""

import base64
import calendar
import json
import time

import pytest

from genhelpers_judges import run_rank
from robustpo.errors import ConfigError
from robustpo.judges import load_judge
from robustpo.judges.base import JudgeError
from robustpo.judges.http_judge import JudgeUnavailable, _retry_after


def make(url, **kw):
    opts = dict(retries=3, backoff=0.01, backoff_max=0.05, timeout=5.0, concurrency=1, logprobs=False)
    opts.update(kw)
    return load_judge(url, **opts)


# ---------------------------------------------------------------------------- waits are capped

@pytest.mark.parametrize("action", ["429", "429date"])
def test_a_huge_retry_after_is_capped_by_backoff_max(server, action):
    # Retry-After: 100000 seconds, or an HTTP date 100000 s ahead; the cap is 0.3 s.
    server.script(queue=[action, action], delay=100000)
    t0 = time.perf_counter()
    assert make(server.url, backoff_max=0.3).compare(["q"], ["longer"], ["s"]) == [1.0]
    elapsed = time.perf_counter() - t0
    log = server.stats()["log"]
    assert [e["action"] for e in log] == [action, action, "ok"]
    gaps = [b["t"] - a["t"] for a, b in zip(log, log[1:])]
    assert all(0.3 <= g < 1.5 for g in gaps)  # waited the cap (Retry-After is longer), not 100000 s
    assert elapsed < 3


def test_retry_after_as_seconds_or_http_date():
    now = calendar.timegm((2015, 10, 21, 7, 27, 30))            # 30 s before the date below
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert _retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0   # in the past: no wait
    assert _retry_after("120", now=now) == 120.0
    assert _retry_after("-5") == 0.0
    assert _retry_after("inf") == float("inf")                  # the caller caps it
    for bad in (None, "nan", "soon", ""):
        assert _retry_after(bad) is None


def test_waits_longer_than_the_cap_are_never_slept(server):
    # backoff 10 s would give waits of 10, 20, 40 s; backoff_max 0.1 s caps each of them.
    server.script(queue=["500", "503", "500"])
    t0 = time.perf_counter()
    assert make(server.url, backoff=10.0, backoff_max=0.1).compare(["q"], ["s"], ["longer"]) == [0.0]
    assert time.perf_counter() - t0 < 2
    assert server.requests == 4


@pytest.mark.parametrize("bad", [{"backoff_max": float("inf")}, {"backoff": -1}, {"timeout": 0},
                                 {"timeout": float("nan")}, {"retries": -1}, {"retries": 1.5},
                                 {"concurrency": 0}, {"retry_budget": -1}, {"parse_retries": "many"}])
def test_unbounded_or_nonsense_limits_are_refused(server, bad):
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=f"judge option {name} must be"):
        make(server.url, **bad)


# ---------------------------------------------------------------------------- a deadline per request

@pytest.mark.parametrize("action", ["trickle", "trickle_head"])
def test_a_trickling_server_cannot_keep_a_request_alive(server, action):
    # One byte every 0.2 s: every socket read succeeds well within any per-read timeout, and
    # the whole reply would take 200 s. The request deadline (timeout=1) ends each attempt.
    server.script(default=action, delay=0.2)
    judge = make(server.url, timeout=1.0, retries=1)
    t0 = time.perf_counter()
    with pytest.raises(JudgeUnavailable, match=r"failed 2 times in a row \(last: no complete reply within 1 s"):
        judge.compare(["q"], ["a"], ["bb"])
    elapsed = time.perf_counter() - t0
    assert 2.0 <= elapsed < 3.5  # two attempts of 1 s each, plus a 0.01 s wait
    assert server.requests == 2


# ---------------------------------------------------------------------------- a budget per command

def test_the_commands_retries_are_bounded_by_a_budget(server, tmp_path):
    # Every comparison fails once, then succeeds: 3 retries allowed in all.
    server.script(queue=["500", "ok"] * 20)
    cache = tmp_path / "cache.jsonl"
    judge = make(server.url, retries=3, retry_budget=3, cache=str(cache))
    prompts = [f"q{i}" for i in range(10)]
    with pytest.raises(JudgeUnavailable, match=r"the retry budget of this command is spent \(3 retries in all; "
                                               r"-J retry_budget=N allows more\) \(last: HTTP 500"):
        judge.compare(prompts, ["long answer"] * 10, ["short"] * 10)
    # By hand: q0..q2 take 500 + ok each (3 retries spent), q3's 500 finds the budget empty.
    assert server.requests == 7
    assert len(cache.read_text().splitlines()) == 3  # the three verdicts are kept
    server.script()
    assert make(server.url, cache=str(cache)).compare(prompts, ["long answer"] * 10, ["short"] * 10) == [1.0] * 10
    assert server.requests == 7                      # a rerun pays only for the seven missing


def test_unreadable_replies_count_against_the_budget(server):
    server.script(default="garbage")
    with pytest.raises(JudgeUnavailable, match="retry budget"):
        make(server.url, parse_retries=5, retry_budget=1).compare(["q"], ["a"], ["bb"])
    assert server.requests == 2


# ---------------------------------------------------------------------------- redirects

def test_a_redirect_to_another_origin_is_not_followed(server, other_chat_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bearer-SECRET-4242")
    other_chat_server.script()
    target = f"http://127.0.0.1:{other_chat_server.port}/v1/chat/completions"
    server.script(default="redirect", location=target)
    with pytest.raises(JudgeError) as e:
        make(server.url).compare(["q"], ["a"], ["bb"])
    msg = str(e.value)
    assert f"answered HTTP 302, a redirect to {target} (another origin); redirects are never followed" in msg
    assert server.requests == 1                       # a redirect is not retried
    assert server.stats()["log"][0]["auth"] == "Bearer sk-bearer-SECRET-4242"  # the real endpoint got the key
    assert other_chat_server.stats()["log"] == []     # the other origin got nothing: no request, no key


def test_a_redirect_on_the_same_origin_is_refused_too(server):
    server.script(default="redirect", location="/v2/chat/completions")
    with pytest.raises(JudgeError, match=r"HTTP 302, a redirect to http://127\.0\.0\.1:\d+/v2/chat/completions; "
                                         "redirects are never followed"):
        make(server.url).compare(["q"], ["a"], ["bb"])
    assert [e["path"] for e in server.stats()["log"]] == ["/v1/chat/completions"]


# ---------------------------------------------------------------------------- credentials

SECRETS = ["pw-SECRET-1111", "qk-SECRET-2222", "sk-bearer-SECRET-3333"]
SECRETS.append(base64.b64encode(f"alice:{SECRETS[0]}".encode()).decode())  # the Basic header as sent


def assert_no_secret(text):
    for s in SECRETS:
        assert s not in text


def test_credentials_in_the_url_are_used_but_never_printed(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS[2])
    url = f"http://alice:{SECRETS[0]}@127.0.0.1:{server.port}/v1?api_key={SECRETS[1]}"
    # 1. the credentials work: HTTP Basic from the URL, the query kept as is.
    server.script()
    assert make(url).compare(["q"], ["long answer"], ["s"]) == [1.0]
    [entry] = server.stats()["log"]
    assert entry["auth"] == "Basic " + SECRETS[3]
    assert entry["path"] == f"/v1/chat/completions?api_key={SECRETS[1]}"
    # 2. a server that echoes them back in its error; a server that stays down; a trickle.
    for script, error in [({"default": "echo400"}, JudgeError), ({"default": "500"}, JudgeUnavailable),
                          ({"default": "trickle", "delay": 0.2}, JudgeUnavailable)]:
        server.script(**script)
        with pytest.raises(error) as e:
            make(url, retries=1, timeout=0.5).compare(["q"], ["a"], ["bb"])
        assert_no_secret(str(e.value))
        assert f"judge endpoint http://***@127.0.0.1:{server.port}/v1/chat/completions?api_key=***" in str(e.value)
    # 3. a key as the bearer token, echoed back.
    server.script(default="echo400")
    with pytest.raises(JudgeError) as e:
        make(f"http://127.0.0.1:{server.port}/v1?key={SECRETS[1]}").compare(["q"], ["a"], ["bb"])
    assert "Bearer ***" in str(e.value) and "key=***" in str(e.value)
    assert_no_secret(str(e.value))


def test_bad_urls_and_options_do_not_print_credentials(server):
    for url in [f"http://u:{SECRETS[0]}@127.0.0.1:notaport/v1", f"http://u:{SECRETS[0]}@/v1?k={SECRETS[1]}"]:
        with pytest.raises(ConfigError, match="bad judge URL") as e:
            load_judge(url)
        assert_no_secret(str(e.value))
    with pytest.raises(ConfigError, match="bad option for judge") as e:
        load_judge(f"openai:http://u:{SECRETS[0]}@127.0.0.1:1/v1?k={SECRETS[1]}", no_such_option=1)
    assert_no_secret(str(e.value))


def test_rank_through_the_cli_never_prints_or_writes_a_credential(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS[2])
    url = f"http://alice:{SECRETS[0]}@127.0.0.1:{server.port}/v1?api_key={SECRETS[1]}"
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"prompt": "p", "completions": ["a", "bbb", "cc"]}) + "\n")
    server.script(queue=["ok", "ok"], default="echo400")
    assert run_rank(url, src, tmp_path / "pairs.jsonl") == 2
    captured = capsys.readouterr()
    assert "robustpo rank: error: judge endpoint http://***@127.0.0.1" in captured.err
    assert_no_secret(captured.err + captured.out)
    for f in tmp_path.iterdir():  # cache, judgment log, partial output, state
        assert_no_secret(f.read_text())


def test_environment_proxy_is_used(server, monkeypatch):
    # The chat server stands in for the proxy: an HTTP proxy is sent the absolute URL.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert make("http://judge.invalid:8000/v1").compare(["q"], ["long answer"], ["s"]) == [1.0]
    assert [e["path"] for e in server.stats()["log"]] == ["http://judge.invalid:8000/v1/chat/completions"]

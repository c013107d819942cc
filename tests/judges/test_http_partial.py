"""Issue 11, item 7 with the HTTP judge: a server that fails for good after K comparisons.
The first run exits non-zero with OUT absent and OUT.partial holding the finished rows;
after the server recovers the rerun completes OUT, and OUT.judgments.jsonl holds every
comparison exactly once (counted by hand, and equal to an uninterrupted run's log)."""

import json
from collections import Counter

from genhelpers_judges import run_cli, run_rank

# 3 prompts × 4 completions of distinct lengths: tournament = 2·4 − 3 = 5 comparisons per
# prompt, both orders → 10 requests per prompt, 30 in all.
SAMPLES = [{"prompt": f"p{i}", "completions": ["aa", "a" * 9, "a", "a" * 5][i:] + ["aa", "a" * 9, "a", "a" * 5][:i]}
           for i in range(3)]
PAIRS = [{"prompt": f"q{i}", "chosen": "x" * (1 + i % 3), "rejected": "y" * (2 + i % 2)} for i in range(6)]


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def write(path, data):
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def comparisons(log_path):
    keys = [(r["source_row"], r["order"], r["prompt_hash"], r["first_hash"], r["second_hash"])
            for r in rows(log_path)]
    return Counter(keys)


def test_rank_stopped_by_a_dead_server_resumes_to_a_whole_out_and_a_log_without_duplicates(server, tmp_path):
    src = write(tmp_path / "s.jsonl", SAMPLES)
    reference = tmp_path / "reference.jsonl"
    assert run_rank(server.url, src, reference) == 0
    out = tmp_path / "pairs.jsonl"
    # 14 answers: prompt 0 (10 requests) and two comparisons of prompt 1, then down for good.
    server.script(queue=["ok"] * 14, default="503")
    assert run_rank(server.url, src, out) == 2
    partial = tmp_path / "pairs.jsonl.partial"
    assert not out.exists() and [r["meta"]["source_row"] for r in rows(partial)] == [0]
    server.script()                                   # the server recovers
    assert run_rank(server.url, src, out) == 0
    assert server.requests == 30 - 14                 # the cache kept every answer
    assert out.read_text() == reference.read_text() and not partial.exists()
    log = comparisons(tmp_path / "pairs.jsonl.judgments.jsonl")
    assert sum(log.values()) == 30 and max(log.values()) == 1   # 3 prompts × 5 comparisons × 2 orders, once each
    assert log == comparisons(tmp_path / "reference.jsonl.judgments.jsonl")


def test_label_stopped_by_a_dead_server_never_writes_out(server, tmp_path):
    src = write(tmp_path / "pairs.jsonl", PAIRS)
    reference = tmp_path / "reference.jsonl"
    argv = ["label", "--judge", server.url, "--in", src, "--chunk", "2", "--no-progress", "-J", "retries=1",
            "-J", "backoff=0.01", "-J", "backoff_max=0.05", "-J", "concurrency=2", "-J", "logprobs=false"]
    assert run_cli(argv + ["--out", reference]) == 0
    out = tmp_path / "labelled.jsonl"
    server.script(queue=["ok"] * 6, default="503")    # chunk 1 (2 pairs × 2 orders), then 2 of chunk 2
    assert run_cli(argv + ["--out", out]) == 2
    assert not out.exists()
    assert [r["meta"]["source_row"] for r in rows(tmp_path / "labelled.jsonl.partial")] == [0, 1]
    server.script()
    assert run_cli(argv + ["--out", out]) == 0
    assert server.requests == 12 - 6
    assert out.read_text() == reference.read_text()
    log = comparisons(tmp_path / "labelled.jsonl.judgments.jsonl")
    assert sum(log.values()) == 12 and max(log.values()) == 1

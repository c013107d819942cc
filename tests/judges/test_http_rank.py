"""`robustpo rank` with the HTTP judge against the real local server: the default on-disk
cache, and a server that goes down mid-run (clear error, everything judged kept, a rerun
pays only for what is missing)."""

import json

from genhelpers_judges import run_cli as run

# 3 prompts × 4 completions of distinct lengths: tournament = 2·4 − 3 = 5 comparisons
# per prompt, both orders → 10 requests per prompt, 30 in all.
SAMPLES = [{"prompt": f"p{i}", "completions": ["aa", "a" * 9, "a", "a" * 5][i:] + ["aa", "a" * 9, "a", "a" * 5][:i]}
           for i in range(3)]


def rank_argv(server, src, out, *extra):
    return ["rank", "--judge", server.url, "--in", src, "--out", out, "--chunk", "1", "--no-progress",
            "-J", "retries=1", "-J", "backoff=0.01", "-J", "concurrency=2", "-J", "logprobs=false", *extra]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rank_with_http_judge_uses_its_cache_on_a_rerun(server, tmp_path):
    src, out = write(tmp_path / "s.jsonl", SAMPLES), tmp_path / "pairs.jsonl"
    assert run(rank_argv(server, src, out)) == 0
    assert server.requests == 30
    pairs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a" * 9, "a")] * 3
    first = out.read_text()
    server.script()
    assert run(rank_argv(server, src, out, "--overwrite")) == 0  # start again: all verdicts come from the cache
    assert server.requests == 0 and out.read_text() == first


def test_server_down_mid_run_stops_cleanly_and_the_rerun_pays_only_for_the_rest(server, tmp_path, capsys):
    src = write(tmp_path / "s.jsonl", SAMPLES)
    reference = tmp_path / "reference.jsonl"
    assert run(rank_argv(server, src, reference)) == 0

    out = tmp_path / "pairs.jsonl"
    server.script(queue=["ok"] * 14, default="503")  # one prompt and a bit, then down
    assert run(rank_argv(server, src, out)) == 2
    err = capsys.readouterr().err
    assert "robustpo rank: error: judge endpoint" in err and "rerun to continue" in err
    state = [json.loads(x) for x in (tmp_path / "pairs.jsonl.state.jsonl").read_text().splitlines()]
    assert [s["unit"] for s in state] == [0]                    # the first prompt was finished and kept
    cache = (tmp_path / "pairs.jsonl.judge-cache.jsonl").read_text().splitlines()
    assert len(cache) == 14                                     # every answered comparison kept
    server.script()                                             # the server is back
    assert run(rank_argv(server, src, out)) == 0
    assert server.requests == 30 - 14
    assert out.read_text() == reference.read_text().replace(str(reference), str(out))

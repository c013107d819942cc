"""`robustpo rank` and `robustpo label` end to end through the CLI, including a SIGKILLed
rank run that resumes. Judge truth (judge_rules.py): the longer response is better."""

import os
import random
import subprocess

import pytest
import torch

from genhelpers import HERE, cli_command, read_jsonl, run_cli, write_jsonl
from testdata import kill_when
from robustpo.generate.rank import rank_file
from robustpo.judges.reward import FamilyJudge

RULES = HERE / "judge_rules.py"
LONGER = f"function:{RULES}:longer_is_better"


def samples(n_prompts=4, n=6, seed=0):
    rng = random.Random(seed)
    rows = []
    for p in range(n_prompts):
        comps = ["x" * k for k in rng.sample(range(1, 40), n)]
        rows.append({"prompt": f"prompt {p}", "completions": comps})
    return rows


def test_tournament_best_vs_worst(tmp_path):
    rows = samples()
    src = write_jsonl(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    assert run_cli(["rank", "--judge", LONGER, "--in", src, "--out", out, "--no-progress"]) == 0
    pairs = read_jsonl(out)
    assert len(pairs) == 4
    for row, pair in zip(rows, pairs):
        comps = row["completions"]
        assert pair["prompt"] == row["prompt"]
        assert pair["chosen"] == max(comps, key=len) and pair["rejected"] == min(comps, key=len)
        m = pair["meta"]
        assert m["comparisons"] == 2 * 6 - 3 and m["judge_calls"] == 2 * (2 * 6 - 3)  # both orders
        assert m["chosen_index"] == comps.index(pair["chosen"])
        assert m["rejected_index"] == comps.index(pair["rejected"])
        assert m["disagreements"] == 0
    # Every judge call is recorded: 4 prompts × 9 comparisons × 2 orders.
    log = read_jsonl(str(out) + ".judgments.jsonl")
    assert len(log) == 72 and {r["order"] for r in log} == {"ab", "ba"}


@pytest.mark.parametrize("selection", ["best_worst", "best_vs_rest", "adjacent"])
def test_insertion_full_ranking_and_pair_selection(tmp_path, selection):
    rows = samples(n_prompts=2, n=5, seed=3)
    src = write_jsonl(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    assert run_cli(["rank", "--judge", LONGER, "--in", src, "--out", out, "--strategy", "insertion",
                    "--pairs", selection, "--single-order", "--no-progress"]) == 0
    pairs = read_jsonl(out)
    expected = []
    for row in rows:
        by_len = sorted(row["completions"], key=len, reverse=True)
        if selection == "best_worst":
            expected += [(by_len[0], by_len[-1])]
        elif selection == "best_vs_rest":
            expected += [(by_len[0], x) for x in by_len[1:]]
        else:
            expected += list(zip(by_len, by_len[1:]))
    assert [(p["chosen"], p["rejected"]) for p in pairs] == expected
    first = pairs[0]["meta"]
    assert [rows[0]["completions"][i] for i in first["ranking"]] == sorted(rows[0]["completions"], key=len,
                                                                             reverse=True)
    assert 4 <= first["comparisons"] <= 8 and first["judge_calls"] == first["comparisons"]  # single order


def test_duplicates_are_ranked_once_and_all_equal_gives_no_pair(tmp_path):
    rows = [{"prompt": "p", "completions": ["bb", "a", "bb", "ccc"]}, {"prompt": "q", "completions": ["z", "z"]}]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    summary = rank_file(str(src), str(out), __import__("robustpo.judges", fromlist=["x"]).load_judge(LONGER),
                        progress=False)
    pairs = read_jsonl(out)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("ccc", "a")]
    assert pairs[0]["meta"]["n_unique"] == 3 and pairs[0]["meta"]["comparisons"] == 2 * 3 - 3
    assert summary.no_pair == 1 and summary.units == 2
    # The pair-less prompt is still marked done: a rerun judges nothing.
    again = rank_file(str(src), str(out), __import__("robustpo.judges", fromlist=["x"]).load_judge(LONGER),
                      progress=False)
    assert again.units == 0 and again.resumed == 2


class LengthFamily:
    """Two members scoring a response by its length and by minus its length."""

    name = "length"

    def score(self, prompts, responses):
        return torch.tensor([[float(len(r)), -float(len(r))] for r in responses])


def test_pointwise_baseline_takes_best_and_worst_by_score(tmp_path):
    rows = samples(n_prompts=2, n=5, seed=4)
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    rank_file(str(src), str(out), FamilyJudge(LengthFamily(), member=1), strategy="pointwise", progress=False)
    pairs = read_jsonl(out)
    for row, pair in zip(rows, pairs):  # member 1 rewards shortness
        assert (pair["chosen"], pair["rejected"]) == (min(row["completions"], key=len),
                                                      max(row["completions"], key=len))
        assert pair["meta"]["comparisons"] == 0 and pair["meta"]["judge_calls"] == 5


def test_killed_rank_run_resumes_without_repeating_finished_prompts(tmp_path, monkeypatch):
    rows = samples(n_prompts=12, n=4, seed=5)
    src = write_jsonl(tmp_path / "samples.jsonl", rows)
    out, calls = tmp_path / "pairs.jsonl", tmp_path / "calls.jsonl"
    state = tmp_path / "pairs.jsonl.state.jsonl"
    argv = ["rank", "--judge", f"function:{RULES}:slow_logged_longer", "--in", src, "--out", out, "--chunk", "2",
            "--no-progress"]
    env = dict(os.environ, RANK_CALL_LOG=str(calls), RUN="1", OMP_NUM_THREADS="1")
    reference = tmp_path / "reference.jsonl"
    monkeypatch.setenv("RANK_CALL_LOG", str(tmp_path / "ref-calls.jsonl"))
    assert run_cli([reference if a == out else a for a in argv]) == 0  # uninterrupted, same judge
    proc = subprocess.Popen(cli_command(argv), env=env, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: state.exists() and len(state.read_text().splitlines()) >= 4, timeout=60)
    finished = {r["unit"] for r in read_jsonl(state)}
    assert 4 <= len(finished) < 12, "the run must be killed partway"
    assert not out.exists() and (tmp_path / "pairs.jsonl.partial").exists()  # nothing looks complete

    env["RUN"] = "2"
    assert subprocess.run(cli_command(argv), env=env, stderr=subprocess.DEVNULL).returncode == 0
    second = {c["prompt"] for c in read_jsonl(calls) if c["run"] == "2"}
    assert second.isdisjoint({rows[u]["prompt"] for u in finished})  # finished prompts not judged again
    assert out.read_text() == reference.read_text()                   # no duplicates, same output


def test_label_swaps_when_the_judge_prefers_the_rejected(tmp_path):
    pairs = [{"prompt": "p", "chosen": "long answer", "rejected": "short"},
             {"prompt": "q", "chosen": "s", "rejected": "longer", "meta": {"origin": "x"}},
             {"prompt": "r", "chosen": "same", "rejected": "four"},
             {"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi\n\nAssistant: hello there"}]
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "labelled.jsonl"
    assert run_cli(["label", "--judge", LONGER, "--in", src, "--out", out, "--no-progress"]) == 0
    got = read_jsonl(out)
    assert [(r["chosen"], r["rejected"]) for r in got] == [("long answer", "short"), ("longer", "s"),
                                                            ("same", "four"), (" hello there", " yo")]
    assert got[3]["prompt"] == "\n\nHuman: hi\n\nAssistant:"  # HH-style row: the prompt split off
    assert [r["meta"]["label"]["swapped"] for r in got] == [False, True, False, True]
    assert [r["meta"]["label"]["prob_chosen_better"] for r in got] == [1.0, 1.0, 0.5, 1.0]
    assert [r["meta"]["label"]["tie"] for r in got] == [False, False, True, False]  # equal lengths: kept as is
    assert got[1]["meta"]["origin"] == "x"
    dropped = tmp_path / "dropped.jsonl"
    assert run_cli(["label", "--judge", LONGER, "--in", src, "--out", dropped, "--ties", "drop",
                    "--no-progress"]) == 0
    assert len(read_jsonl(dropped)) == 3


def test_bad_pairs_and_changed_settings_are_clear_errors(tmp_path, capsys):
    src = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a"}])
    assert run_cli(["label", "--judge", LONGER, "--in", src, "--out", tmp_path / "o.jsonl"]) == 2
    assert "pairs.jsonl, row 1, field 'rejected': missing field" in capsys.readouterr().err
    s = write_jsonl(tmp_path / "s.jsonl", samples(n_prompts=2))
    out = tmp_path / "p.jsonl"
    assert run_cli(["rank", "--judge", LONGER, "--in", s, "--out", out, "--no-progress"]) == 0
    assert run_cli(["rank", "--judge", LONGER, "--in", s, "--out", out, "--strategy", "insertion"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert run_cli(["rank", "--judge", LONGER, "--in", s, "--out", out, "--strategy", "insertion",
                    "--overwrite", "--no-progress"]) == 0


def test_resumable_output_drops_rows_of_an_unfinished_unit_and_torn_lines(tmp_path):
    from robustpo.generate.resume import ResumableOutput

    out = tmp_path / "pairs.jsonl"
    partial = tmp_path / "pairs.jsonl.partial"
    with ResumableOutput(out, {"a": 1}) as res:
        res.finish(0, [{"x": 0, "meta": {"source_row": 0}}], {})
        res.finish(1, [{"x": 1, "meta": {"source_row": 1}}, {"x": 2, "meta": {"source_row": 1}}], {})
    assert not out.exists()  # not complete(): the rows stay in OUT.partial
    # A kill after unit 2's first row, before its state line, in the middle of its second row:
    with open(partial, "a") as f:
        f.write('{"x": 3, "meta": {"source_row": 2}}\n{"x": 4, "me')
    with open(str(out) + ".state.jsonl", "a") as f:
        f.write('{"unit": 2, "sett')
    with ResumableOutput(out, {"a": 1}) as res:
        assert sorted(res.done) == [0, 1] and res.rows_resumed == 3
        res.complete()
    assert [r["x"] for r in read_jsonl(out)] == [0, 1, 2] and not partial.exists()
    # A file this command did not write is never silently rewritten.
    foreign = write_jsonl(tmp_path / "foreign.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    from robustpo.errors import ConfigError

    with pytest.raises(ConfigError, match="not written by this command"):
        ResumableOutput(foreign, {"a": 1})

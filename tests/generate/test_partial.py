"""Issue 11, item 7: a rank or label that stops leaves its rows in OUT.partial, never in OUT.

Judge (judge_rules.fails_on_prompt): the longer response is better, and it raises on the
prompt named by $FAIL_PROMPT, as a judge that went down would."""

import json

import pytest

from genhelpers import HERE, read_jsonl, run_cli, write_jsonl

FAILS = f"function:{HERE / 'judge_rules.py'}:fails_on_prompt"
SAMPLES = [{"prompt": f"p{i}", "completions": ["a" * (1 + (i + k) % 4) for k in range(4)]} for i in range(4)]
PAIRS = [{"prompt": f"p{i}", "chosen": "x" * (1 + i % 3), "rejected": "y" * (3 - i % 3)} for i in range(4)]


def rank(src, out, *extra):
    return run_cli(["rank", "--judge", FAILS, "--in", src, "--out", out, "--chunk", "1", "--no-progress", *extra])


def label(src, out, *extra):
    return run_cli(["label", "--judge", FAILS, "--in", src, "--out", out, "--chunk", "1", "--no-progress", *extra])


@pytest.mark.parametrize("command,rows", [(rank, SAMPLES), (label, PAIRS)])
def test_a_stopped_run_leaves_only_a_partial_and_a_rerun_completes_it(tmp_path, monkeypatch, command, rows):
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    reference, out = tmp_path / "reference.jsonl", tmp_path / "out.jsonl"
    assert command(src, reference) == 0
    monkeypatch.setenv("FAIL_PROMPT", "p2")            # rows 0 and 1 finish, row 2 fails
    assert command(src, out) == 2
    partial = tmp_path / "out.jsonl.partial"
    assert not out.exists()
    assert [r["meta"]["source_row"] for r in read_jsonl(partial)] == [0, 1]
    monkeypatch.delenv("FAIL_PROMPT")
    assert command(src, out) == 0
    assert out.read_text() == reference.read_text() and not partial.exists()

    # The input grows: the finished OUT goes back to OUT.partial until the new row is done.
    grown = write_jsonl(tmp_path / "in.jsonl", rows + [dict(rows[0], prompt="p9")])
    monkeypatch.setenv("FAIL_PROMPT", "p9")
    assert command(grown, out) == 2
    assert not out.exists() and len(read_jsonl(partial)) == len(read_jsonl(reference))
    monkeypatch.delenv("FAIL_PROMPT")
    assert command(grown, out) == 0
    assert [r["meta"]["source_row"] for r in read_jsonl(out)] == [0, 1, 2, 3, 4] and not partial.exists()


def test_a_finished_out_is_left_alone_by_a_refused_rerun(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", SAMPLES)
    out = tmp_path / "out.jsonl"
    assert rank(src, out) == 0
    done = out.read_text()
    write_jsonl(src, [dict(SAMPLES[0], prompt="changed")] + SAMPLES[1:])
    assert rank(src, out) == 2
    assert "changed since" in capsys.readouterr().err
    assert out.read_text() == done and not (tmp_path / "out.jsonl.partial").exists()


def test_a_deleted_out_is_not_taken_for_finished_rows(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", SAMPLES)
    out = tmp_path / "out.jsonl"
    assert rank(src, out) == 0
    out.unlink()                                       # the state still says four rows are done
    assert rank(src, out) == 2
    err = capsys.readouterr().err
    assert "holds 0 rows of input row 1, but" in err and "--overwrite" in err
    assert rank(src, out, "--overwrite") == 0 and len(read_jsonl(out)) == 4


def test_both_out_and_partial_present_is_refused(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", SAMPLES)
    out = tmp_path / "out.jsonl"
    assert rank(src, out) == 0
    (tmp_path / "out.jsonl.partial").write_text(json.dumps({"x": 1}) + "\n")
    assert rank(src, out) == 2
    assert "both" in capsys.readouterr().err

"""Issue 11, item 6 (files): broken files are refused before any work, naming the right row;
`robustpo validate` lists every problem."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from robustpo.data.io import read_records
from robustpo.data.schema import load_preferences
from robustpo.errors import DataError

from testdata import REPO

ROWS = [{"prompt": f"Q{i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(40)]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def robustpo(*args):
    return subprocess.run([sys.executable, "-m", "robustpo.cli", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True)


@pytest.mark.parametrize("name", ["pairs.jsonl.gz", "pairs.json.gz"])
def test_truncated_gzip_is_refused_not_read_short(tmp_path, name):
    text = jsonl(ROWS * 50) if name.endswith(".jsonl.gz") else json.dumps(ROWS * 50)
    whole = gzip.compress(text.encode())
    path = tmp_path / name
    path.write_bytes(whole[:len(whole) // 2])      # a download cut in half
    with pytest.raises(DataError, match=r"truncated gzip file: .*nothing was read from it") as e:
        load_preferences(str(path))
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    path.write_bytes(whole)                        # the complete file reads in full
    assert len(load_preferences(str(path))[0]) == 2000


def test_corrupt_gzip_is_refused(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match=r"pairs.jsonl.gz: corrupt gzip file"):
        read_records(path)


def test_invalid_utf8_names_the_row(tmp_path):
    # line 4 (after a blank line 3) holds a Latin-1 byte: JSONL rows are numbered by line
    lines = [json.dumps(ROWS[0]).encode(), json.dumps(ROWS[1]).encode(), b"",
             b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}', json.dumps(ROWS[2]).encode()]
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as e:
        load_preferences(str(path))
    assert str(e.value) == f"{path}, row 4: not valid UTF-8 (byte 0xe9 at column 16)"
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\nQ0,a,b\nQ1,a,b\ncaf\xe9,a,b\n")
    with pytest.raises(DataError) as e:
        load_preferences(str(csv_path))
    assert str(e.value) == f"{csv_path}, row 3: not valid UTF-8 (byte 0xe9 at column 4)"   # the 3rd record


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.json", "bom.csv", "bom.jsonl.gz"])
def test_utf8_bom_is_accepted(tmp_path, name):
    if name.endswith(".csv"):
        body = "prompt,chosen,rejected\n" + "".join(f"{r['prompt']},{r['chosen']},{r['rejected']}\n" for r in ROWS)
    else:
        body = json.dumps(ROWS) if name.endswith(".json") else jsonl(ROWS)
    data = b"\xef\xbb\xbf" + body.encode()      # what Windows editors and spreadsheets write
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert read_records(path) == ROWS
    rows, report = load_preferences(str(path))
    assert report.rows_kept == 40 and rows[0]["prompt"] == "Q0?"


REWARDED = {"chosen_rewards": [1.0, 2.0], "rejected_rewards": [0.0, 0.5]}


@pytest.mark.parametrize("unrewarded_rows", [[0, 1], [5], [39]])
def test_rows_some_with_rewards_and_some_without_are_refused(tmp_path, unrewarded_rows):
    """Today `validate` says "no problems found" and distill training dies at step 2 with KeyError."""
    rows = [r if i in unrewarded_rows else {**r, **REWARDED} for i, r in enumerate(ROWS)]
    path = tmp_path / "mixed.jsonl"
    path.write_text(jsonl(rows))
    first_rewarded = min(set(range(40)) - set(unrewarded_rows)) + 1
    with pytest.raises(DataError) as e:
        load_preferences(str(path))
    assert str(e.value).startswith(f"{path}, row {unrewarded_rows[0] + 1}, field 'chosen_rewards': no "
                                   f"chosen_rewards/rejected_rewards here, but")
    assert f"(the first: row {first_rewarded})" in str(e.value)

    out = robustpo("validate", path)
    assert out.returncode == 1
    for i in unrewarded_rows:
        assert f"row {i + 1}, field 'chosen_rewards': no chosen_rewards" in out.stdout
    assert f"{len(unrewarded_rows)} problem(s)" in out.stdout

    run = tmp_path / "run"
    out = robustpo("train", "recipes/tiny/distill.yaml", f"--data.train={path}", f"--train.output_dir={run}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"row {unrewarded_rows[0] + 1}, field 'chosen_rewards'" in out.stderr.strip().splitlines()[-1]
    assert not run.exists()          # refused before anything was written


def test_a_few_rewarded_rows_among_many_without_are_the_ones_named(tmp_path):
    rows = [{**r, **REWARDED} if i in (7, 20) else r for i, r in enumerate(ROWS)]
    path = tmp_path / "mixed.jsonl"
    path.write_text(jsonl(rows))
    with pytest.raises(DataError, match=r"row 8, field 'chosen_rewards': rewards here, but 38 other rows \(the "
                                        r"first: row 1\) have none"):
        load_preferences(str(path))


@pytest.mark.parametrize("chosen,rejected,message", [
    (1e308, 0.0, "beyond the float32 range"),             # finite in float64, inf in float32
    (-1e39, 0.0, "beyond the float32 range"),
    (3e38, -3e38, "the margin of member 0"),            # each finite in float32, their difference is not
])
def test_rewards_must_be_finite_in_float32(write_jsonl, chosen, rejected, message):
    path = write_jsonl([{**ROWS[0], "chosen_rewards": [1.0], "rejected_rewards": [0.0]},
                        {**ROWS[1], "chosen_rewards": [chosen], "rejected_rewards": [rejected]}])
    with pytest.raises(DataError, match=rf"row 2, field '(chosen|rejected)_rewards': .*{message}"):
        load_preferences(str(path))


def test_large_but_representable_rewards_are_kept(write_jsonl):
    rows, report = load_preferences(str(write_jsonl([{**ROWS[0], "chosen_rewards": [1e38],
                                                      "rejected_rewards": [-1e38]}])))
    assert report.num_members == 1 and rows[0]["chosen_rewards"] == [1e38]


@pytest.mark.parametrize("field,messages,index", [
    ("prompt", [{"role": "system", "content": "be kind"}, {"role": "human", "content": "hi"}], 1),
    ("chosen", [{"role": "assistant", "content": "a"}, {"role": "gpt", "content": "b"}], 1),
    ("rejected", [{"role": "bot", "content": "b"}], 0),
])
def test_unknown_role_names_the_message(write_jsonl, field, messages, index):
    row = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
           "rejected": [{"role": "assistant", "content": "b"}]}
    row[field] = messages
    path = write_jsonl([ROWS[0], ROWS[1], row])
    with pytest.raises(DataError) as e:
        load_preferences(str(path))
    role = messages[index]["role"]
    assert str(e.value) == (f"{path}, row 3, field '{field}': message {index} has unknown role '{role}' (expected "
                            "system, user, assistant or tool)")


def test_validate_lists_every_problem_at_its_own_row(tmp_path):
    """Today a bad row shifts the row number of the next report by one, and cross-row problems
    (K differs) are reported at a row number counted among the good rows only."""
    lines = [json.dumps({**r, **REWARDED}) for r in ROWS[:12]]
    bad = {3: json.dumps({"prompt": "Q", "chosen": "", "rejected": "b", **REWARDED}),          # empty response
           5: "{not json",                                                                   # malformed line
           6: "",                                                                            # blank: no problem
           8: json.dumps({"prompt": "Q", "chosen": 3, "rejected": "b", **REWARDED}),          # wrong type
           10: json.dumps({**ROWS[0], "chosen_rewards": [1, 2, 3], "rejected_rewards": [0, 0, 0]})}  # K=3, not 2
    for i, text in bad.items():
        lines[i] = text
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = robustpo("validate", path)
    assert out.returncode == 1
    listed = [line.strip() for line in out.stdout.splitlines() if line.startswith("  ")]
    assert [p.split(",")[1].split(":")[0].strip() for p in listed] == ["row 4", "row 6", "row 9", "row 11"]
    assert "row 4, field 'chosen': empty response" in listed[0]
    assert "row 6: malformed JSON line" in listed[1]
    assert "row 9, field 'chosen': expected a string" in listed[2]
    assert "row 11, field 'chosen_rewards': has 3 rewards, earlier rows have K=2" in listed[3]
    assert "4 problem(s)" in out.stdout and "no problems found" not in out.stdout

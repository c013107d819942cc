"""Reading every supported source, and the crash-safe writers."""

import gzip
import json

import pytest

from robustpo.data.io import AppendOnlyJsonl, atomic_path, read_records, write_jsonl_atomic
from robustpo.errors import DataError

ROWS = [{"prompt": "p1", "chosen": "a", "rejected": "b"}, {"prompt": "p2", "chosen": "c", "rejected": "d"}]


def test_every_file_format_reads_the_same_rows(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "b.json").write_text(json.dumps({"train": ROWS}))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    (tmp_path / "a.csv").write_text("prompt,chosen,rejected\np1,a,b\np2,c,d\n")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved_dict"))
    for name in ["a.jsonl", "a.jsonl.gz", "a.json", "b.json", "a.parquet", "a.csv", "saved", "saved_dict"]:
        assert read_records(tmp_path / name) == ROWS, name


def test_malformed_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", "chosen": \n')
    with pytest.raises(DataError, match=r"bad.jsonl, row 2: malformed JSON"):
        read_records(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type"):
        read_records(tmp_path / "x.txt")


def test_append_only_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"i": 0}) + "\n" + json.dumps({"i": 1}) + "\n" + '{"i": 2, "tor')
    with AppendOnlyJsonl(path) as out:
        assert out.rows == [{"i": 0}, {"i": 1}]
        out.append({"i": 2})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl_atomic(target, [{"ok": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text() == '{"ok": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_append_only_read_sees_what_a_reopen_keeps_and_changes_nothing(tmp_path):
    """The reader of a partial file (rewards/score.py's shards, generate/resume.py) takes the
    rows a reopen would keep, without cutting the torn line itself."""
    path = tmp_path / "out.jsonl.partial"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "torn')
    before = path.read_bytes()
    assert AppendOnlyJsonl.read(path) == ([{"a": 1}, {"a": 2}], False)
    assert path.read_bytes() == before
    with AppendOnlyJsonl(path) as out:
        assert out.rows == [{"a": 1}, {"a": 2}]
    assert AppendOnlyJsonl.read(path) == ([{"a": 1}, {"a": 2}], True)

"""read_samples / read_pairs name a bad row by its row in the file (1-based; a JSONL file's
blank lines count), as data/schema.py's errors do, plus the file and the field."""

import json

import pytest

from robustpo.errors import DataError
from robustpo.generate.pairs import read_pairs, read_samples


def _write(path, rows):
    # A blank line before the bad row: its file row (3) differs from its record position (2).
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    return str(path)


def test_read_samples_names_file_row_and_field(tmp_path):
    path = _write(tmp_path / "samples.jsonl", [{"prompt": "p", "completions": ["a", "b"]},
                                               {"prompt": "q", "completions": "not a list"}])
    with pytest.raises(DataError) as e:
        read_samples(path)
    assert (e.value.file, e.value.row, e.value.field) == (path, 2, "completions")
    assert f"{path}, row 3, field 'completions'" in str(e.value)


def test_read_pairs_names_file_row_and_field(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                             {"prompt": "q", "chosen": "a", "rejected": "  "}])
    with pytest.raises(DataError) as e:
        read_pairs(path)
    assert (e.value.file, e.value.row, e.value.field) == (path, 2, "rejected")
    assert f"{path}, row 3, field 'rejected'" in str(e.value)

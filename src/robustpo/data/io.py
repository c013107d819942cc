"""Reading records and writing outputs safely.

Reading: JSONL / JSON (optionally gzipped), Parquet, CSV, a folder saved with
`datasets.save_to_disk`, or a hub id (needs a network). Every reader returns plain
dicts so that validation (data/schema.py) sees one shape whatever the source.

Writing: outputs are either written whole and atomically (temp file in the same folder,
fsync, rename), or appended one flushed line at a time so that a killed job leaves only
complete rows behind plus at most one torn last line, which `AppendOnlyJsonl` cuts off on
reopen. Together these give "no partial output ever looks complete" and "killed jobs
resume".
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from robustpo.errors import DataError

JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with _open_text(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"malformed JSON line ({e.msg} at column {e.colno})", file=str(path), row=i) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", file=str(path), row=i)
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    with _open_text(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # A .json file holding JSON Lines is common enough to accept.
        if e.msg == "Extra data":
            return _read_jsonl(path)
        raise DataError(f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno})", file=str(path)) from None
    if isinstance(data, dict):
        # {"train": [...]} or {"data": [...]}: take the single list-valued entry.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError("a JSON object file must hold exactly one list of rows", file=str(path))
        data = lists[0]
    if not isinstance(data, list):
        raise DataError("expected a list of JSON objects", file=str(path))
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", file=str(path), row=i)
    return data


def _rows_from_dataset(ds, name: str, split: str | None) -> list[dict]:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in ds else next(iter(ds))
        if split not in ds:
            raise DataError(f"no split '{split}' (have: {', '.join(ds)})", file=name)
        ds = ds[split]
    return [dict(r) for r in ds]


def read_records(source: str | os.PathLike, *, split: str | None = None) -> list[dict]:
    """Read every row of `source` as a dict. Raises DataError naming the file and row."""
    path = Path(source)
    if path.is_dir():
        import datasets

        if not any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise DataError("folder is not a saved `datasets` dataset (no dataset_info.json / dataset_dict.json)",
                            file=str(path))
        return _rows_from_dataset(datasets.load_from_disk(str(path)), str(path), split)
    if path.exists():
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return _read_jsonl(path)
        if name.endswith((".json", ".json.gz")):
            return _read_json(path)
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if name.endswith(".csv"):
            import csv

            with open(path, newline="", encoding="utf-8") as f:
                return [dict(r) for r in csv.DictReader(f)]
        raise DataError("unknown file type (expected .jsonl, .json, .parquet, .csv, optionally .gz for JSON)",
                        file=str(path))
    if str(source).count("/") <= 1 and not str(source).startswith((".", "/")) and not path.suffix:
        import datasets

        try:
            ds = datasets.load_dataset(str(source), split=split)
        except Exception as e:  # network, missing repo, ...: say what was tried
            raise DataError(f"not a local file, and loading it as a hub dataset failed: {e}", file=str(source)) from e
        return _rows_from_dataset(ds, str(source), split)
    raise DataError("no such file or folder", file=str(source))


# ---------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on clean exit, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; on clean exit it replaces `path` whole."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


class AppendOnlyJsonl:
    """An output file written one flushed JSON line per finished unit of work.

    On open, complete lines already present are parsed into `self.rows`; a torn last line
    (a job killed mid-write) is truncated away, so a resumed job appends after the last
    complete row and never duplicates or corrupts one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        good_bytes = 0
        if self.path.exists():
            with open(self.path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break
                    try:
                        self.rows.append(json.loads(raw))
                    except json.JSONDecodeError:
                        break
                    good_bytes += len(raw)
            if good_bytes != self.path.stat().st_size:
                with open(self.path, "r+b") as f:
                    f.truncate(good_bytes)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def __enter__(self) -> "AppendOnlyJsonl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fingerprint(*parts: Any) -> str:
    """A stable short hash of JSON-serialisable parts (cache keys)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a file's or folder's bytes (folders: every file, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]

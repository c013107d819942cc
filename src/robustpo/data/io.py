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

import codecs
import contextlib
import gzip
import hashlib
import io
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from robustpo.errors import DataError

JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")


class Records(list):
    """The rows of a source (plain dicts), with `file_rows`: each record's 0-based row in the
    file, as errors report it (1-based) — its line in JSONL (blank lines are skipped but
    counted), its position in a JSON array, Parquet table or CSV body."""

    def __init__(self, rows=(), file_rows=None):
        super().__init__(rows)
        self.file_rows = list(range(len(self))) if file_rows is None else list(file_rows)

    def head(self, n: int) -> "Records":
        return Records(self[:n], self.file_rows[:n])


def _gzip_problem(e: Exception, path: Path, after: int | None) -> DataError:
    where = f" after row {after}" if after else ""
    if isinstance(e, EOFError):
        return DataError(f"truncated gzip file: the data stop{where}, before the end-of-stream marker (an incomplete "
                         "download or copy?); nothing was read from it", file=str(path))
    return DataError(f"corrupt gzip file ({e}){where}; nothing was read from it", file=str(path))


def _utf8_problem(e: UnicodeDecodeError, line: bytes) -> str:
    return f"not valid UTF-8 (byte 0x{line[e.start]:02x} at column {len(line[:e.start].decode('utf-8')) + 1})"


def _read_bytes(path: Path) -> bytes:
    """The whole file (gunzipped), or DataError for a truncated or corrupt .gz."""
    if not path.name.endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as e:
        raise _gzip_problem(e, path, None) from None


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 text without a leading BOM; DataError naming the line of an invalid byte."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = data.count(b"\n", 0, e.start)
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        line = data[start:end if end >= 0 else len(data)]
        local = UnicodeDecodeError(e.encoding, line, e.start - start, e.end - start, e.reason)
        raise DataError(f"line {line_no + 1}: {_utf8_problem(local, line)}", file=str(path)) from None


def _lines(path: Path, problems: list | None) -> Iterator[tuple[int, str]]:
    """(0-based line number, text) of each line, decoded one at a time so that an invalid byte
    names its line; a UTF-8 BOM at the start is dropped. With `problems`, undecodable lines
    are recorded there as DataErrors and skipped instead of raised."""
    opener = gzip.open if path.name.endswith(".gz") else open
    i = -1
    try:
        with opener(path, "rb") as f:
            for i, raw in enumerate(f):
                if i == 0 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    yield i, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    error = DataError(_utf8_problem(e, raw), file=str(path), row=i)
                    if problems is None:
                        raise error from None
                    problems.append(error)
    except (EOFError, OSError, zlib.error) as e:
        if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile):
            raise
        raise _gzip_problem(e, path, i + 1 if i >= 0 else None) from None


def _read_jsonl(path: Path, problems: list | None = None) -> Records:
    """One JSON object per line. With `problems` (a list), bad lines are recorded there and
    skipped, so that a caller can report every one; otherwise the first raises."""
    rows, file_rows = [], []
    for i, line in _lines(path, problems):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", file=str(path), row=i)
        except json.JSONDecodeError as e:
            error = DataError(f"malformed JSON line ({e.msg} at column {e.colno})", file=str(path), row=i)
        except DataError as e:
            error = e
        else:
            rows.append(row)
            file_rows.append(i)
            continue
        if problems is None:
            raise error from None
        problems.append(error)
    return Records(rows, file_rows)


def _read_json(path: Path, problems: list | None = None) -> Records:
    text = _decode(_read_bytes(path), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # A .json file holding JSON Lines is common enough to accept.
        if e.msg == "Extra data":
            return _read_jsonl(path, problems)
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
    return Records(data)


def _read_csv(path: Path) -> Records:
    """CSV with a header line; rows are numbered from the first record after the header. A
    UTF-8 BOM (as spreadsheet programs write) is accepted."""
    import csv

    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # The record holding the bad byte: count the records in the text before it.
        before = data[:e.start].decode("utf-8")
        records = list(csv.reader(io.StringIO(before, newline="")))
        row = len(records) - 1 - (0 if before.endswith(("\n", "\r")) or not before else 1)
        line = data[data.rfind(b"\n", 0, e.start) + 1:]
        line = line.split(b"\n", 1)[0]
        column = e.start - (len(data) - len(data[data.rfind(b"\n", 0, e.start) + 1:]))
        bad = UnicodeDecodeError(e.encoding, line, column, column + 1, e.reason)
        raise DataError(_utf8_problem(bad, line), file=str(path), row=max(row, 0)) from None
    return Records(dict(r) for r in csv.DictReader(io.StringIO(text, newline="")))


def _rows_from_dataset(ds, name: str, split: str | None) -> list[dict]:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in ds else next(iter(ds))
        if split not in ds:
            raise DataError(f"no split '{split}' (have: {', '.join(ds)})", file=name)
        ds = ds[split]
    return [dict(r) for r in ds]


def read_records(source: str | os.PathLike, *, split: str | None = None, problems: list | None = None) -> Records:
    """Read every row of `source` as a dict. Raises DataError naming the file and row.

    With `problems` (a list), a JSONL file's unreadable lines (malformed JSON, invalid UTF-8)
    are appended there as DataErrors and skipped, so that `robustpo validate` can list them all."""
    path = Path(source)
    if path.is_dir():
        import datasets

        if not any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise DataError("folder is not a saved `datasets` dataset (no dataset_info.json / dataset_dict.json)",
                            file=str(path))
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001  (a folder with missing or broken arrow files)
            raise DataError(f"cannot load the saved dataset ({type(e).__name__}: {e})", file=str(path)) from None
        return Records(_rows_from_dataset(ds, str(path), split))
    if path.exists():
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return _read_jsonl(path, problems)
        if name.endswith((".json", ".json.gz")):
            return _read_json(path, problems)
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                return Records(pq.read_table(path).to_pylist())
            except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds for a broken file)
                raise DataError(f"not a readable Parquet file ({e})", file=str(path)) from None
        if name.endswith(".csv"):
            return _read_csv(path)
        raise DataError("unknown file type (expected .jsonl, .json, .parquet, .csv, optionally .gz for JSON)",
                        file=str(path))
    if str(source).count("/") <= 1 and not str(source).startswith((".", "/")) and not path.suffix:
        import datasets

        try:
            ds = datasets.load_dataset(str(source), split=split)
        except Exception as e:  # network, missing repo, ...: say what was tried
            raise DataError(f"not a local file, and loading it as a hub dataset failed: {e}", file=str(source)) from e
        return Records(_rows_from_dataset(ds, str(source), split))
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


def partial_path(out: str | os.PathLike) -> Path:
    """Where a resumable job (generate, score, rank, label) keeps its rows while unfinished:
    `OUT.partial`, so that no partial output ever looks complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


class PartialOutput:
    """OUT written through OUT.partial by a job that a rerun resumes (generate, rank, label): the
    one rule for where its rows are and when OUT appears. `overwrite` removes OUT, OUT.partial and
    `also` (the job's own side files). Both present is refused: which is current is unknown.
    `source` holds the rows done so far: OUT.partial, or a finished OUT, read where it is;
    `reopen()` moves a finished OUT back to OUT.partial before new work, so that a job that stops
    leaves no OUT; `complete()` renames OUT.partial to OUT (atomic). `keep_out`: `overwrite`
    leaves OUT where it is until `complete()` replaces it, so that a job that fails keeps the
    earlier output (`score`, which keeps its raw rewards in side files and writes OUT.partial
    whole once every row is scored; a resumable row-by-row job would rather start clean)."""

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, also: Iterable[Path] = (),
                 keep_out: bool = False):
        from robustpo.errors import ConfigError

        self.path = Path(out)
        self.partial = partial_path(self.path)
        if overwrite:
            for p in ([] if keep_out else [self.path]) + [self.partial, *also]:
                Path(p).unlink(missing_ok=True)
        if self.path.exists() and self.partial.exists():
            raise ConfigError(f"both {self.path} and {self.partial} exist, so which one is current is unknown; "
                              "move one away, or use --overwrite to start again")

    @property
    def finished(self) -> bool:
        """The rows done are in a finished OUT (no OUT.partial)."""
        return self.path.exists() and not self.partial.exists()

    @property
    def source(self) -> Path:
        return self.path if self.finished else self.partial

    def reopen(self) -> None:
        if self.finished:
            os.replace(self.path, self.partial)

    def complete(self) -> None:
        if self.partial.exists():
            os.replace(self.partial, self.path)


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
        if self.path.exists():
            self.rows, good_bytes = self._complete_lines(self.path)
            if good_bytes != self.path.stat().st_size:
                with open(self.path, "r+b") as f:
                    f.truncate(good_bytes)
        self._f = open(self.path, "a", encoding="utf-8")

    @staticmethod
    def _complete_lines(path: Path) -> tuple[list[dict], int]:
        """The rows of the complete lines at the start of `path`, and the bytes they take."""
        rows, good_bytes = [], 0
        with open(path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    rows.append(json.loads(raw))
                except json.JSONDecodeError:
                    break
                good_bytes += len(raw)
        return rows, good_bytes

    @classmethod
    def read(cls, path: str | os.PathLike) -> tuple[list[dict], bool]:
        """The rows a reopen would keep (complete lines; a torn last line is left out), and
        whether nothing follows them, without opening the file for writing or changing it:
        for reading another process's output, or deciding before writing."""
        rows, good_bytes = cls._complete_lines(Path(path))
        return rows, good_bytes == Path(path).stat().st_size

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


def sampled_fingerprint(files: Iterable[tuple[str, Path]], *, sample: int | None = None,
                        whole_up_to: int = -1) -> str:
    """A short hash of model files, cheap for multi-GB weights. `files`: (name, path) pairs,
    hashed in the order given, each as its name and then either all its bytes (`sample` None),
    or its size and, unless the size is at most `whole_up_to` (then all its bytes), its first
    and last `sample` bytes: a retrained or swapped checkpoint differs there too.

    The reward-family manifests (rewards/family.py) and the reference log-prob cache keys
    (train/refcache.py) are made with it; changing how it hashes invalidates both."""
    h = hashlib.sha256()
    for name, p in files:
        h.update(name.encode())
        if sample is None:
            h.update(Path(p).read_bytes())
            continue
        size = Path(p).stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as f:
            if size <= whole_up_to:
                h.update(f.read())
                continue
            h.update(f.read(sample))
            f.seek(max(0, size - sample))
            h.update(f.read(sample))
    return h.hexdigest()[:16]


def check_writable(path: str | os.PathLike, key: str) -> None:
    """ConfigError (naming `key`) unless folder `path` exists and can be written, or can be
    created: its nearest existing ancestor is a folder where a file can be made. Writes nothing
    that stays (the probe is an unnamed temporary file)."""
    from robustpo.errors import ConfigError

    target = Path(path).absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{key}: {path} is a file, not a folder")
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: {path} cannot be created: {probe} is a file")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"{key}: {path} cannot be written ({e.strerror or e} in {probe})") from None

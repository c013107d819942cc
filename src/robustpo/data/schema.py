"""Validation of canonical preference rows, and the one entry point that loads them.

Every check names the file, the row and the field, and runs before any model is loaded,
so bad data never crashes deep inside training. Identical chosen and rejected responses
carry no preference: they are dropped and counted, or an error under `strict`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from robustpo.data.formats import to_canonical
from robustpo.data.io import read_records
from robustpo.errors import DataError


@dataclass
class DataReport:
    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped_identical: int = 0
    dropped_empty: int = 0
    formats: Counter = field(default_factory=Counter)
    num_members: int | None = None      # K of chosen_rewards / rejected_rewards, if present
    has_reference_samples: bool = False

    def summary(self) -> str:
        fmts = ", ".join(f"{k}: {v}" for k, v in sorted(self.formats.items()))
        s = f"{self.source}: {self.rows_read} rows read, {self.rows_kept} kept ({fmts})"
        if self.dropped_identical:
            s += f"; {self.dropped_identical} dropped with identical chosen and rejected"
        if self.dropped_empty:
            s += f"; {self.dropped_empty} dropped with an empty response"
        if self.num_members is not None:
            s += f"; rewards from K={self.num_members} members"
        return s


ROLES = ("system", "user", "assistant", "tool")
REWARD_KEYS = ("chosen_rewards", "rejected_rewards")
FLOAT32_MAX = 3.4028234663852886e38    # numpy.finfo(float32).max: the training maths runs in float32


def _check_messages(value: list, *, file, row, field_name) -> None:
    """Each message is {role: str, content: str} with a known role. Messages are numbered from
    0 (`message 0` is the first), in training rows and prompt files alike."""
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"message {j} must be {{'role': str, 'content': str}}", file=file, row=row,
                            field=field_name)
        if m["role"] not in ROLES:
            raise DataError(f"message {j} has unknown role {m['role']!r} (expected {', '.join(ROLES[:-1])} or "
                            f"{ROLES[-1]})", file=file, row=row, field=field_name)


def _check_text(value, *, file, row, field_name):
    """A response is a non-empty string or a non-empty list of {role, content} messages; a
    training row's prompt may be empty (a pair without context), never malformed."""
    if isinstance(value, str):
        if field_name != "prompt" and not value.strip():
            raise DataError("empty response", file=file, row=row, field=field_name)
        return
    if isinstance(value, list):
        if not value and field_name != "prompt":
            raise DataError("empty message list", file=file, row=row, field=field_name)
        _check_messages(value, file=file, row=row, field_name=field_name)
        if field_name != "prompt" and not any(m["content"].strip() for m in value):
            raise DataError("empty response", file=file, row=row, field=field_name)
        return
    raise DataError(f"expected a string or a list of messages, got {type(value).__name__}", file=file, row=row,
                    field=field_name)


def check_prompt(value, *, file, row) -> None:
    """A prompt to sample from (`robustpo generate`, `rank`, `label`, `eval`): the training-row
    rule of `_check_text` (messages numbered from 0, known roles), and not empty: there is
    nothing to answer in an empty prompt."""
    if (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
        raise DataError("empty prompt", file=file, row=row, field="prompt")
    _check_text(value, file=file, row=row, field_name="prompt")


def read_prompts(path, *, limit: int | None = None) -> list:
    """The prompts of a prompts file (each row's `prompt`: a string or a list of {role, content}),
    of its first `limit` rows when given. Rows are named by their file row, as in `validate_rows`."""
    rows = read_records(path)
    if limit:
        rows = rows.head(limit)
    if not rows:
        raise DataError("no prompts", file=str(path))
    for row, i in zip(rows, rows.file_rows):
        if "prompt" not in row:
            raise DataError("missing field (each row needs a 'prompt')", file=str(path), row=i, field="prompt")
        check_prompt(row["prompt"], file=str(path), row=i)
    return [row["prompt"] for row in rows]


def _check_rewards(row: dict, report: DataReport, *, file, index):
    """Rewards come in pairs of K finite float32 numbers (that every row or none carries them
    is checked across rows, in `validate_rows`)."""
    present = [k for k in REWARD_KEYS if k in row]
    if not present:
        return
    if len(present) == 1:
        missing = (set(REWARD_KEYS) - set(present)).pop()
        raise DataError("missing field (rewards must come in pairs)", file=file, row=index, field=missing)
    for name in present:
        value = row[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = row[name] = [float(value)]     # one reward model: a bare number is K=1
        if not isinstance(value, list) or not value:
            raise DataError(f"expected a non-empty list of floats, got {type(value).__name__}", file=file,
                            row=index, field=name)
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(f"rewards must be finite numbers, got {v!r}", file=file, row=index, field=name)
            if abs(v) > FLOAT32_MAX:   # finite in float64, infinite in the float32 loss maths
                raise DataError(f"reward {v!r} is beyond the float32 range (±3.4e38) the training maths runs in",
                                file=file, row=index, field=name)
    chosen, rejected = row["chosen_rewards"], row["rejected_rewards"]
    if len(chosen) != len(rejected):
        raise DataError(f"has {len(rejected)} rewards, chosen_rewards has {len(chosen)}", file=file, row=index,
                        field="rejected_rewards")
    for k, (c, r) in enumerate(zip(chosen, rejected)):
        if abs(c - r) > FLOAT32_MAX:   # the margin Δr = r(chosen) − r(rejected) must exist in float32 too
            raise DataError(f"the margin of member {k} ({c!r} − {r!r}) overflows float32", file=file, row=index,
                            field="chosen_rewards")
    if report.num_members is None:
        report.num_members = len(chosen)
    elif len(chosen) != report.num_members:
        raise DataError(f"has {len(chosen)} rewards, earlier rows have K={report.num_members}", file=file,
                        row=index, field="chosen_rewards")


def _has_rewards(raw) -> bool:
    """Carries both reward fields (a row with one of them is an error of its own)."""
    return isinstance(raw, dict) and all(raw.get(k) is not None for k in REWARD_KEYS)


def _validate_row(raw, *, source, i, fmt, strict, drop_empty, report) -> dict | None:
    """The canonical row of record `raw` (file row `i`), None when dropped, or DataError."""
    row = to_canonical(raw, file=source, index=i, fmt=fmt)
    try:
        for name in ("prompt", "chosen", "rejected"):
            _check_text(row[name], file=source, row=i, field_name=name)
    except DataError as e:
        if drop_empty and e.reason.startswith("empty"):
            report.dropped_empty += 1
            return None
        if e.reason.startswith("empty"):
            raise DataError(e.reason + " (set data.drop_empty=true to drop such rows)", file=source, row=i,
                            field=e.field) from None
        raise
    _check_rewards(row, report, file=source, index=i)
    if "reference_samples" in row:
        samples = row["reference_samples"]
        if isinstance(samples, str):
            samples = row["reference_samples"] = [samples]
        if not isinstance(samples, list) or not all(isinstance(s, str) and s for s in samples):
            raise DataError("expected a list of non-empty strings", file=source, row=i, field="reference_samples")
        report.has_reference_samples = True
    if row["chosen"] == row["rejected"]:
        if strict:
            raise DataError("chosen and rejected are identical (strict mode)", file=source, row=i, field="rejected")
        report.dropped_identical += 1
        return None
    row["index"] = i
    return row


def validate_rows(raw_rows: list[dict], *, source: str, fmt: str = "auto", strict: bool = False,
                  drop_empty: bool = False, problems: list | None = None,
                  max_problems: int | None = None) -> tuple[list[dict], DataReport]:
    """Canonicalise and check every row. Raises DataError at the first bad row, or, given
    `problems` (a list), appends every DataError there (up to `max_problems`) and keeps going.

    Rows are named by their file row (`raw_rows.file_rows` when read by `read_records`: a JSONL
    file's blank lines count), which is also each kept row's `index`. A row's own problems
    come first; then the checks across rows: rewards on every row or on none (the rows on the
    minority side are named), the same K everywhere.

    An empty response is an error unless `drop_empty` (then dropped and counted): real data
    has them (4 of 2,312 pairs in HH-RLHF harmless-base test), and training on an empty
    chosen teaches only the EOS token.
    """
    file_rows = getattr(raw_rows, "file_rows", None) or list(range(len(raw_rows)))
    report = DataReport(source=source, rows_read=len(raw_rows))
    rows, full = [], problems is not None and max_problems is not None and len(problems) >= max_problems
    for raw, i in zip(raw_rows, file_rows):
        if full:
            break
        try:
            row = _validate_row(raw, source=source, i=i, fmt=fmt, strict=strict, drop_empty=drop_empty,
                                report=report)
        except DataError as e:
            if problems is None:
                raise
            problems.append(e)
            full = max_problems is not None and len(problems) >= max_problems
            continue
        if row is not None:
            rows.append(row)
    # Rewards on some rows only: training would stop at the first batch without them.
    with_rewards = [r for r in rows if "chosen_rewards" in r]
    if with_rewards and len(with_rewards) < len(rows) and not full:
        without = [r for r in rows if "chosen_rewards" not in r]
        def others(group):
            first = f"row {group[0]['index'] + 1}"
            return first if len(group) == 1 else f"{len(group)} other rows (the first: {first})"

        if len(with_rewards) >= len(without):
            odd, message = without, (f"no chosen_rewards/rejected_rewards here, but {others(with_rewards)} "
                                     f"{'have' if len(with_rewards) > 1 else 'has'} them: every row must carry "
                                     "rewards, or none")
        else:
            odd, message = with_rewards, (f"rewards here, but {others(without)} "
                                          f"{'have' if len(without) > 1 else 'has'} none: every row must carry "
                                          "rewards, or none")
        errors = [DataError(message, file=source, row=r["index"], field="chosen_rewards") for r in odd]
        if problems is None:
            raise errors[0]
        problems.extend(errors[:max(0, max_problems - len(problems))] if max_problems is not None else errors)
        bad = {id(r) for r in odd}
        rows = [r for r in rows if id(r) not in bad]
    for row in rows:
        report.formats[row.pop("format")] += 1
    report.rows_kept = len(rows)
    if not rows and problems is None:
        raise DataError("no usable rows", file=source)
    return rows, report


def load_preferences(source: str, *, split: str | None = None, fmt: str = "auto", strict: bool = False,
                     drop_empty: bool = False, max_rows: int | None = None) -> tuple[list[dict], DataReport]:
    """Read, canonicalise and validate a preference dataset."""
    raw = read_records(source, split=split)
    if max_rows is not None:
        raw = raw.head(max_rows)
    return validate_rows(raw, source=str(source), fmt=fmt, strict=strict, drop_empty=drop_empty)

"""Resumable outputs for jobs whose units (prompts, pairs) may yield zero or many rows.

While a job is unfinished its data rows (each carrying `meta.source_row`, the unit it
came from) are in `OUT.partial`, never in `OUT`: a job that stops (a judge that is down, a
kill) leaves no file that looks complete. `OUT.state.jsonl` gets one line per finished
unit, written after the unit's rows; a unit is done when its state line exists. When every
unit is done, `complete()` renames `OUT.partial` to `OUT` (atomic, after an fsync).

A killed job leaves at worst a unit whose rows are written but whose state line is not:
on reopen those rows are dropped (the file is rewritten atomically) and the unit is
redone, so the final output never holds a row twice and equals an uninterrupted run's
output. A rerun that finds a finished `OUT` and new units (the input grew) moves `OUT` back
to `OUT.partial` (`reopen()`) once its checks pass, before the new work; a rerun with
nothing to do, or refused by a check, leaves `OUT` untouched.
"""

from __future__ import annotations

from pathlib import Path

from robustpo.data.io import AppendOnlyJsonl, PartialOutput, fingerprint, write_jsonl_atomic
from robustpo.errors import ConfigError


class ResumableOutput:
    def __init__(self, path: str | Path, settings: dict, *, overwrite: bool = False):
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + ".state.jsonl")
        self.output = PartialOutput(self.path, overwrite=overwrite, also=[self.state_path])
        self.partial_path = self.output.partial
        self.settings_key = fingerprint(settings)
        self.state = AppendOnlyJsonl(self.state_path)
        self.done: dict[int, dict] = {}
        for row in self.state.rows:
            if row.get("settings") != self.settings_key:
                self.state.close()
                raise ConfigError(f"{self.path} was started with different settings ({row.get('settings_detail')}); "
                                  f"now {settings}. Use another --out, or --overwrite to start again")
            self.done[row["unit"]] = row
        self.settings = settings
        source = self.partial_path if self.partial_path.exists() else self.path if self.path.exists() else None
        rows, clean = AppendOnlyJsonl.read(source) if source is not None else ([], True)
        if source == self.path and rows and not self.state.rows and not self._all_have_source(rows):
            self.state.close()
            raise ConfigError(f"{self.path} already exists and was not written by this command; "
                              "use another --out or --overwrite")
        keep = [r for r in rows if (r.get("meta") or {}).get("source_row") in self.done]
        self._check_counts(keep, source)
        if len(keep) != len(rows) or not clean:  # drop rows of a unit that never finished, and a torn line
            if source == self.path:  # a finished OUT is never left holding part of a job
                self.output.reopen()
            write_jsonl_atomic(self.partial_path, keep)
            source = self.partial_path
        # A finished OUT stays where it is until a new row has to be written (see finish).
        self.out = AppendOnlyJsonl(self.partial_path) if source != self.path else None
        self.rows_resumed = len(keep)

    def _check_counts(self, keep: list[dict], source: Path | None) -> None:
        """Every finished unit's rows must still be there (OUT deleted or edited by hand: refuse)."""
        have: dict[int, int] = {}
        for r in keep:
            have[r["meta"]["source_row"]] = have.get(r["meta"]["source_row"], 0) + 1
        for unit, info in self.done.items():
            if "rows" in info and have.get(unit, 0) != info["rows"]:
                self.state.close()
                where = source if source is not None else f"{self.path} (absent)"
                raise ConfigError(f"{where} holds {have.get(unit, 0)} rows of input row {unit + 1}, but "
                                  f"{self.state_path} says {info['rows']} were written: the output was changed "
                                  "or deleted by hand; use --overwrite to start again")

    @staticmethod
    def _all_have_source(rows: list[dict]) -> bool:
        return all("source_row" in (r.get("meta") or {}) for r in rows)

    def reopen(self) -> None:
        """Work remains (checked by the caller): a finished OUT goes back to OUT.partial now,
        before any of that work, so that a run stopping in it leaves no OUT behind."""
        if self.out is None:
            self.output.reopen()
            self.out = AppendOnlyJsonl(self.partial_path)

    def finish(self, unit: int, rows: list[dict], info: dict) -> None:
        self.reopen()
        for r in rows:
            self.out.append(r)
        info = {"rows": len(rows), **info}
        self.state.append({"unit": unit, "settings": self.settings_key,
                           **({"settings_detail": self.settings} if not self.done else {}), **info})
        self.done[unit] = info

    def complete(self) -> None:
        """Every unit is done: OUT.partial becomes OUT."""
        if self.out is not None:
            self.out.close()  # flushed and fsynced
            self.out = None
            self.output.complete()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        self.state.close()

    def __enter__(self) -> "ResumableOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

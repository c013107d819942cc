"""Resumable outputs for jobs whose units (prompts, pairs) may yield zero or many rows.

`OUT` gets the data rows (each carrying `meta.source_row`, the unit it came from);
`OUT.state.jsonl` gets one line per finished unit, written after the unit's rows. A unit
is done when its state line exists. A killed job leaves at worst a unit whose rows are
written but whose state line is not: on reopen those rows are dropped (the file is
rewritten atomically) and the unit is redone, so the final output never holds a row
twice and equals an uninterrupted run's output.
"""

from __future__ import annotations

from pathlib import Path

from robustpo.data.io import AppendOnlyJsonl, fingerprint, write_jsonl_atomic
from robustpo.errors import ConfigError


class ResumableOutput:
    def __init__(self, path: str | Path, settings: dict, *, overwrite: bool = False):
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + ".state.jsonl")
        if overwrite:
            for p in (self.path, self.state_path):
                p.unlink(missing_ok=True)
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
        out = AppendOnlyJsonl(self.path)
        keep = [r for r in out.rows if (r.get("meta") or {}).get("source_row") in self.done]
        if len(keep) != len(out.rows):
            if not self.done and out.rows and not self.state.rows and not self._all_have_source(out.rows):
                out.close()
                self.state.close()
                raise ConfigError(f"{self.path} already exists and was not written by this command; "
                                  "use another --out or --overwrite")
            out.close()
            write_jsonl_atomic(self.path, keep)  # drop rows of a unit that never finished
            out = AppendOnlyJsonl(self.path)
        self.out = out
        self.rows_resumed = len(keep)

    @staticmethod
    def _all_have_source(rows: list[dict]) -> bool:
        return all("source_row" in (r.get("meta") or {}) for r in rows)

    def finish(self, unit: int, rows: list[dict], info: dict) -> None:
        for r in rows:
            self.out.append(r)
        self.state.append({"unit": unit, "settings": self.settings_key,
                           **({"settings_detail": self.settings} if not self.done else {}), **info})
        self.done[unit] = info

    def close(self) -> None:
        self.out.close()
        self.state.close()

    def __enter__(self) -> "ResumableOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

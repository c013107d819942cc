"""Errors a user can act on: each names the file, the row and the field."""

from __future__ import annotations


class RobustpoError(Exception):
    """Base class: an error whose message alone tells the user what to fix."""


class DataError(RobustpoError):
    """Bad input data. `row` is 0-based internally, reported 1-based (as editors number lines)."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row + 1}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}")


class ConfigError(RobustpoError):
    """Bad configuration: unknown key, wrong type, unknown loss (with a 'did you mean')."""


class NonFiniteError(RobustpoError):
    """A NaN or ±inf where the maths needs a finite number. `positions`: the batch positions
    (rows of the batch, 0-based) that hold one, when known; `what`: the message without them."""

    def __init__(self, message: str, positions: tuple[int, ...] = (), what: str | None = None):
        super().__init__(message)
        self.positions = tuple(positions)
        self.what = what or message


class TrainingError(RobustpoError):
    """A run that cannot go on (a non-finite loss or gradient); nothing is saved as final."""

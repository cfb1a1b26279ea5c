"""SmolQL's exception tree: one root, one subclass per stage, structured fields.

User-input errors also inherit the matching builtin (listed second, so that SmolQL's
keyword fields reach ``__init__``), and ``except ValueError`` keeps working.

>>> err = CatalogInputError("not a directory", file="/no/such")
>>> isinstance(err, ValueError), err.file
(True, '/no/such')
"""

from __future__ import annotations


class SmolQLError(Exception):
    """Root of every error SmolQL raises on purpose."""

    def __new__(cls, message: str = "", **_fields: object) -> SmolQLError:
        # Builtin bases (ValueError) reject keyword arguments in __new__; keep them for __init__.
        return super().__new__(cls, message)

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.row = row
        self.line = line
        self.column = column
        self.context = ""

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.line is not None:
            where.append(f"line {self.line}, column {self.column}")
        return f"{self.message} ({'; '.join(where)})" if where else self.message


class ConfigError(SmolQLError, ValueError):
    """A setting was given a value it does not accept."""


class CatalogError(SmolQLError):
    """A catalog could not be created, refreshed or read."""


class CatalogInputError(CatalogError, ValueError):
    """The user named a source, spec or catalog that is not valid."""


class ParseError(SmolQLError, ValueError):
    """SQL text could not be parsed; carries line and column."""


class QueryError(SmolQLError):
    """A parsed query failed while planning or running."""


class DecodeError(SmolQLError):
    """An image could not be decoded; carries the file."""


class InferenceError(SmolQLError):
    """A model failed to load or to run."""

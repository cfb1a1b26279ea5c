"""SmolQL's exception tree: one root, one subclass per stage, structured fields.

User-input errors also inherit the matching builtin (listed second, so that SmolQL's
keyword fields reach ``__init__``), and ``except ValueError`` keeps working.

>>> err = CatalogInputError("not a directory", file="/no/such")
>>> isinstance(err, ValueError), err.file
(True, '/no/such')
"""

from __future__ import annotations


# PEP 249's exception tree (the names are the standard's). SmolQL's own errors below fit into it.
class Warning(Exception):
    """Important warnings, e.g. data truncation (PEP 249)."""


class Error(Exception):
    """Base of all DB-API errors (PEP 249)."""


class InterfaceError(Error):
    """Misuse of the interface itself, e.g. a closed connection or cursor."""


class DatabaseError(Error):
    """Errors related to the database."""


class DataError(DatabaseError):
    """Problems with the processed data, e.g. an undecodable image under on_error='fail'."""


class OperationalError(DatabaseError):
    """Problems with the database's operation, not necessarily under the caller's control."""


class IntegrityError(DatabaseError):
    """Relational integrity, e.g. a violated constraint."""


class InternalError(DatabaseError):
    """The database is in an inconsistent internal state."""


class ProgrammingError(DatabaseError):
    """Bad SQL, unknown tables or columns, wrong parameter counts, misuse of settings."""


class NotSupportedError(DatabaseError):
    """A method or database API that is not supported."""


class SmolQLError(Error):
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


class ConfigError(SmolQLError, ProgrammingError, ValueError):
    """A setting was given a value it does not accept."""


class CatalogError(SmolQLError, OperationalError):
    """A catalog could not be created, refreshed or read."""


class StorageFullError(CatalogError):
    """Where SmolQL writes (renditions, the database) has no space left: every later write
    would fail too, so the work stops with this rather than skipping image after image."""


class CatalogInputError(CatalogError, ValueError):
    """The user named a source, spec or catalog that is not valid."""


class ParseError(SmolQLError, ProgrammingError, ValueError):
    """SQL text could not be parsed; carries line and column."""


class QueryError(SmolQLError, ProgrammingError):
    """A parsed query failed while planning or running."""


class DecodeError(SmolQLError, DataError):
    """An image could not be decoded; carries the file."""


class InferenceError(SmolQLError, OperationalError):
    """A model failed to load or to run."""


class ConstraintError(SmolQLError, IntegrityError):
    """A statement violated a constraint (primary key, NOT NULL, CHECK...)."""


class ExecutionError(SmolQLError, OperationalError):
    """DuckDB failed while running a statement (I/O, out of memory, interrupted...)."""

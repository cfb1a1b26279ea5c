"""SmolQL: SQL over image collections, with jointly optimised preprocessing and DNN inference."""

from smolql.connection import Connection, connect
from smolql.dbapi import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Cursor,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    apilevel,
    paramstyle,
    threadsafety,
)
from smolql.errors import (
    CatalogError,
    CatalogInputError,
    ConfigError,
    DatabaseError,
    DataError,
    DecodeError,
    Error,
    InferenceError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ParseError,
    ProgrammingError,
    QueryError,
    SmolQLError,
    Warning,
)

__version__ = "0.1.0"

__all__ = [
    "BINARY",
    "DATETIME",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "CatalogError",
    "CatalogInputError",
    "ConfigError",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "DecodeError",
    "Error",
    "InferenceError",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ParseError",
    "ProgrammingError",
    "QueryError",
    "SmolQLError",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "__version__",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext smolql``: register the ``%smolql`` / ``%%smolql`` magics."""
    from smolql.magic import load_ipython_extension as load

    load(ipython)

"""SmolQL: SQL over image collections, with jointly optimised preprocessing and DNN inference."""

from smolql.connection import Connection, connect
from smolql.errors import (
    CatalogError,
    CatalogInputError,
    ConfigError,
    DecodeError,
    InferenceError,
    ParseError,
    QueryError,
    SmolQLError,
)

__version__ = "0.1.0"

__all__ = [
    "CatalogError",
    "CatalogInputError",
    "ConfigError",
    "Connection",
    "DecodeError",
    "InferenceError",
    "ParseError",
    "QueryError",
    "SmolQLError",
    "__version__",
    "connect",
]

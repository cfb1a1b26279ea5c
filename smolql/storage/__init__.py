"""Storage: the ``smolql`` system schema in DuckDB and every read and write of it."""

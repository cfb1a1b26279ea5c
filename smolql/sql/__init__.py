"""The SQL front: statements (parse), SmolQL's SQL functions (registry and call checking), and
the logical plan (stages and the final DuckDB query)."""

"""Planning: which images each UDF call must see (its driver query), in which order, and
the final query that DuckDB runs over the UDF results."""

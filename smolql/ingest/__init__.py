"""Image catalogs: scanning, probing, renditions and ingest into DuckDB."""

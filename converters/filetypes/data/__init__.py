"""Structured data: trees (json, yaml, toml, xml) and tables (csv, tsv, xlsx)."""

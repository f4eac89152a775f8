"""Convertd: the service around the converters (config, storage, database, queue, APIs)."""

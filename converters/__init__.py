"""Conversion engines: pure functions from input files to an output file.

Nothing here imports `app`: the service reaches converters through `converters.registry`
(what is possible) and `converters.sandbox.parent` (running one conversion in a limited child).
"""

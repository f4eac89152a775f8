"""`convertd convert` and `convertd formats`: a client of a running Convertd over its public API only.

api.py speaks HTTP and GraphQL, pairs.py finds what a file converts with, progress.py shows
the jobs, run.py ties them into the commands (wired into app/cli/parser.py).
"""

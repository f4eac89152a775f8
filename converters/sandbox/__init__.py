"""Running one conversion in an isolated process: the worker's side (parent), the fork
server, the job's side (child) and the isolation layers the child enters."""

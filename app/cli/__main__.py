"""`python -m app.cli ...`: the same as the `convertd` command."""

from app.cli.parser import main

main()

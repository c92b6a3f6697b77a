"""`python -m palaver`: the `palaver` command where the console script is not installed (a PaaS slug)."""

from palaver.cli.main import main

main()

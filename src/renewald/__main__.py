"""`python -m renewald` is the `renewald` command."""

from renewald.cli import main

main()

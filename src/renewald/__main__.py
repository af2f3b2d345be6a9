"""`python -m renewald` is the `renewald` command."""

from renewald.program import main

main()

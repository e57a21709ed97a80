"""`python -m client`: the same as the `messenger` command."""
from .cli import main

main()

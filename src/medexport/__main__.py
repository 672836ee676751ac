"""`python -m medexport` is the `medexport` command."""
from medexport.cli import main

main()

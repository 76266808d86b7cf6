"""``python -m sciz`` runs the command line."""

from .cli import main

main()

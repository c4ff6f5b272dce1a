"""``python -m tourney`` runs the CLI."""

from tourney.cli import main

main()

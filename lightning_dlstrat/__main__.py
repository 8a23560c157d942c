"""``python -m lightning_dlstrat`` runs the ``dlstrat`` CLI."""

from .cli import main

main()

"""Run the ``dlstrat`` CLI from a checkout without installing: ``python cli.py fit --model darts``."""

from lightning_dlstrat.cli import main

if __name__ == "__main__":
    main()

"""``python -m supplyflow`` runs the CLI."""

from supplyflow.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

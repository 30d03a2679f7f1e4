"""`python -m hnm_cli` runs the same CLI as the `hnm` console script."""

from hnm_cli.cli import app

if __name__ == "__main__":
    app()

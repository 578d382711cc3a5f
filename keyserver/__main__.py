"""`python -m keyserver` is `telekey keyserver`."""

from keyserver.cli import app

app(prog_name="keyserver")

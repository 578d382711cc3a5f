"""`python -m kdc` is `telekey kdc`."""

from kdc.cli import app

app(prog_name="kdc")

"""`python -m cta` is `telekey cta`."""

from cta.cli import app

app(prog_name="cta")

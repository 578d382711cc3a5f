"""`python -m sigctl` is `telekey sigctl`."""

from sigctl.cli import app

app(prog_name="sigctl")

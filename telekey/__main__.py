"""`python -m telekey` is `telekey`."""

from telekey.cli import app

app(prog_name="telekey")

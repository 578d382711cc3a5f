"""`python -m provisioning` is `telekey provisioning`."""

from provisioning.cli import app

app(prog_name="provisioning")

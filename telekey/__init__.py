"""The `telekey` command: one typer app whose subcommands each package contributes."""

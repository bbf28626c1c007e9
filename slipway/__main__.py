"""`python -m slipway ...` is the `slipway` command, for environments where the script is not on PATH."""

from slipway.pipelines.cli import cli

cli(prog_name="slipway")

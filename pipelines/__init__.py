"""Slipway pipelines, the local runner and the `slipway` CLI."""

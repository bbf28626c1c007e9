"""Slipway components: one module per capability, each a plain library plus a thin KFP component."""

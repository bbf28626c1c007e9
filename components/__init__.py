"""Slipway components: library code, one module per capability, and the KFP components over it.

    from slipway.components import ingest, validate, train, evaluate, bless, register   # @dsl.component objects

The components are defined in `slipway.components.catalog` and resolved here on first use, so
that a running task, which imports library modules of this package, never imports the catalogue
(see its docstring for why it must not).
"""

import importlib
from typing import Any

COMPONENTS = ("ingest", "statistics", "schema", "validate", "feature_tables", "feast_apply", "materialize",
              "training_set", "tune", "train", "evaluate", "bless", "register", "promote", "deploy", "champion",
              "drift", "batch_predict", "retrain_trigger")

__all__ = list(COMPONENTS)


def __getattr__(name: str) -> Any:
    if name in COMPONENTS:
        return getattr(importlib.import_module("slipway.components.catalog"), name)
    raise AttributeError(f"module 'slipway.components' has no attribute {name!r}")

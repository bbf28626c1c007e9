"""Slipway: a Kubeflow Pipelines v2 component suite, from raw data to a canary-deployed KServe endpoint.

The `slipway` package itself holds what every capability shares: the problem configuration
(`slipway.problem`), storage URIs (`slipway.storage`), atomic file output (`slipway.atomic`) and
the runtime images (`slipway.runtimes`). Capabilities live in `slipway.components`, pipelines and
the CLI in `slipway.pipelines`, model serving in `slipway.serving`.
"""

__version__ = "0.1.0"

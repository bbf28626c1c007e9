"""What Slipway's servers promise callers beyond KServe's protocols: the output's name, and how an
answer says "this is a fallback" (one header, one metric, a few reasons).

Every model answers one V2 output, `probability` (FP64, one score per row; V1: `predictions`), which
the V2 model metadata (`GET /v2/models/<name>`) lists as `output_types()`.

Every server on the request path (the predictor, the Feast transformer) answers rather than fail
when something behind it does, and marks the answer so that callers, the canary router and
dashboards can tell a fallback from a model's score:

- the response header `x-slipway-degraded: <reason>[,<reason>]` (V2 responses also carry the
  reason in the `degraded` response parameter);
- the Prometheus counter `slipway_degraded_responses_total{model, reason}`.

Every predict/infer answer of the predictor also names the model that gave it, in the header
`x-slipway-model: <model URI>`: the URI in `SLIPWAY_MODEL_URI` when set (an InferenceService deployed by
serving/cluster_deploy.py sets it to the predictor's storage URI, since KServe rewrites `STORAGE_URI` to
/mnt/models inside the pod), else the server's `--model`. A KServe canary splits traffic without saying
which revision answered; this header is how the canary analysis tells stable answers from canary ones.

This module imports nothing heavy, so that the transformer, which has no model to load, need not
import torch to share these names with the predictor.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

OUTPUT_NAME = "probability"
DEGRADED_HEADER = "x-slipway-degraded"
MODEL_HEADER = "x-slipway-model"  # which model answered: see the module docstring
MODEL_URI_ENV = "SLIPWAY_MODEL_URI"  # the predictor's identity, as the InferenceService sets it

# Reasons
MODEL_ERROR = "model-error"  # the model raised on the request's rows
FEATURE_STORE_UNAVAILABLE = "feature-store-unavailable"  # the online lookup failed: features answered missing
PREDICTOR_UNAVAILABLE = "predictor-unavailable"  # the transformer could not reach the predictor, or it failed

UNINFORMED_SCORE = 0.5  # the fallback when nothing better is known (set one: --fallback-score)

MONITOR_PORT = 8095  # the drift monitor's (serving/drift_service.py): the InferenceService logger's url points here

DEGRADED_RESPONSES = Counter(
    "slipway_degraded_responses", "Responses answered with the fallback score instead of the model", ["model", "reason"]
)


def output_types() -> list[dict[str, Any]]:
    """The V2 model metadata's `outputs`: one score per row."""
    return [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}]


def joined(*reasons: str | None) -> str | None:
    """The header value for several reasons, each once and in order; None when there are none."""
    distinct = [reason for part in reasons if part for reason in part.split(",") if reason]
    return ",".join(dict.fromkeys(distinct)) or None

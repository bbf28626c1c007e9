"""Metrics as numbers: KFP's Metrics artifacts go through JSON (protobuf's Struct), which has no NaN or infinity.

One NaN metric failed a whole step with a protobuf traceback, after the work was done. A step's
writer decides per metric: one its result stands on (the trained model's eval AUC and loss) must be
finite or the step fails naming it (`require_finite`); a descriptive one (a p-value of a feature
with too little data) is left out of the artifact, with a warning naming it (`finite_metrics`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

log = logging.getLogger(__name__)


def finite_metrics(metrics: Mapping[str, float], step: str) -> dict[str, float]:
    """`metrics` without the NaN or infinite ones, each left out with a warning that names it and `step`."""
    kept = {}
    for name, value in metrics.items():
        if math.isfinite(value):
            kept[name] = value
        else:
            log.warning("%s: metric %s is %s, not a number: left out of the Metrics artifact", step, name, value)
    return kept


def require_finite(metrics: Mapping[str, float], step: str, why: str) -> None:
    """A ValueError naming the first NaN or infinite metric in `metrics`, `step` and `why` it cannot be."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise ValueError(f"{step}: {name} is {value}, not a number: {why}")

"""Population Stability Index: how far one sample's distribution has moved from another's.

One function serves both places that compare distributions: canary analysis (the canary's
scores against the stable model's, `slipway.serving.canary`) and drift detection (today's
feature values against the training data's). Both ask the same question, so they must get the
same number for the same samples.

    PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i)

where e_i and a_i are the shares of the expected (reference) and actual samples in bin i. The
bins are the expected sample's quantiles, so each holds about 1/bins of the reference and every
bin weighs the same; PSI is the symmetric (Jeffreys) KL divergence between the two binned
distributions, always >= 0.

Sampling noise: for two samples of one distribution, PSI * n_eff is approximately chi-squared
with bins - 1 degrees of freedom, n_eff = n_e * n_a / (n_e + n_a). With 10 bins its 99th
percentile is 21.7 / n_eff: about 108 effective points keep the noise under the critical 0.2 in
99 cases out of 100, and 250 keep it under 0.09 (the canary's minimum sample in
`slipway.serving.canary` rests on this).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

Level = Literal["none", "warning", "critical"]

WARNING_AT = 0.1
"""PSI from here up to CRITICAL_ABOVE is a warning: the distribution moved, worth a look."""
CRITICAL_ABOVE = 0.2
"""PSI above this is critical: the distribution moved enough to act on (retrain, roll back)."""

EPSILON = 1e-4
"""Floor for a bin's share. A bin that one sample leaves empty would make ln(a/e) infinite; with
the floor, an empty bin that holds 10% of the other sample adds (0.1 - 1e-4) * ln(0.1 / 1e-4) =
0.69: far into the critical band, as an emptied decile deserves, yet finite and comparable. Up to
10,000 values, 1e-4 is at most one value's share, so the floor replaces only true zeros; in larger
samples it also lifts bins of a few values, a change of the order of 1e-4 to the index."""


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, bins: int = 10) -> float:
    """PSI of `actual` against `expected`, over `bins` quantile bins of `expected`.

    Ties and constant data: quantile edges that coincide (many equal scores, a constant
    feature) are merged, so a tied value is one bin rather than several empty ones; a constant
    `expected` leaves two bins, "at most that value" and "above it". Bins are closed on the
    right, so the tied mass sits in the bin whose upper edge it is.

    Values outside the expected range fall into the first or last bin, which are open-ended:
    a shifted sample concentrates there and shows up as a large PSI rather than being lost.

    Raises ValueError for an empty sample, a non-finite value, or fewer than 2 bins.
    """
    reference = _sample(expected, "expected")
    current = _sample(actual, "actual")
    edges = quantile_edges(reference, bins)
    return psi_of_shares(shares(reference, edges), shares(current, edges))


def quantile_edges(expected: npt.ArrayLike, bins: int = 10) -> np.ndarray:
    """The inner edges of `bins` quantile bins of `expected`, coinciding edges merged (see `psi`)."""
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, got {bins}")
    reference = _sample(expected, "expected")
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin (-inf, edges[0]], (edges[0], edges[1]], ..., (edges[-1], inf), floored."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return np.maximum(counts / values.size, EPSILON)


def category_shares(codes: np.ndarray, categories: int) -> np.ndarray:
    """Share of each category code 0..categories-1 in `codes` (non-negative integers), floored."""
    if codes.size == 0:
        raise ValueError("PSI needs a non-empty sample")
    return np.maximum(np.bincount(codes, minlength=categories) / codes.size, EPSILON)


def psi_of_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI from two distributions over the same bins (each from `shares` or `category_shares`)."""
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_level(value: float) -> Level:
    """The band a PSI falls in (DESIGN.md §6): < 0.1 none, 0.1-0.2 warning, > 0.2 critical."""
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"PSI is a finite number >= 0, got {value}")
    if value < WARNING_AT:
        return "none"
    if value <= CRITICAL_ABOVE:
        return "warning"
    return "critical"


def _sample(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ValueError(f"PSI needs a non-empty {name} sample")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"the {name} sample holds {int(np.sum(~np.isfinite(array)))} NaN or infinite values")
    return array

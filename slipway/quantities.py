"""Kubernetes resource quantities ('500m', '2', '8Gi'), read the way the API server reads them.

Both the training jobs and the InferenceServices Slipway emits check their CPU, memory and GPU
figures before anything reaches a cluster; this is the one parser they share.
"""

from __future__ import annotations

import decimal
import re

_QUANTITY = re.compile(r"(?P<number>[+-]?(\d+(\.\d*)?|\.\d+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
_SUFFIX = {"n": "1e-9", "u": "1e-6", "m": "1e-3", "": "1", "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12",
           "P": "1e15", "E": "1e18", "Ki": "1024", "Mi": "1048576", "Gi": "1073741824", "Ti": "1099511627776",
           "Pi": "1125899906842624", "Ei": "1152921504606846976"}


def parse_quantity(text: str) -> decimal.Decimal:
    """The value of a quantity ('500m' -> 0.5, '8Gi' -> 8589934592); a ValueError for anything else."""
    match = _QUANTITY.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    suffix = match["suffix"] or ""
    number = decimal.Decimal(match["number"])
    if suffix[:1] in ("e", "E"):
        return number * decimal.Decimal(10) ** int(suffix[1:])
    return number * decimal.Decimal(_SUFFIX[suffix])


def is_positive_quantity(value: object) -> bool:
    """True for a quantity string above zero ('2', '500m', '4Gi')."""
    try:
        return isinstance(value, str) and parse_quantity(value) > 0
    except ValueError:
        return False

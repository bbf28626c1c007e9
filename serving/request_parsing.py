"""Reading V1 instances and V2 tensors, for the predictor and the Feast transformer alike.

Both servers refuse a malformed request the same way: a 400 (`InvalidInput`; gRPC INVALID_ARGUMENT)
naming the field, the row and what was expected, before any work is done for it. Whatever a client
sends, decoding it raises `InvalidInput` or succeeds: malformed input never reaches a 5xx, and never
reaches the model, where a failure would be answered with the fallback and counted as the model's.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput

# What decoding a tensor raises on malformed contents: a value that is not of its datatype (TypeError,
# ValueError), out of an integer datatype's range (OverflowError), or a BYTES element whose length prefix
# runs past the data (struct.error).
TENSOR_DECODE_ERRORS = (TypeError, ValueError, OverflowError, struct.error)
FLOAT_DATATYPES = ("FP16", "FP32", "FP64")


def v1_body(payload: Any, headers: Mapping[str, str]) -> Any:
    """A V1 body as JSON, whatever its Content-Type: KServe leaves a body that is not declared JSON as bytes
    (curl's `-d` declares application/x-www-form-urlencoded)."""
    if not isinstance(payload, bytes | str):
        return payload
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        declared = headers.get("content-type", "none")
        raise InvalidInput(f"the body is not JSON (Content-Type: {declared}): {error}") from None


def v1_instances(payload: Any, required: Sequence[str], what: str, max_rows: int) -> list[dict[str, Any]]:
    """The `instances` of a V1 body: a non-empty list of objects, each naming every `required` key
    (`what` says what those keys are, for the message), at most `max_rows` of them."""
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('expected {"instances": [...]}: a non-empty list of objects of feature values')
    check_rows(len(instances), "instances", max_rows)
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise InvalidInput(f"instances[{i}]: expected an object of feature values, got {type(instance).__name__}")
        missing = [name for name in required if name not in instance]
        if missing:
            raise InvalidInput(f"instances[{i}]: missing {what} {missing} (send null for an unknown value)")
    return instances


def tensor_values(tensor: InferInput) -> list[Any]:
    """A [N] or [N, 1] tensor's values as a list (REST JSON or gRPC raw contents alike), text decoded.

    An infinite float is refused (a value too large for the tensor's datatype, such as 1e308 sent as
    FP32, arrives as one); NaN stays: it is a missing value."""
    try:
        values = tensor.as_numpy()
    except TENSOR_DECODE_ERRORS as error:  # (InvalidInput too: an unknown datatype)
        raise InvalidInput(f"input {tensor.name!r} ({tensor.datatype}): {error}") from None
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise InvalidInput(f"input {tensor.name!r}: expected shape [N] or [N, 1], got {list(values.shape)}")
    if tensor.datatype in FLOAT_DATATYPES:
        infinite = np.flatnonzero(np.isinf(values))
        if infinite.size:
            raise InvalidInput(f"input {tensor.name!r} ({tensor.datatype}), row {infinite[0]}: infinite, or too "
                               f"large for {tensor.datatype}; send a finite number (NaN for missing)")
    if tensor.datatype == "BYTES":
        return [_text(tensor.name, row, value) for row, value in enumerate(values.tolist())]
    return values.tolist()


def _text(name: str, row: int, value: Any) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"input {name!r} (BYTES), row {row}: not UTF-8 text ({error.reason} at byte "
                           f"{error.start})") from None


@dataclasses.dataclass(frozen=True, eq=False)
class NumericRanges:
    """The numeric features a request carries, each with the range of values the model computes with."""

    names: tuple[str, ...]
    low: np.ndarray  # [features, 1]
    high: np.ndarray

    @classmethod
    def of(cls, ranges: Mapping[str, tuple[float, float]]) -> NumericRanges:
        bounds = np.array(list(ranges.values()), dtype="float64").reshape(-1, 2)
        return cls(tuple(ranges), bounds[:, :1], bounds[:, 1:])

    def check(self, columns: Mapping[str, Sequence[Any]]) -> None:
        """Each value must be a number (or a numeric string) in its feature's range, or missing (null, or NaN).
        Anything else is the caller's error, named with the feature and row: a list or object where a number
        belongs, text that is not a number, an infinite or out-of-range number. One array for all features:
        a request is checked in microseconds."""
        if not self.names:
            return
        try:
            values = np.array([[np.nan if value is None else value for value in columns[name]] for name in self.names],
                              dtype="float64")
        except (TypeError, ValueError, OverflowError):
            values = None
        if values is None or values.ndim != 2:  # a value that is not a number, or columns of unequal lengths
            for name in self.names:
                row = next((row for row, value in enumerate(columns[name]) if not _is_number(value)), None)
                if row is not None:
                    raise InvalidInput(f"feature {name!r}, row {row}: expected a number (or null), got "
                                       f"{_described(columns[name][row])}")
            return  # unequal lengths: the model's preprocessing names them
        outside = ~((values >= self.low) & (values <= self.high)) & ~np.isnan(values)
        if outside.any():
            feature, row = (int(index) for index in np.argwhere(outside)[0])
            name = self.names[feature]
            raise InvalidInput(f"feature {name!r}, row {row}: {columns[name][row]!r} is not a finite number in the "
                               f"range the model computes with, [{self.low[feature, 0]:.3g}, "
                               f"{self.high[feature, 0]:.3g}]")


def check_categories(name: str, values: Sequence[Any]) -> None:
    """A categorical feature's values must be scalars (text, a number, or null): a list or an object is not a
    category."""
    for row, value in enumerate(values):
        if isinstance(value, list | dict):
            raise InvalidInput(f"feature {name!r}, row {row}: expected a category (text or a whole number, or "
                               f"null), got {_described(value)}")


def _is_number(value: Any) -> bool:
    if value is None:
        return True
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _described(value: Any) -> str:
    kind = {list: "a list", dict: "an object", str: "text"}.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"


def check_rows(rows: int, field: str, max_rows: int) -> None:
    if rows > max_rows:
        raise InvalidInput(f"{field}: {rows} rows is more than this server's limit of {max_rows} (--max-batch-rows)")

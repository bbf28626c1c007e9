"""Reading V1 instances and V2 tensors, for the predictor and the Feast transformer alike.

Both servers refuse a malformed request the same way: a 400 (`InvalidInput`) naming the field, the
row and what was expected, before any work is done for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput


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
    """A [N] or [N, 1] tensor's values as a list (REST JSON or gRPC raw contents alike), text decoded."""
    try:
        values = tensor.as_numpy()
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"input {tensor.name!r} ({tensor.datatype}): {error}") from None
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise InvalidInput(f"input {tensor.name!r}: expected shape [N] or [N, 1], got {list(values.shape)}")
    if tensor.datatype == "BYTES":
        return [value.decode("utf-8") if isinstance(value, bytes) else value for value in values.tolist()]
    return values.tolist()


def check_rows(rows: int, field: str, max_rows: int) -> None:
    if rows > max_rows:
        raise InvalidInput(f"{field}: {rows} rows is more than this server's limit of {max_rows} (--max-batch-rows)")

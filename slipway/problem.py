"""The problem definition: columns and their types, label, entities, features, split, evaluation slices.

A problem is configuration, not code (DESIGN.md §5): one YAML file says everything that the
components would otherwise each re-type. `load_problem` reads a packaged problem by name
(`chicago_taxi`) or any YAML file by path, and checks it, naming the file and the field
that is wrong, before any data is touched.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from slipway.storage import download, scheme_of

ColumnType = Literal["integer", "float", "string", "timestamp"]
TimestampUnit = Literal["s", "ms", "us", "ns", "iso8601"]

PROBLEMS_DIR = Path(__file__).parent / "problems"
DEFAULT_PROBLEM = "chicago_taxi"


class ProblemError(ValueError):
    """The problem file is missing or does not describe a usable problem."""


@dataclasses.dataclass(frozen=True)
class TimestampSpec:
    """The event-time column: the time split and (later) point-in-time joins key on it."""

    column: str
    unit: TimestampUnit = "s"


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The binary label: `expression` is a pandas expression over the typed columns."""

    name: str
    expression: str


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    # Numeric features that must never be missing: training refuses data where one is, instead
    # of letting preprocessing quietly impute it.
    required: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclasses.dataclass(frozen=True)
class EvaluationSpec:
    """How the evaluation breaks the eval split down: a model can be good on average and poor for one group.

    Each column in `slices` is reported per value; values with fewer than `min_slice_rows` rows are
    counted but not reported one by one, because their metrics would be noise.
    """

    slices: tuple[str, ...] = ()
    min_slice_rows: int = 30


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    description: str
    columns: dict[str, ColumnType]
    timestamp: TimestampSpec
    label: LabelSpec
    entities: tuple[str, ...]
    features: FeatureSpec
    eval_fraction: float
    source: str  # the file it was read from, for error messages
    evaluation: EvaluationSpec = EvaluationSpec()
    intended_use: str = ""  # what the model is for and not for; the model card quotes it


def available_problems() -> list[str]:
    """Names of the problems packaged with Slipway."""
    return sorted(p.stem for p in PROBLEMS_DIR.glob("*.yaml"))


def load_problem(ref: str = DEFAULT_PROBLEM) -> Problem:
    """Loads a packaged problem by name, or a problem YAML file by path or URI (gs://, s3://, http(s)://).

    A URI lets a cluster run use a problem that is not baked into the image.
    """
    if not ref.endswith((".yaml", ".yml")):
        path = PROBLEMS_DIR / f"{ref}.yaml"
        if not path.is_file():
            raise ProblemError(
                f"problem {ref!r}: no such file {str(path)!r}; "
                f"packaged problems are {available_problems()}, or give a path or URI of a .yaml file"
            )
        return _parse_file(path, source=str(path))
    if scheme_of(ref) == "file":
        return _parse_file(Path(ref), source=ref)
    with tempfile.TemporaryDirectory(prefix="slipway-problem-") as tmp:
        local = Path(tmp) / "problem.yaml"
        download(ref, local)
        return _parse_file(local, source=ref)


def _parse_file(path: Path, source: str) -> Problem:
    if not path.is_file():
        raise ProblemError(f"problem {source!r}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProblemError(f"{source}: not valid YAML: {exc}") from exc
    return _parse(raw, source=source)


def _parse(raw: Any, source: str) -> Problem:
    def fail(field: str, message: str) -> ProblemError:
        return ProblemError(f"{source}: {field}: {message}")

    def need(mapping: Any, key: str, field: str) -> Any:
        if not isinstance(mapping, dict) or key not in mapping:
            raise fail(field, "is required")
        return mapping[key]

    columns = need(raw, "columns", "columns")
    if not isinstance(columns, dict) or not columns:
        raise fail("columns", "expected a mapping of column name to type")
    valid_types = get_args(ColumnType)
    for column, kind in columns.items():
        if kind not in valid_types:
            raise fail(f"columns.{column}", f"type {kind!r} is not one of {list(valid_types)}")

    def declared(names: Any, field: str) -> tuple[str, ...]:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise fail(field, "expected a list of column names")
        for name in names:
            if name not in columns:
                raise fail(field, f"{name!r} is not a declared column (declared: {sorted(columns)})")
        return tuple(names)

    ts_raw = need(raw, "timestamp", "timestamp")
    timestamp = TimestampSpec(
        column=declared([need(ts_raw, "column", "timestamp.column")], "timestamp.column")[0],
        unit=ts_raw.get("unit", "s"),
    )
    if timestamp.unit not in get_args(TimestampUnit):
        raise fail("timestamp.unit", f"{timestamp.unit!r} is not one of {list(get_args(TimestampUnit))}")
    if columns[timestamp.column] != "timestamp":
        raise fail("timestamp.column", f"{timestamp.column!r} must have type 'timestamp' in columns")

    label_raw = need(raw, "label", "label")
    label = LabelSpec(
        name=str(need(label_raw, "name", "label.name")),
        expression=str(need(label_raw, "expression", "label.expression")),
    )
    if label.name in columns:
        raise fail("label.name", f"{label.name!r} clashes with a source column")

    features_raw = need(raw, "features", "features")
    features = FeatureSpec(
        numeric=declared(features_raw.get("numeric", []), "features.numeric"),
        categorical=declared(features_raw.get("categorical", []), "features.categorical"),
        required=declared(features_raw.get("required", []), "features.required"),
    )
    if not features.all:
        raise fail("features", "at least one numeric or categorical feature is required")
    for name in features.numeric:
        if columns[name] not in ("integer", "float"):
            raise fail("features.numeric", f"{name!r} has type {columns[name]!r}, not integer or float")
    for name in features.required:
        if name not in features.numeric:
            raise fail("features.required", f"{name!r} is not one of features.numeric {list(features.numeric)}")

    eval_fraction = (raw.get("split") or {}).get("eval_fraction", 0.2)
    if not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
        raise fail("split.eval_fraction", f"expected a number between 0 and 1, got {eval_fraction!r}")

    evaluation_raw = raw.get("evaluation") or {}
    if not isinstance(evaluation_raw, dict):
        raise fail("evaluation", "expected a mapping with `slices` and `min_slice_rows`")
    unknown = sorted(set(evaluation_raw) - {"slices", "min_slice_rows"})
    if unknown:
        raise fail("evaluation", f"unknown key(s) {unknown}; expected `slices` and `min_slice_rows`")
    slices = declared(evaluation_raw.get("slices", []), "evaluation.slices")
    for name in slices:
        if columns[name] not in ("integer", "string"):
            raise fail("evaluation.slices", f"{name!r} has type {columns[name]!r}; slice on integer or string columns")
        if slices.count(name) > 1:
            raise fail("evaluation.slices", f"{name!r} is listed more than once")
    min_slice_rows = evaluation_raw.get("min_slice_rows", EvaluationSpec.min_slice_rows)
    if isinstance(min_slice_rows, bool) or not isinstance(min_slice_rows, int) or min_slice_rows < 1:
        raise fail("evaluation.min_slice_rows", f"expected a positive whole number, got {min_slice_rows!r}")

    intended_use = raw.get("intended_use") or ""
    if not isinstance(intended_use, str):
        raise fail("intended_use", f"expected text, got {intended_use!r}")

    return Problem(
        name=str(need(raw, "name", "name")),
        description=str(raw.get("description", "")),
        columns=dict(columns),
        timestamp=timestamp,
        label=label,
        entities=declared(raw.get("entities", []), "entities"),
        features=features,
        eval_fraction=float(eval_fraction),
        source=source,
        evaluation=EvaluationSpec(slices=slices, min_slice_rows=min_slice_rows),
        intended_use=intended_use.strip(),
    )

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

import pandas as pd
import yaml

from slipway.expression import ExpressionError, Kind, check_expression
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
    """The binary label: `expression` is a true/false expression over the typed columns (slipway/expression.py
    says which operators it may use: a problem file holds data, never code)."""

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


AggregateFunction = Literal["count", "mean"]


@dataclasses.dataclass(frozen=True)
class AggregateSpec:
    """One time-windowed aggregate per entity: `function` over `of` (a numeric expression over the typed
    columns, as slipway/expression.py allows; unused by `count`), computed for every window from events strictly
    before each row's time."""

    name: str
    function: AggregateFunction
    of: str = ""


@dataclasses.dataclass(frozen=True)
class FeatureStoreSpec:
    """The Feast feature layer: per-entity aggregates over time windows, joined point in time.

    `missing_keys` gives each entity the key its missing values share (so a trip with no company
    still gets the "(unknown)" company's history instead of no row); `windows` are pandas offset
    strings ("1h", "24h", "7d"); `ttl` is how old a feature row may be and still be joined: an entity
    row with no feature row within it is dropped from historical retrieval by Feast, not given nulls.
    """

    missing_keys: dict[str, Any]
    windows: tuple[str, ...]
    aggregates: tuple[AggregateSpec, ...]
    ttl: str


@dataclasses.dataclass(frozen=True)
class ValidationSpec:
    """What data validation (TFDV) knows beyond the statistics: the reviewed parts of the schema, and the gate.

    `ranges`: inclusive [min, max] per numeric column. `domains`: the values a string column may
    take, when the training data may not show them all (a rare payment type). `open_domains`: string columns whose
    training values are not all there are (new taxi companies appear); new values may make up at
    most `1 - min_domain_mass` of their rows, while every other string feature's domain is closed.
    `drift` and `skew`: how far a feature's distribution may move from the previous span's
    (drift) or from the training data's (skew) before it is an anomaly, as L-infinity distance for
    categorical features and Jensen–Shannon divergence for numeric ones; `default` and per-feature
    values. `fail_on_anomalies`: whether the training pipeline stops on an anomaly or only warns.
    """

    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    domains: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    open_domains: tuple[str, ...] = ()
    min_domain_mass: float = 0.9
    drift: dict[str, float] = dataclasses.field(default_factory=lambda: {"default": 0.2})
    skew: dict[str, float] = dataclasses.field(default_factory=lambda: {"default": 0.2})
    fail_on_anomalies: bool = True

    def threshold(self, comparison: Literal["drift", "skew"], feature: str) -> float:
        thresholds = self.drift if comparison == "drift" else self.skew
        return thresholds.get(feature, thresholds["default"])


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
    feature_store: FeatureStoreSpec | None = None  # None: the model uses the raw columns only
    validation: ValidationSpec = ValidationSpec()


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
    _check_expression(label.expression, columns, ("bool",), "label.expression", fail)

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

    entities = declared(raw.get("entities", []), "entities")
    feature_store = _parse_feature_store(raw.get("feature_store"), entities, columns, fail)
    validation = _parse_validation(raw.get("validation"), columns, features, fail)

    return Problem(
        name=str(need(raw, "name", "name")),
        description=str(raw.get("description", "")),
        columns=dict(columns),
        timestamp=timestamp,
        label=label,
        entities=entities,
        features=features,
        eval_fraction=float(eval_fraction),
        source=source,
        evaluation=EvaluationSpec(slices=slices, min_slice_rows=min_slice_rows),
        intended_use=intended_use.strip(),
        feature_store=feature_store,
        validation=validation,
    )


def _parse_feature_store(
    raw: Any, entities: tuple[str, ...], columns: dict[str, Any], fail: Any
) -> FeatureStoreSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("feature_store", "expected a mapping with missing_keys, windows, aggregates and ttl")
    unknown = sorted(set(raw) - {"missing_keys", "windows", "aggregates", "ttl"})
    if unknown:
        raise fail("feature_store", f"unknown key(s) {unknown}; expected missing_keys, windows, aggregates, ttl")
    if not entities:
        raise fail("feature_store", "needs `entities`: the columns its aggregates are grouped by")
    missing_keys = raw.get("missing_keys") or {}
    if not isinstance(missing_keys, dict) or set(missing_keys) != set(entities):
        raise fail("feature_store.missing_keys", f"expected one key for each entity {list(entities)}, "
                                                 f"got {missing_keys!r}")
    for entity, key in missing_keys.items():
        expected, kind = (int, "a whole number") if columns[entity] == "integer" else (str, "text")
        if isinstance(key, bool) or not isinstance(key, expected):
            raise fail(f"feature_store.missing_keys.{entity}", f"expected {kind} like the {columns[entity]} "
                                                               f"column, got {key!r}")
    windows = raw.get("windows")
    if not isinstance(windows, list) or not windows or not all(isinstance(w, str) for w in windows):
        raise fail("feature_store.windows", "expected a non-empty list of durations like 1h, 24h, 7d")
    for window in windows:
        _check_duration(window, "feature_store.windows", fail)
    if len({pd.Timedelta(w) for w in windows}) != len(windows):
        raise fail("feature_store.windows", f"{windows} lists one duration more than once")
    if "ttl" not in raw:
        raise fail("feature_store.ttl", "is required: how old a feature row may be and still be joined (e.g. 30d)")
    _check_duration(raw["ttl"], "feature_store.ttl", fail)
    aggregates_raw = raw.get("aggregates")
    if not isinstance(aggregates_raw, list) or not aggregates_raw:
        raise fail("feature_store.aggregates", "expected a non-empty list of {name, function, of}")
    aggregates = []
    for i, item in enumerate(aggregates_raw):
        field = f"feature_store.aggregates[{i}]"
        if not isinstance(item, dict) or "name" not in item or "function" not in item:
            raise fail(field, "expected {name, function, of}")
        if item["function"] not in get_args(AggregateFunction):
            raise fail(f"{field}.function", f"{item['function']!r} is not one of {list(get_args(AggregateFunction))}")
        if item["function"] != "count" and not item.get("of"):
            raise fail(f"{field}.of", f"{item['function']} needs `of`: a column or expression to aggregate")
        if item["function"] != "count":
            _check_expression(item["of"], columns, ("number", "bool"), f"{field}.of", fail)
        aggregates.append(AggregateSpec(name=str(item["name"]), function=item["function"], of=str(item.get("of", ""))))
    names = [a.name for a in aggregates]
    if len(set(names)) != len(names):
        raise fail("feature_store.aggregates", f"aggregate names must be unique, got {names}")
    return FeatureStoreSpec(missing_keys=dict(missing_keys), windows=tuple(windows), aggregates=tuple(aggregates),
                            ttl=raw["ttl"])


def _parse_validation(raw: Any, columns: dict[str, Any], features: FeatureSpec, fail: Any) -> ValidationSpec:
    if raw is None:
        return ValidationSpec()
    keys = {"ranges", "domains", "open_domains", "min_domain_mass", "drift", "skew", "fail_on_anomalies"}
    if not isinstance(raw, dict) or set(raw) - keys:
        raise fail("validation", f"expected a mapping with some of {sorted(keys)}, got {raw!r}")
    ranges = {}
    for name, bounds in (raw.get("ranges") or {}).items():
        field = f"validation.ranges.{name}"
        if columns.get(name) not in ("integer", "float"):
            raise fail(field, f"{name!r} is not a declared integer or float column")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or bounds[0] > bounds[1]):
            raise fail(field, f"expected [min, max] with min <= max, got {bounds!r}")
        ranges[name] = (bounds[0], bounds[1])
    domains = {}
    for name, values in (raw.get("domains") or {}).items():
        field = f"validation.domains.{name}"
        if columns.get(name) != "string":
            raise fail(field, f"{name!r} is not a declared string column")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise fail(field, f"expected a non-empty list of the values it may take, got {values!r}")
        domains[name] = tuple(values)
    open_domains = raw.get("open_domains") or []
    if not isinstance(open_domains, list) or any(columns.get(name) != "string" for name in open_domains):
        raise fail("validation.open_domains", f"expected a list of declared string columns, got {open_domains!r}")
    min_domain_mass = raw.get("min_domain_mass", ValidationSpec.min_domain_mass)
    if isinstance(min_domain_mass, bool) or not isinstance(min_domain_mass, (int, float)) \
            or not 0 < min_domain_mass <= 1:
        raise fail("validation.min_domain_mass", f"expected a number in (0, 1], got {min_domain_mass!r}")
    thresholds = {}
    for comparison in ("drift", "skew"):
        given = raw.get(comparison) or {}
        if not isinstance(given, dict):
            raise fail(f"validation.{comparison}", f"expected a mapping of feature (or `default`) to a distance, "
                                                   f"like {{default: 0.2, company: 0.3}}, got {given!r}")
        values = {**getattr(ValidationSpec(), comparison), **given}
        for name, value in values.items():
            field = f"validation.{comparison}.{name}"
            if name != "default" and name not in features.all:
                raise fail(field, f"{name!r} is not a feature (features: {list(features.all)}) nor `default`")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise fail(field, f"expected a distance in (0, 1], got {value!r}")
        thresholds[comparison] = {name: float(value) for name, value in values.items()}
    fail_on_anomalies = raw.get("fail_on_anomalies", True)
    if not isinstance(fail_on_anomalies, bool):
        raise fail("validation.fail_on_anomalies", f"expected true or false, got {fail_on_anomalies!r}")
    return ValidationSpec(ranges=ranges, domains=domains, open_domains=tuple(open_domains),
                          min_domain_mass=float(min_domain_mass), drift=thresholds["drift"],
                          skew=thresholds["skew"], fail_on_anomalies=fail_on_anomalies)


def _check_expression(text: Any, columns: dict[str, Any], kinds: tuple[Kind, ...], field: str, fail: Any) -> None:
    if not isinstance(text, str):
        raise fail(field, f"expected an expression as text, got {text!r}")
    try:
        check_expression(text, columns, kinds)
    except ExpressionError as exc:
        raise fail(field, str(exc)) from None


def _check_duration(text: Any, field: str, fail: Any) -> None:
    try:
        if isinstance(text, str) and pd.Timedelta(text) > pd.Timedelta(0):
            return
    except ValueError:
        pass
    raise fail(field, f"{text!r} is not a positive duration like 1h, 24h, 7d")

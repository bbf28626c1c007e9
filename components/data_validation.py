"""Data validation with TFDV: statistics, a curated schema, anomalies, skew and drift (TFX's StatisticsGen,
SchemaGen and ExampleValidator, as plain functions).

This module runs in the `tfdv` runtime (DESIGN.md §3): locally the components call it through
`slipway.runtime_call` from core, on Kubeflow they run on the tfdv image. Every function takes
paths and plain values and returns a JSON-able summary, because that is what crosses the boundary.

- `generate_statistics`: one `DatasetFeatureStatisticsList` per split, written the way TFX lays
  statistics out (`Split-train/FeatureStats.pb`), and a self-contained Facets Overview page.
- `infer_schema`: TFDV's inferred schema, curated from the problem (required columns, closed and
  open categorical domains, numeric ranges, the label's domain, per-feature skew and drift
  comparators), or a reviewed schema pinned by the user, written as `schema.pbtxt`.
- `validate_statistics` / `validate_data`: anomalies of a split (or any CSV/Parquet file)
  against the schema, plus drift from the previous span's or skew from the training statistics.

Column-level problems in the data (a missing column, text in a numeric column, an unknown
category) are anomalies naming the feature, which is what a validation gate is for; file-level
problems (an empty or unreadable file, a schema that does not parse) are `DataValidationError`s
naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

# On import TFDV writes to stderr that its notebook display APIs need IPython; Slipway draws its
# own page (components/facets.py), so that warning would only mislead a reader of the task log.
with contextlib.redirect_stderr(io.StringIO()):
    import tensorflow_data_validation as tfdv

from slipway.atomic import atomic_output, atomic_outputs
from slipway.components import facets
from slipway.components.ingestion import IngestError, read_table
from slipway.problem import Problem, load_problem

log = logging.getLogger(__name__)

STATS_FILE = "FeatureStats.pb"
SCHEMA_FILE = "schema.pbtxt"
TRAINING, SERVING = "TRAINING", "SERVING"
DRIFT, SKEW = "drift", "skew"
# TFDV's anomaly severities, by the names a report shows.
SEVERITIES = {anomalies_pb2.AnomalyInfo.ERROR: "error", anomalies_pb2.AnomalyInfo.WARNING: "warning",
              anomalies_pb2.AnomalyInfo.UNKNOWN: "unknown"}


class DataValidationError(ValueError):
    """The data or the schema cannot be validated at all; the message names the file (and feature)."""


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One feature's anomaly, as a report lists it."""

    feature: str
    kind: str          # TFDV's short description ("Unexpected string values", "High Linfty distance ...")
    severity: str      # error | warning | unknown
    description: str   # TFDV's long description


def split_dir(statistics_dir: str | Path, split: str) -> Path:
    """Where a split's statistics live: TFX's layout, `<dir>/Split-<split>/FeatureStats.pb`."""
    return Path(statistics_dir) / f"Split-{split}"


def load_statistics(statistics_dir: str | Path, split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    path = split_dir(statistics_dir, split) / STATS_FILE
    if not path.is_file():
        available = sorted(p.name.removeprefix("Split-") for p in Path(statistics_dir).glob("Split-*"))
        raise DataValidationError(f"{statistics_dir}: no statistics for split {split!r} (it has {available})")
    return tfdv.load_stats_binary(str(path))


def load_schema(path: str | Path) -> schema_pb2.Schema:
    """Reads a schema.pbtxt, naming the file and the line that does not parse."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: no such schema file")
    try:
        schema = text_format.Parse(path.read_text(), schema_pb2.Schema())
    except text_format.ParseError as exc:
        raise DataValidationError(f"{path}: not a TFDV schema (schema.pbtxt): {exc}") from exc
    if not schema.feature:
        raise DataValidationError(f"{path}: the schema declares no features")
    return schema


def read_dataset(path: str | Path, problem: Problem) -> pd.DataFrame:
    """Reads a CSV or Parquet file into the column types TFDV should see.

    A column the problem declares numeric becomes numeric only when every value parses as a
    number (integers stay integers, missing values and all); otherwise it stays text, so that
    TFDV reports the feature's type as an anomaly instead of the reader hiding it. Timestamps
    become epoch seconds. Columns the problem does not declare keep what the file says.
    """
    try:
        frame = read_table(Path(path), str(path))
    except IngestError as exc:
        raise DataValidationError(str(exc)) from exc
    typed = {}
    for column in frame.columns:
        values = frame[column]
        kind = problem.columns.get(column)
        if kind == "timestamp" and pd.api.types.is_datetime64_any_dtype(values):
            typed[column] = (values.astype("int64") // 10**9).where(values.notna()).astype("Int64")
        elif kind in ("integer", "float", "timestamp") or (kind is None and values.dtype == object):
            typed[column] = _numeric_if_all_parse(values, integer=kind in ("integer", "timestamp"))
        else:
            typed[column] = values
    return pd.DataFrame(typed)


def _numeric_if_all_parse(values: pd.Series, integer: bool) -> pd.Series:
    if values.dtype != object:
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().sum() != values.isna().sum():
        return values  # some value is not a number: TFDV sees (and reports) a text column
    whole = numbers.dropna()
    if integer and bool((whole == whole.round()).all()):
        return numbers.astype("Int64")
    return numbers.astype("float64")


def stats_options(problem: Problem, schema: schema_pb2.Schema | None = None) -> tfdv.StatsOptions:
    """Statistics options: categorical integer columns (hour, community area) are counted as categories.

    Without a schema the problem's categorical features are marked in a minimal one, so that the
    training statistics (and their Facets view) already treat them as categories, as the curated
    schema will.
    """
    if schema is None:
        schema = schema_pb2.Schema()
        for name in problem.features.categorical:
            if problem.columns[name] == "integer":
                feature = schema.feature.add(name=name, type=schema_pb2.INT)
                feature.int_domain.is_categorical = True
    return tfdv.StatsOptions(schema=schema, label_feature=problem.label.name)


def statistics_of(path: str | Path, problem: Problem, schema: schema_pb2.Schema | None = None,
                  name: str = "") -> statistics_pb2.DatasetFeatureStatisticsList:
    frame = read_dataset(path, problem)
    started = time.monotonic()
    # One process: TFDV's n_jobs pool re-imports TensorFlow per worker, 4 s for 10k rows instead of 0.1 s,
    # and was no faster on 200k rows (2 cores).
    statistics = tfdv.generate_statistics_from_dataframe(frame, stats_options(problem, schema))
    statistics.datasets[0].name = name or Path(path).name
    log.info("statistics of %s: %d rows, %d features in %.1f s", path, len(frame), frame.shape[1],
             time.monotonic() - started)
    return statistics


def generate_statistics(splits: dict[str, str], output_dir: str, html_path: str, problem: str) -> dict[str, Any]:
    """Statistics of each split (`{"train": path, "eval": path}`) and one Facets page comparing them."""
    spec = load_problem(problem)
    combined = statistics_pb2.DatasetFeatureStatisticsList()
    summary = {}
    # The folder and the page appear together, complete, or not at all.
    with atomic_outputs([Path(output_dir), Path(html_path)]) as (folder, page):
        for split, path in splits.items():
            statistics = statistics_of(path, spec, name=split)
            split_dir(folder, split).mkdir(parents=True)
            (split_dir(folder, split) / STATS_FILE).write_bytes(statistics.SerializeToString())
            combined.datasets.append(statistics.datasets[0])
            summary[split] = {"rows": int(statistics.datasets[0].num_examples),
                              "features": len(statistics.datasets[0].features)}
        page.write_text(facets.overview_page(combined.SerializeToString(), f"{spec.name}: statistics"),
                        encoding="utf-8")
    return {"splits": summary}


def infer_schema(statistics_dir: str, split: str, schema_path: str, problem: str, pinned_schema: str = "") -> dict:
    """Infers and curates a schema from a split's statistics, or copies a pinned schema after checking it parses."""
    spec = load_problem(problem)
    if pinned_schema:
        schema = load_schema(pinned_schema)
        log.info("using the pinned schema %s (%d features)", pinned_schema, len(schema.feature))
    else:
        schema = curate_schema(tfdv.infer_schema(load_statistics(statistics_dir, split)), spec)
        log.info("inferred a schema of %d features from the %s statistics", len(schema.feature), split)
    with atomic_output(schema_path) as temp:
        temp.write_text(text_format.MessageToString(schema))
    return {"features": len(schema.feature), "pinned": bool(pinned_schema)}


def curate_schema(schema: schema_pb2.Schema, problem: Problem) -> schema_pb2.Schema:
    """Applies what the problem knows and the statistics cannot: the reviewed parts of a schema.

    - presence: every declared column must be there; `features.required` ones in every row, the
      rest may be missing in some (the problem's types allow missing values), even one that never was in training;
    - categorical integer features are categories, with the declared range as their domain;
    - string features keep the domain inferred from training, closed unless `open_domains` lets
      new values in up to `1 - min_domain_mass` of the rows;
    - numeric `ranges`; the label's domain is {0, 1} and it is absent from serving data;
    - each feature gets a skew and a drift comparator: L-infinity distance for categorical
      features, Jensen–Shannon divergence for numeric ones, at the problem's thresholds.
    """
    rules = problem.validation
    features = {feature.name: feature for feature in schema.feature}
    schema.default_environment[:] = [TRAINING, SERVING]
    for name, feature in features.items():
        if name in problem.columns and name not in problem.features.required:
            # A column never missing in training may be missing later: TFDV's inferred fixed shape (one value in
            # every row) would call one missing value "Feature shape dropped".
            feature.presence.ClearField("min_fraction")
            feature.ClearField("shape")
    for name in problem.features.required:
        if name in features:
            features[name].presence.min_fraction = 1.0
    for name, (low, high) in rules.ranges.items():
        if name not in features:
            continue
        if features[name].type == schema_pb2.INT:
            features[name].int_domain.min, features[name].int_domain.max = int(low), int(high)
        else:
            features[name].float_domain.min, features[name].float_domain.max = float(low), float(high)
    for name in problem.features.categorical:
        if name in features and features[name].type == schema_pb2.INT:
            features[name].int_domain.is_categorical = True
    for name, values in rules.domains.items():
        if name in features:
            _set_string_domain(schema, features[name], values)
    for name in rules.open_domains:
        if name in features:
            features[name].distribution_constraints.min_domain_mass = rules.min_domain_mass
    label = features.get(problem.label.name)
    if label is not None:
        label.int_domain.min, label.int_domain.max = 0, 1
        label.presence.min_fraction = 1.0
        label.not_in_environment.append(SERVING)
    for name in problem.features.all:
        if name not in features:
            continue
        for kind, comparator in ((SKEW, features[name].skew_comparator), (DRIFT, features[name].drift_comparator)):
            threshold = rules.threshold(kind, name)
            if name in problem.features.categorical:
                comparator.infinity_norm.threshold = threshold
            else:
                comparator.jensen_shannon_divergence.threshold = threshold
                # Equal-mass buckets: one outlier (a 1,710-mile trip) squeezes equal-width buckets into one.
                comparator.jensen_shannon_divergence.source.type = schema_pb2.HistogramSelection.QUANTILES
    # infer_schema also lists the values of categorical integers as named string domains that no
    # feature uses once they are integer categories: drop those, so the schema reads as it validates.
    used = {feature.domain for feature in schema.feature if feature.HasField("domain")}
    unused = [domain for domain in schema.string_domain if domain.name not in used]
    for domain in unused:
        schema.string_domain.remove(domain)
    return schema


def _set_string_domain(schema: schema_pb2.Schema, feature: schema_pb2.Feature, values: tuple[str, ...]) -> None:
    """Gives a string feature exactly the declared values (TFDV may have inferred a shared, named domain)."""
    if feature.HasField("domain"):
        for domain in schema.string_domain:
            if domain.name == feature.domain:
                schema.string_domain.remove(domain)
                break
    feature.string_domain.Clear()
    feature.string_domain.value.extend(values)


def validate_statistics(statistics_dir: str, split: str, schema_path: str, anomalies_path: str, problem: str,
                        baseline_dir: str = "", baseline_split: str = "", comparison: str = DRIFT) -> dict:
    """Anomalies of one split's statistics against the schema, and its drift (or skew) from a baseline split."""
    spec = load_problem(problem)
    statistics = load_statistics(statistics_dir, split)
    baseline = load_statistics(baseline_dir, baseline_split) if baseline_dir else None
    return _validate(statistics, load_schema(schema_path), spec, baseline, comparison, anomalies_path)


def validate_data(data: str, schema_path: str, anomalies_path: str, problem: str,
                  training_statistics: str = "", training_split: str = "train") -> dict:
    """Statistics of any CSV/Parquet file against a schema, and its skew from the training statistics if given.

    The data is judged in the TRAINING environment when it carries the label column, else in
    SERVING (where the label is not expected): raw sources and serving logs have no label.
    """
    spec = load_problem(problem)
    schema = load_schema(schema_path)
    statistics = statistics_of(data, spec, schema)
    baseline = load_statistics(training_statistics, training_split) if training_statistics else None
    return _validate(statistics, schema, spec, baseline, SKEW, anomalies_path)


def _validate(statistics: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema, problem: Problem,
              baseline: statistics_pb2.DatasetFeatureStatisticsList | None, comparison: str,
              anomalies_path: str) -> dict:
    if comparison not in (DRIFT, SKEW):
        raise DataValidationError(f"comparison {comparison!r}: expected {DRIFT!r} or {SKEW!r}")
    dataset = statistics.datasets[0]
    if dataset.num_examples == 0:
        raise DataValidationError(f"{dataset.name}: no rows to validate")
    has_label = any(f.path.step == [problem.label.name] for f in dataset.features)
    environment = TRAINING if has_label else SERVING
    # Skew compares "training" statistics with serving ones, drift the current span with the previous;
    # both distances are symmetric, so the data under test is always `statistics` and the schema check
    # applies to it alone.
    anomalies = tfdv.validate_statistics(
        statistics, schema, environment=environment,
        previous_statistics=baseline if comparison == DRIFT else None,
        serving_statistics=baseline if comparison == SKEW else None)
    with atomic_output(anomalies_path) as temp:
        temp.write_text(text_format.MessageToString(anomalies))
    found = anomaly_list(anomalies)
    for anomaly in found:
        log.warning("anomaly in %s: %s (%s): %s", anomaly.feature, anomaly.kind, anomaly.severity, anomaly.description)
    log.info("%s: %d anomalies against the schema (%s environment%s)", dataset.name, len(found), environment,
             f", {comparison} from {baseline.datasets[0].name}" if baseline else "")
    return {"dataset": dataset.name, "rows": int(dataset.num_examples), "environment": environment,
            "comparison": comparison if baseline else "", "anomalies": [dataclasses.asdict(a) for a in found]}


def anomaly_list(anomalies: anomalies_pb2.Anomalies) -> list[Anomaly]:
    """One `Anomaly` per reason TFDV gives, feature by feature (dataset-level ones under `(dataset)`)."""
    found = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        for reason in info.reason or [anomalies_pb2.AnomalyInfo.Reason(short_description=info.short_description,
                                                                      description=info.description)]:
            found.append(Anomaly(feature=feature, kind=reason.short_description,
                                 severity=SEVERITIES.get(info.severity, "unknown"), description=reason.description))
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        for reason in info.reason:
            found.append(Anomaly(feature="(dataset)", kind=reason.short_description,
                                 severity=SEVERITIES.get(info.severity, "unknown"), description=reason.description))
    return found

"""Online drift: the model's live traffic, in windows, against the data it was trained on, as Prometheus metrics.

On Kubeflow, KServe's logger (InferenceService `spec.predictor.logger`, mode `all`) POSTs every request and
response as a CloudEvent to this service; locally the model server writes the same events to its JSONL
prediction log (serving/prediction_log.py), which the monitor follows. Both feed one `DriftMonitor`:

    monitor = DriftMonitor(MonitorConfig.load("drift-monitor.yaml"))
    monitor.observe(event)            # each logged request / response
    monitor.latest                    # the last closed window: level, per-feature PSI
    generate_latest(monitor.registry) # what GET /metrics answers

Each window of `window_rows` scored rows (whole requests, so a window may hold a few more) is measured
feature by feature against the reference with the batch drift step's PSI: the same bins, the same floor
(components/drift_detection.py `feature_psi`). The level follows the PSI bands, < 0.1 none, 0.1-0.2
warning, > 0.2 critical, with one guard the batch step gets from its statistical tests: alibi-detect
lives in its own runtime and takes seconds to start, too slow per window, so noise is told from movement
by PSI itself. For two samples of one distribution, PSI x n_eff is about chi-squared with bins - 1
degrees of freedom (slipway/psi.py), and a feature whose PSI is within what noise gives at `alpha` is
`none` whatever its band. That matters for a feature with many categories: at 1,000 rows, noise alone
puts `company`'s PSI near the warning band.

With `model` configured (a model directory, or an s3://, gs:// or models:/ URI), the window also has
a `prediction` row: the scores the model answered (its logged responses, degraded ones left out)
against its own scores on the reference, as the batch step's `prediction` row. The reference is the
training set the pipeline registered, which holds the point-in-time Feast features the model reads,
so this works where the batch step's row cannot (a raw batch has no Feast features): the served
model's answers had them.

`alert_level` (config) is the level at which `slipway_drift_alert` turns 1: the series an alerting rule
watches. With `labels` and `baseline_auc` configured, each closed window also re-reads the labels file
and joins it to the scores of the requests seen so far (components/feedback.py), exposing the live AUC
and whether it dropped more than `max_drop_percent` below the baseline.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from cloudevents.http import CloudEvent
from prometheus_client import CollectorRegistry, Counter, Gauge
from scipy.stats import chi2

from slipway.components.drift_detection import INSUFFICIENT, LEVELS, PREDICTION, DriftConfig, feature_psi
from slipway.components.feedback import (
    INSTANCE,
    REQUEST_ID,
    SCORE,
    FeedbackError,
    FeedbackPolicy,
    LivePerformance,
    live_performance,
    read_labels,
    response_scores,
)
from slipway.components.ingestion import IngestError, enforce_types, read_table
from slipway.problem import DEFAULT_PROBLEM, Problem, load_problem
from slipway.psi import Level, psi_level
from slipway.serving.prediction_log import DEGRADED_ATTR, MODEL_NAME_ATTR, REQUEST_EVENT_TYPE, RESPONSE_EVENT_TYPE
from slipway.storage import StorageError, download

log = logging.getLogger(__name__)


class MonitorConfigError(ValueError):
    """The monitor's configuration or reference is unusable; the message names the file and field."""


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """What the monitor compares, how often, and when it alerts. `MonitorConfig.load` reads it from YAML."""

    reference: str = ""  # required: the data the model was trained on, CSV or Parquet, a path or any storage URI
    problem: str = DEFAULT_PROBLEM
    model_name: str = ""  # only this model's events ("" = every event that reaches the monitor)
    window_rows: int = 1000
    bins: int = 10
    min_rows: int = 100  # a feature with fewer values in a window is `insufficient data`
    alpha: float = 0.01  # the noise guard: a PSI that noise reaches this often counts as none
    alert_level: Level = "critical"
    labels: str = ""  # a file of request ids and outcomes (components/feedback.py), re-read each window
    baseline_auc: float | None = None  # the model's offline AUC; needed with `labels`
    max_drop_percent: float = FeedbackPolicy.max_drop_percent
    min_labels: int = FeedbackPolicy.min_labels
    max_tracked_requests: int = 100_000  # the newest requests whose scores are kept for late labels
    model: str = ""  # the served model (a folder, s3://, gs:// or models:/ URI): adds the `prediction` row
    tracking_uri: str = ""  # the MLflow registry of a models:/ `model` (default: MLFLOW_TRACKING_URI, else local)

    def __post_init__(self) -> None:
        if not self.reference:
            raise MonitorConfigError("reference: required, the URI of the data the model was trained on")
        for name in ("window_rows", "min_rows", "max_tracked_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MonitorConfigError(f"{name}: expected a whole number of at least 1, got {value!r}")
        if self.min_rows > self.window_rows:
            raise MonitorConfigError(f"min_rows ({self.min_rows}) is larger than window_rows ({self.window_rows}): "
                                     "no feature could ever be measured")
        if not 0 < self.alpha < 1:
            raise MonitorConfigError(f"alpha: expected a probability in (0, 1), got {self.alpha!r}")
        if self.alert_level not in LEVELS[1:]:
            raise MonitorConfigError(f"alert_level: expected one of {list(LEVELS[1:])}, got {self.alert_level!r}")
        if self.labels and self.baseline_auc is None:
            raise MonitorConfigError("baseline_auc: required with labels, the AUC the live AUC is compared with "
                                     "(the model's eval AUC in its registry run)")
        try:
            self.drift_config()
            self.feedback_policy()
        except ValueError as exc:
            raise MonitorConfigError(str(exc)) from None

    @classmethod
    def load(cls, path: Path | str) -> MonitorConfig:
        """Reads the YAML file at `path`; an unknown key or a bad value is an error naming the file and key."""
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise MonitorConfigError(f"{path}: not a readable YAML file: {exc}") from None
        if not isinstance(raw, dict):
            raise MonitorConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MonitorConfigError(f"{path}: unknown setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**raw)
        except (MonitorConfigError, TypeError) as exc:
            raise MonitorConfigError(f"{path}: {exc}") from None

    def drift_config(self) -> DriftConfig:
        return DriftConfig(bins=self.bins, min_rows=self.min_rows, mmd_sample_rows=0)

    def feedback_policy(self) -> FeedbackPolicy:
        return FeedbackPolicy(max_drop_percent=self.max_drop_percent, min_labels=self.min_labels)


@dataclasses.dataclass(frozen=True)
class WindowFeature:
    feature: str
    psi: float | None
    noise_psi: float | None  # the PSI that noise alone reaches with probability alpha at this window's size
    level: Level | str  # or "insufficient data"
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Window:
    """One closed window of traffic, measured."""

    number: int
    rows: int
    first_time: str  # the CloudEvent times of its first and last request
    last_time: str
    features: tuple[WindowFeature, ...]
    alert_level: Level

    @property
    def level(self) -> Level:
        measured = [f.level for f in self.features if f.level in LEVELS]
        return max(measured, key=LEVELS.index, default="none")

    @property
    def alert(self) -> bool:
        return LEVELS.index(self.level) >= LEVELS.index(self.alert_level)

    def line(self) -> str:
        """One log line: the window, its level, and the features that moved."""
        moved = ", ".join(f"{f.feature} {f.psi:.3f} ({f.level})" for f in self.features
                          if f.level in LEVELS[1:] and f.psi is not None)
        return (f"window {self.number}: {self.rows} rows {self.first_time} .. {self.last_time}: {self.level}"
                f"{' ALERT' if self.alert else ''}{': ' + moved if moved else ''}")

    def to_json(self) -> dict[str, Any]:
        return {"window": self.number, "rows": self.rows, "first_time": self.first_time, "last_time": self.last_time,
                "level": self.level, "alert": self.alert,
                "features": [dataclasses.asdict(feature) for feature in self.features]}


class DriftMonitor:
    """Windows the logged requests, measures each window against the reference, and keeps the metrics.

    Thread-safe: the HTTP handler and the log follower may call `observe` at once. Each monitor has its own
    Prometheus registry (`registry`), so several monitors (tests, one per model) never clash.
    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.problem = load_problem(config.problem)
        self.features = list(self.problem.features.all)
        raw = read_reference(config.reference)
        self.reference = reference_features(raw, config.reference, self.problem)
        self.reference_scores = reference_scores(raw, config) if config.model else None
        self._window_scores: list[float] = []
        self.latest: Window | None = None
        self.performance: LivePerformance | None = None
        self._lock = threading.Lock()
        self._columns: dict[str, list[Any]] = {name: [] for name in self.features}
        self._rows = 0
        self._times: list[str] = []
        self._windows = 0
        self._scores: collections.OrderedDict[str, tuple[list[float], bool]] = collections.OrderedDict()
        self.registry = CollectorRegistry()
        self._metrics = _Metrics(self.registry)

    def observe(self, event: CloudEvent) -> Window | None:
        """Takes one logged event; returns the window it closed, if it closed one."""
        model = event.get(MODEL_NAME_ATTR) or ""
        if self.config.model_name and model != self.config.model_name:
            return self._skip("other_model")
        kind = event["type"]
        if kind == RESPONSE_EVENT_TYPE:
            self._track(event)
            return None
        if kind != REQUEST_EVENT_TYPE:
            return self._skip("not_inference")
        try:
            columns = request_columns(event.data, self.features)
        except ValueError as exc:
            log.warning("request %s: %s", event["id"], exc)
            return self._skip("unreadable_request")
        if columns is None:
            return self._skip("no_monitored_features")
        rows = len(columns[self.features[0]])
        with self._lock:
            self._metrics.rows.inc(rows)
            for name, values in columns.items():
                self._columns[name].extend(values)
            self._rows += rows
            self._times.append(event.get("time") or "")
            if self._rows < self.config.window_rows:
                return None
            window = self._close()
        log.info("%s", window.line())
        return window

    def flush(self) -> Window | None:
        """Closes the open window early, if it holds at least `min_rows` rows (fewer could not be measured): the last
        part of a replayed log. Returns it, or None."""
        with self._lock:
            if self._rows < self.config.min_rows:
                return None
            window = self._close()
        log.info("%s", window.line())
        return window

    def _close(self) -> Window:
        """Measures the open window and starts the next; the caller holds the lock."""
        frame, times, scores = pd.DataFrame(self._columns), self._times, self._window_scores
        self._columns, self._rows, self._times = {name: [] for name in self.features}, 0, []
        self._window_scores = []
        self._windows += 1
        window = self._measure(self._windows, frame, times, scores)
        self.latest = window
        if self.config.labels:
            self.performance = self._judge_performance()
        return window

    def _measure(self, number: int, frame: pd.DataFrame, times: list[str], scores: list[float]) -> Window:
        current = typed_like(frame, self.reference)
        numeric, categorical = self.problem.features.numeric, self.problem.features.categorical
        config = self.config.drift_config()
        measured = feature_psi(self.reference, current, numeric, categorical, config)
        features = tuple(self._feature(name, measured[name]) for name in self.features)
        if self.reference_scores is not None:
            # The responses of the window's requests, give or take the few answered as the window closed.
            scored = feature_psi(pd.DataFrame({PREDICTION: self.reference_scores}),
                                 pd.DataFrame({PREDICTION: np.asarray(scores, dtype=float)}), [PREDICTION], [], config)
            features += (self._feature(PREDICTION, scored[PREDICTION]),)
        window = Window(number=number, rows=len(frame), first_time=times[0], last_time=times[-1], features=features,
                        alert_level=self.config.alert_level)
        self._metrics.record(window)
        return window

    def _feature(self, name: str, measured: dict[str, Any]) -> WindowFeature:
        if "reason" in measured:
            return WindowFeature(name, psi=None, noise_psi=None, level=INSUFFICIENT, reason=measured["reason"])
        bins = (self.reference[name].nunique() + 1 if name in self.problem.features.categorical
                else len(measured["bins"]))  # numeric and the prediction row: every bin is labelled
        n_ref, n_cur = measured["reference_rows"], measured["current_rows"]
        noise = float(chi2.ppf(1 - self.config.alpha, bins - 1)) * (n_ref + n_cur) / (n_ref * n_cur)
        value = measured["psi"]
        return WindowFeature(name, psi=value, noise_psi=noise, level=psi_level(value) if value > noise else "none")

    def _track(self, event: CloudEvent) -> None:
        """Keeps the response's scores: for the window's `prediction` row, and under the request id for labels that
        arrive later."""
        if self.reference_scores is None and not self.config.labels:
            return
        scores = response_scores(event.data)
        degraded = event.get(DEGRADED_ATTR) is not None
        with self._lock:
            if self.reference_scores is not None and not degraded:
                self._window_scores.extend(scores)
            if not self.config.labels:
                return
            self._scores[event["id"]] = (scores, degraded)
            self._scores.move_to_end(event["id"])
            while len(self._scores) > self.config.max_tracked_requests:
                self._scores.popitem(last=False)

    def _judge_performance(self) -> LivePerformance | None:
        try:
            labels = read_labels(self.config.labels)
        except FeedbackError as exc:
            log.warning("live AUC not updated: %s", exc)
            return self.performance
        scores = pd.DataFrame(
            [(request, index, score, degraded) for request, (values, degraded) in self._scores.items()
             for index, score in enumerate(values)],
            columns=[REQUEST_ID, INSTANCE, SCORE, "degraded"])
        try:
            result = live_performance(scores, labels, float(self.config.baseline_auc or 0),
                                      self.config.feedback_policy())
        except FeedbackError as exc:
            log.warning("live AUC not updated: %s", exc)
            return self.performance
        self._metrics.record_performance(result)
        log.info("%s", result.summary())
        return result

    def _skip(self, reason: str) -> None:
        """Counts an event the windows do not take, by why."""
        self._metrics.skipped.labels(reason).inc()
        return None


class _Metrics:
    """The monitor's Prometheus series. Levels are numbers: 0 none, 1 warning, 2 critical, -1 insufficient data."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.psi = Gauge("slipway_drift_psi", "PSI of the feature in the last window against the reference.",
                         ["feature"], registry=registry)
        self.feature_level = Gauge("slipway_drift_feature_level",
                                   "Level of the feature in the last window: 0 none, 1 warning, 2 critical, "
                                   "-1 insufficient data.", ["feature"], registry=registry)
        self.level = Gauge("slipway_drift_level", "Level of the last window (its worst feature's): 0 none, "
                           "1 warning, 2 critical.", registry=registry)
        self.alert = Gauge("slipway_drift_alert", "1 when the last window's level reached the configured "
                           "alert_level.", registry=registry)
        self.windows = Counter("slipway_drift_windows", "Windows measured, by level.", ["level"], registry=registry)
        self.rows = Counter("slipway_drift_rows", "Request rows read into windows.", registry=registry)
        self.skipped = Counter("slipway_drift_events_skipped", "Events not windowed: other_model, not_inference, "
                               "unreadable_request, no_monitored_features.", ["reason"], registry=registry)
        self.live_auc = Gauge("slipway_live_auc", "AUC of the labelled scores seen so far.", registry=registry)
        self.baseline_auc = Gauge("slipway_live_auc_baseline", "The offline AUC live AUC is judged against.",
                                  registry=registry)
        self.labelled = Gauge("slipway_live_labelled_rows", "Scored rows with a label.", registry=registry)
        self.auc_dropped = Gauge("slipway_live_auc_dropped", "1 when live AUC fell more than max_drop_percent "
                                 "below the baseline: retrain.", registry=registry)

    def record(self, window: Window) -> None:
        for feature in window.features:
            measured = feature.level in LEVELS
            self.feature_level.labels(feature.feature).set(LEVELS.index(feature.level) if measured else -1)
            self.psi.labels(feature.feature).set(feature.psi if feature.psi is not None else math.nan)
        self.level.set(LEVELS.index(window.level))
        self.alert.set(int(window.alert))
        self.windows.labels(window.level).inc()

    def record_performance(self, result: LivePerformance) -> None:
        self.baseline_auc.set(result.baseline_auc)
        self.labelled.set(result.labelled)
        self.live_auc.set(result.auc if result.auc is not None else math.nan)
        self.auc_dropped.set(int(result.dropped))


def read_reference(uri: str) -> pd.DataFrame:
    """The reference data at `uri` (CSV or Parquet, a path or any storage URI), every column."""
    with tempfile.TemporaryDirectory(prefix="slipway-monitor-") as tmp:
        local = Path(tmp) / (Path(uri.split("?")[0]).name or "reference")
        try:
            download(uri, local)
            return read_table(local, uri)
        except (IngestError, StorageError, OSError) as exc:
            raise MonitorConfigError(f"reference {uri}: {exc}") from None


def reference_features(raw: pd.DataFrame, uri: str, problem: Problem) -> pd.DataFrame:
    """The problem's features of the reference, typed as the problem declares them."""
    columns = list(problem.features.all)
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise MonitorConfigError(f"reference {uri}: no column(s) {missing}; expected every feature of the problem "
                                 f"{problem.name!r}")
    try:
        return enforce_types(raw[columns], dataclasses.replace(problem, columns={c: problem.columns[c]
                                                                                 for c in columns}), uri)
    except IngestError as exc:
        raise MonitorConfigError(f"reference {uri}: {exc}") from None


def reference_scores(raw: pd.DataFrame, config: MonitorConfig) -> np.ndarray:
    """The configured model's scores on every reference row: what its live scores are compared with."""
    from slipway.components.model_artifact import ModelArtifactError, load_model  # torch: only with a model
    from slipway.components.preprocessing import FeatureInputError
    from slipway.components.registry import RegistryError
    from slipway.serving.model_source import fetch_model

    with tempfile.TemporaryDirectory(prefix="slipway-monitor-model-") as tmp:
        try:
            model = load_model(fetch_model(config.model, Path(tmp), config.tracking_uri).path)
        except (ModelArtifactError, RegistryError, StorageError, OSError) as exc:
            raise MonitorConfigError(f"model {config.model}: {exc}") from None
    needed = [*model.preprocessing.numeric, *model.preprocessing.categorical]
    lacking = [c for c in needed if c not in raw.columns]
    if lacking:
        raise MonitorConfigError(f"model {config.model} reads column(s) {lacking} that the reference "
                                 f"{config.reference} lacks: give the training set the model was fitted on")
    try:
        return model.predict_proba(raw)
    except FeatureInputError as exc:
        raise MonitorConfigError(f"model {config.model} cannot score the reference {config.reference}: {exc}") from None


def request_columns(body: Any, features: list[str]) -> dict[str, list[Any]] | None:
    """The monitored features of one logged request body, a list of values per feature (None where a row has
    no value); None when the request carries none of them (a transformer-bound request of entity ids). V1
    `instances` of objects, or V2 `inputs` as a list of named tensors (REST) or a mapping of columns (how the
    local server logs gRPC requests). A body of any other shape is a ValueError saying what it lacks."""
    if not isinstance(body, Mapping):
        raise ValueError(f"the request body is {type(body).__name__}, not a V1 or V2 JSON object")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not all(isinstance(i, Mapping) for i in instances):
            raise ValueError("`instances` is not a list of objects")
        if not instances or not any(f in instance for instance in instances for f in features):
            return None
        return {f: [instance.get(f) for instance in instances] for f in features}
    if "inputs" not in body:
        raise ValueError("neither `instances` (V1) nor `inputs` (V2)")
    inputs = body["inputs"]
    if isinstance(inputs, Mapping):
        given = dict(inputs)
    elif isinstance(inputs, list) and all(isinstance(t, Mapping) and "name" in t for t in inputs):
        given = {t["name"]: np.ravel(t.get("data", [])).tolist() for t in inputs}
    else:
        raise ValueError("`inputs` is neither a list of named tensors nor a mapping of columns")
    present = {f: list(given[f]) for f in features if f in given}
    lengths = {len(values) for values in present.values()}
    if len(lengths) > 1:
        raise ValueError(f"the input tensors have different lengths {sorted(lengths)}")
    if not present or lengths == {0}:
        return None
    rows = lengths.pop()
    return {f: present.get(f, [None] * rows) for f in features}


def typed_like(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s columns as the reference types them; a value that is not of the type counts as missing."""
    typed = {}
    for name in reference.columns:
        column, kind = frame[name], reference[name].dtype
        if pd.api.types.is_numeric_dtype(kind):
            typed[name] = pd.to_numeric(column, errors="coerce")
        else:
            typed[name] = column.where(column.isna(), column.astype(str))
    return pd.DataFrame(typed)

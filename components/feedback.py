"""Feedback: labels that arrive after the answer, joined to the prediction log, give the model's live AUC.

Whether a taxi trip tipped is known only when the trip is paid, long after the model scored it. Those
outcomes come back as a file of request ids and outcomes:

    request_id,outcome              (CSV or Parquet, any storage URI)
    4f1c...,1
    9a0e...,0

with an optional `instance` column: the row's position in a request that scored several rows (0 when
absent; then every labelled request must have scored exactly one row). `outcome` is 0/1 or
true/false. The prediction log (serving/prediction_log.py) holds the score each request was answered
with, under the same request id; joining the two gives (score, outcome) pairs and so the live AUC.

The live AUC is compared with a baseline, the AUC the model had offline on its eval split when it
was blessed. A drop of more than `max_drop_percent` of the baseline (default 5%: 0.90 -> below 0.855)
is a performance drop that triggers retraining, like critical drift does. Answers marked degraded
(the fallback score, serving/predictor.py) are left out: they are not the model's. With fewer than
`min_labels` labelled rows, or labels of one class only, there is no AUC to judge, and the result
says so instead of guessing.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from cloudevents.http import CloudEvent

from slipway.components.ingestion import IngestError, read_table
from slipway.serving.prediction_log import (
    DEGRADED_ATTR,
    RESPONSE_EVENT_TYPE,
    PredictionLogError,
    log_files,
    read_events,
)
from slipway.serving.protocol import OUTPUT_NAME
from slipway.storage import StorageError, download

REQUEST_ID = "request_id"
OUTCOME = "outcome"
INSTANCE = "instance"
SCORE = "score"
TRUE_VALUES = frozenset({"1", "true", "yes"})
FALSE_VALUES = frozenset({"0", "false", "no"})
NO_RETRAINING = "none"


class FeedbackError(ValueError):
    """Labels or log that cannot be joined; the message names the file, column or request."""


@dataclasses.dataclass(frozen=True)
class FeedbackPolicy:
    """When live performance counts as dropped."""

    max_drop_percent: float = 5.0  # of the baseline AUC, relative
    min_labels: int = 200  # labelled rows needed before a live AUC is judged

    def __post_init__(self) -> None:
        if not 0 < self.max_drop_percent < 100:
            raise ValueError(f"max_drop_percent: expected a percentage in (0, 100), got {self.max_drop_percent}")
        if self.min_labels < 2:
            raise ValueError(f"min_labels: expected at least 2, got {self.min_labels}")


@dataclasses.dataclass(frozen=True)
class LivePerformance:
    """The model's AUC on the labelled part of its traffic, against its offline baseline."""

    baseline_auc: float
    policy: FeedbackPolicy
    labelled: int  # rows with both a logged score and an outcome
    positives: int
    unmatched_labels: int  # labels whose request is not in the log (not sampled, or rotated away)
    degraded: int  # labelled rows answered with the fallback score, left out
    auc: float | None = None
    reason: str = ""  # why there is no AUC to judge

    @property
    def drop_percent(self) -> float | None:
        """How far the live AUC is below the baseline, in percent of the baseline (negative: above it)."""
        return None if self.auc is None else 100 * (self.baseline_auc - self.auc) / self.baseline_auc

    @property
    def dropped(self) -> bool:
        """True when the live AUC is more than `max_drop_percent` below the baseline: retrain."""
        drop = self.drop_percent
        return drop is not None and drop > self.policy.max_drop_percent

    def summary(self) -> str:
        if self.auc is None:
            return f"live AUC: not judged ({self.reason}); baseline {self.baseline_auc:.4f}"
        drop = self.drop_percent or 0.0
        verdict = "dropped: retrain" if self.dropped else "within the allowed drop"
        return (f"live AUC {self.auc:.4f} on {self.labelled} labelled rows ({self.positives} positive): "
                f"{abs(drop):.1f}% {'below' if drop > 0 else 'above'} the baseline {self.baseline_auc:.4f} "
                f"({verdict}, limit {self.policy.max_drop_percent:g}%)")

    def metrics(self) -> dict[str, float]:
        values = {"baseline_auc": self.baseline_auc, "labelled_rows": float(self.labelled),
                  "unmatched_labels": float(self.unmatched_labels), "performance_dropped": float(self.dropped)}
        if self.auc is not None:
            values |= {"live_auc": self.auc, "auc_drop_percent": round(self.drop_percent or 0.0, 4) + 0.0}  # no -0
        return values


def judge_live_performance(prediction_log: str, labels_uri: str, baseline_auc: float,
                           policy: FeedbackPolicy | None = None) -> LivePerformance:
    """The live AUC of the model behind `prediction_log` (a local log, rotated files included, or one log file
    at any storage URI) on the outcomes in `labels_uri`, judged against `baseline_auc`."""
    labels = read_labels(labels_uri)
    if "://" not in prediction_log:
        return live_performance(logged_scores(_events(prediction_log)), labels, baseline_auc, policy)
    with tempfile.TemporaryDirectory(prefix="slipway-log-") as tmp:
        local = Path(tmp) / "predictions.jsonl"
        try:
            download(prediction_log, local)
        except (StorageError, OSError) as exc:
            raise FeedbackError(f"prediction log {prediction_log}: {exc}") from None
        return live_performance(logged_scores(_events(local)), labels, baseline_auc, policy)


def retrain_reason(drift_level: str, performance: LivePerformance | None, retrain_at: str = "critical") -> str:
    """Why a continuous-training run retrains: "critical drift" (at `retrain_at`), "live AUC drop", both joined by
    " and ", or "none". Either alone is reason enough: drift says the inputs moved, the drop that the answers got
    worse, and each can happen without the other (a new fraud pattern in unchanged-looking data)."""
    reasons = [f"{retrain_at} drift"] if drift_level == retrain_at else []
    if performance is not None and performance.dropped:
        reasons.append("live AUC drop")
    return " and ".join(reasons) or NO_RETRAINING


def read_labels(uri: str) -> pd.DataFrame:
    """The labels file at `uri` as columns request_id (str), instance (Int64; missing when the file has no
    `instance` column), outcome (0/1), one row per label."""
    with tempfile.TemporaryDirectory(prefix="slipway-labels-") as tmp:
        local = Path(tmp) / (Path(uri.split("?")[0]).name or "labels")
        try:
            download(uri, local)
            raw = read_table(local, uri)
        except (IngestError, StorageError, OSError) as exc:
            raise FeedbackError(f"labels {uri}: {exc}") from None
    missing = [c for c in (REQUEST_ID, OUTCOME) if c not in raw.columns]
    if missing:
        raise FeedbackError(f"labels {uri}: no column(s) {missing}; expected {REQUEST_ID}, {OUTCOME} "
                            f"(0/1 or true/false) and optionally {INSTANCE}, got {list(raw.columns)}")
    ids = raw[REQUEST_ID]
    if ids.isna().any():
        raise FeedbackError(f"labels {uri}: column {REQUEST_ID!r} is empty in row(s) "
                            f"{_rows(np.flatnonzero(ids.isna()))}")
    labels = pd.DataFrame({REQUEST_ID: ids.astype(str),
                           INSTANCE: _instances(raw, uri),
                           OUTCOME: _outcomes(raw[OUTCOME], uri)})
    duplicated = labels.duplicated([REQUEST_ID, INSTANCE])
    if duplicated.any():
        raise FeedbackError(f"labels {uri}: request {labels[REQUEST_ID][duplicated].iloc[0]!r} is labelled twice "
                            f"(rows {_rows(np.flatnonzero(duplicated))}); give each scored row one outcome")
    return labels


def logged_scores(events: Iterable[CloudEvent]) -> pd.DataFrame:
    """Every score of the log's response events: request_id, instance, score, degraded (bool)."""
    ids: list[str] = []
    instances: list[int] = []
    scores: list[float] = []
    degraded: list[bool] = []
    for event in events:
        if event["type"] != RESPONSE_EVENT_TYPE:
            continue
        values = response_scores(event.data)
        ids += [event["id"]] * len(values)
        instances += range(len(values))
        scores += values
        degraded += [event.get(DEGRADED_ATTR) is not None] * len(values)
    return pd.DataFrame({REQUEST_ID: pd.Series(ids, dtype=str), INSTANCE: pd.Series(instances, dtype="int64"),
                         SCORE: pd.Series(scores, dtype=float), "degraded": pd.Series(degraded, dtype=bool)})


def response_scores(body: object) -> list[float]:
    """The scores of one logged response: V1 `predictions`, or the V2 output named "probability" (else the
    first). Anything else has no scores: []."""
    if isinstance(body, dict):
        if isinstance(body.get("predictions"), list):
            return [float(v) for v in body["predictions"]]
        outputs = body.get("outputs")
        if isinstance(outputs, list) and outputs:
            named = [o for o in outputs if isinstance(o, dict) and o.get("name") == OUTPUT_NAME]
            chosen = named[0] if named else outputs[0]
            if isinstance(chosen, dict) and isinstance(chosen.get("data"), list):
                return [float(v) for v in np.ravel(chosen["data"])]
    return []


def live_performance(scores: pd.DataFrame, labels: pd.DataFrame, baseline_auc: float,
                     policy: FeedbackPolicy | None = None) -> LivePerformance:
    """Joins `labels` (read_labels) to `scores` (logged_scores) by request id and row, and judges the live AUC."""
    policy = policy or FeedbackPolicy()
    if not 0.5 < baseline_auc <= 1 or not math.isfinite(baseline_auc):
        raise FeedbackError(f"baseline_auc: expected the model's offline AUC in (0.5, 1], got {baseline_auc}")
    joined = _placed(labels, scores).merge(scores, on=[REQUEST_ID, INSTANCE], how="left")
    matched = joined[joined[SCORE].notna()]
    degraded = int(matched["degraded"].sum())
    used = matched[~matched["degraded"].astype(bool)]
    outcome = used[OUTCOME].to_numpy()
    common = {"baseline_auc": baseline_auc, "policy": policy, "labelled": len(used), "positives": int(outcome.sum()),
              "unmatched_labels": len(joined) - len(matched), "degraded": degraded}
    if len(used) < policy.min_labels:
        return LivePerformance(**common, reason=f"{len(used)} labelled rows, fewer than min_labels "
                                                f"{policy.min_labels}")
    if len(np.unique(outcome)) < 2:
        return LivePerformance(**common, reason=f"every labelled outcome is {int(outcome[0])}: AUC needs both")
    from sklearn.metrics import roc_auc_score  # here: `slipway --help` imports this module for its defaults

    return LivePerformance(**common, auc=float(roc_auc_score(outcome, used[SCORE].to_numpy())))


def _events(path: str | Path) -> Iterable[CloudEvent]:
    if not log_files(path):
        raise FeedbackError(f"prediction log {path}: no such file (nor rotated files {path}.N)")
    try:
        yield from read_events(path)
    except PredictionLogError as exc:
        raise FeedbackError(f"prediction log {exc}") from None


def _placed(labels: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """`labels` with every missing `instance` set to 0, the only row of its request; a request that scored several
    rows needs its label's `instance`, or the label would silently go to its first row."""
    unplaced = labels[INSTANCE].isna()
    rows = scores.groupby(REQUEST_ID)[INSTANCE].size()
    several = rows[rows > 1].index.intersection(labels.loc[unplaced, REQUEST_ID])
    if len(several):
        raise FeedbackError(f"request {several[0]!r} scored {rows[several[0]]} rows but its label has no "
                            f"{INSTANCE!r} to say which; add the row's position (0-based) to the labels")
    return labels.assign(**{INSTANCE: labels[INSTANCE].fillna(0).astype(np.int64)})


def _instances(raw: pd.DataFrame, uri: str) -> pd.Series:
    if INSTANCE not in raw.columns:
        return pd.Series(pd.NA, index=raw.index, dtype="Int64")
    values = pd.to_numeric(raw[INSTANCE], errors="coerce")
    bad = values.isna() | (values < 0) | (values % 1 != 0)
    if bad.any():
        raise FeedbackError(f"labels {uri}: column {INSTANCE!r} must hold row positions (0, 1, ...); row(s) "
                            f"{_rows(np.flatnonzero(bad))} do not")
    return values.astype("Int64")


def _outcomes(column: pd.Series, uri: str) -> np.ndarray:
    text = column.astype(str).str.strip().str.lower().str.removesuffix(".0")
    positive, negative = text.isin(TRUE_VALUES), text.isin(FALSE_VALUES)
    bad = ~(positive | negative)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise FeedbackError(f"labels {uri}: column {OUTCOME!r} must be 0/1 or true/false; row(s) "
                            f"{_rows(np.flatnonzero(bad))} are not (first: {column.iloc[first]!r})")
    return positive.to_numpy().astype(np.int64)


def _rows(positions: Sequence[int] | np.ndarray, shown: int = 5) -> str:
    """Data rows as a person counts them in the file: the first data row is 1."""
    listed = ", ".join(str(int(p) + 1) for p in positions[:shown])
    return listed + (f" and {len(positions) - shown} more" if len(positions) > shown else "")

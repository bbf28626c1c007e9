"""Evaluate: a model on the eval split, as the KFP UI shows it and as later steps read it.

Scalar metrics (AUC, accuracy, log loss, precision and recall at the decision threshold, expected
calibration error) become a `Metrics` artifact; the ROC curve and the confusion matrix become a
`ClassificationMetrics` artifact, which the KFP UI draws. The ROC curve is thinned to at most
`ROC_POINTS` points: enough to draw, small enough for the UI and the metadata store.

Calibration is measured on `CALIBRATION_BINS` equal-width probability bins: the reliability table
says, per bin, how often the label was positive against how likely the model said it was; the
expected calibration error is the gap, weighted by the rows in each bin.

An average can hide a group the model fails, so the same metrics are computed per slice: per value
of each column listed in the problem's `evaluation.slices` (DESIGN.md §5). Values with fewer than
`evaluation.min_slice_rows` rows are counted but not reported one by one.

The eval data is checked against the model's own feature metadata before anything is scored, so a
mismatch is one `ModelInputError` naming the columns, not a stack trace from inside preprocessing.
The full result is saved as JSON (`save_evaluation`) for the steps after this one: the blessing gate
and the model card read it from an Artifact.

`evaluate_model` is the library; its KFP component is `slipway.components.catalog.evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from slipway.atomic import atomic_output
from slipway.problem import Problem

if TYPE_CHECKING:
    from slipway.components.preprocessing import Preprocessing

log = logging.getLogger(__name__)

ROC_POINTS = 200
CALIBRATION_BINS = 10
MISSING_SLICE = "(missing)"
FORMAT_VERSION = 1


class ModelInputError(ValueError):
    """The eval data does not hold what evaluating needs: the model's features and label, and the slice columns."""


@dataclasses.dataclass(frozen=True)
class ReliabilityBin:
    """One probability bin [lower, upper) of the reliability table; the last bin includes 1.0.

    `mean_predicted` and `observed_rate` are None for an empty bin: there is nothing to compare.
    """

    lower: float
    upper: float
    rows: int
    mean_predicted: float | None
    observed_rate: float | None


@dataclasses.dataclass(frozen=True)
class SliceMetrics:
    """The metrics on the rows where the slice column has `value` (as text; MISSING_SLICE for missing)."""

    value: str
    rows: int
    positive_rate: float
    auc: float | None  # None when the slice holds one class only: AUC is undefined there
    accuracy: float
    log_loss: float
    precision: float
    recall: float
    expected_calibration_error: float


@dataclasses.dataclass(frozen=True)
class ColumnSlices:
    """One slice column: its reported values, most rows first, and how much was too small to report."""

    column: str
    min_rows: int
    slices: list[SliceMetrics]
    skipped_values: int
    skipped_rows: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnSlices:
        return cls(**{**data, "slices": [SliceMetrics(**s) for s in data["slices"]]})


@dataclasses.dataclass(frozen=True)
class Evaluation:
    rows: int
    positive_rate: float
    threshold: float
    auc: float
    accuracy: float
    log_loss: float
    precision: float
    recall: float
    expected_calibration_error: float
    roc_fpr: list[float]
    roc_tpr: list[float]
    roc_thresholds: list[float]
    confusion_categories: list[str]
    confusion_matrix: list[list[int]]  # rows: actual, columns: predicted, in `confusion_categories` order
    reliability: list[ReliabilityBin]
    slices: list[ColumnSlices]

    def scalars(self) -> dict[str, float]:
        """The headline numbers, for a `Metrics` artifact (the KFP UI lists them in this order)."""
        names = ("auc", "accuracy", "log_loss", "precision", "recall", "expected_calibration_error",
                 "positive_rate", "threshold", "rows")
        return {name: getattr(self, name) for name in names}

    def worst_slices(self, count: int = 5) -> list[tuple[str, SliceMetrics]]:
        """Up to `count` (column, slice) pairs with an AUC below the overall one, lowest first."""
        below = [(c.column, s) for c in self.slices for s in c.slices if s.auc is not None and s.auc < self.auc]
        return sorted(below, key=lambda pair: pair[1].auc)[:count]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; an undefined number is None, because JSON has no NaN and strict readers refuse it."""
        return _finite_or_none(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(**{
            **data,
            "reliability": [ReliabilityBin(**b) for b in data["reliability"]],
            "slices": [ColumnSlices.from_dict(c) for c in data["slices"]],
        })


def checked_threshold(threshold: float) -> float:
    """`threshold` if it is a decision threshold strictly between 0 and 1, else a ValueError saying so."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    return threshold


def evaluate_model(model_dir: Path, eval_path: Path, problem: Problem, threshold: float = 0.5) -> Evaluation:
    """Scores the eval split with the model and computes the metrics at `threshold`, overall and per slice."""
    # Imported here: the steps that only read an evaluation (register, promote, champion) need neither torch nor
    # scikit-learn.
    from sklearn import metrics as skm

    from slipway.components.model_artifact import load_model

    checked_threshold(threshold)
    model = load_model(model_dir)
    label = model.preprocessing.label
    frame = pd.read_parquet(eval_path)
    check_eval_columns(frame, model.preprocessing, problem, eval_path)
    actual = frame[label].to_numpy(dtype="int64")
    if len(np.unique(actual)) < 2:
        raise ValueError(f"{eval_path}: the eval split has only one class in {label!r}; AUC is undefined")
    scores = model.predict_proba(frame)
    predicted = (scores >= threshold).astype(int)
    fpr, tpr, thresholds = skm.roc_curve(actual, scores)
    keep = _thin(len(fpr), ROC_POINTS)
    # roc_curve's first threshold is +inf ("predict nothing positive"); JSON and the UI need a number.
    thresholds = np.minimum(thresholds, 1.0)
    spec = problem.evaluation
    evaluation = Evaluation(
        **_metrics(actual, scores, threshold),
        threshold=threshold,
        roc_fpr=fpr[keep].tolist(),
        roc_tpr=tpr[keep].tolist(),
        roc_thresholds=thresholds[keep].tolist(),
        confusion_categories=[f"{label}=0", f"{label}=1"],
        confusion_matrix=skm.confusion_matrix(actual, predicted, labels=[0, 1]).tolist(),
        reliability=reliability_bins(actual, scores),
        slices=[_slice_column(frame[c], actual, scores, threshold, spec.min_slice_rows) for c in spec.slices],
    )
    log.info("eval on %d rows: auc %.4f accuracy %.4f log_loss %.4f ece %.4f", evaluation.rows, evaluation.auc,
             evaluation.accuracy, evaluation.log_loss, evaluation.expected_calibration_error)
    return evaluation


def check_eval_columns(frame: pd.DataFrame, preprocessing: Preprocessing, problem: Problem, eval_path: Path) -> None:
    """Refuses eval data that does not match the model's feature metadata or the problem's slices.

    Every mismatch is collected into one message, so a user fixes them all in one go.
    """
    problems = []
    for column in preprocessing.numeric:
        if column in frame.columns and not pd.api.types.is_numeric_dtype(frame[column]):
            problems.append(f"column {column!r} is {_kind(frame[column])}, the model expects a number")
    missing = [c for c in preprocessing.numeric + preprocessing.categorical if c not in frame.columns]
    if missing:
        problems.append(f"missing columns {missing} that the model was trained on")
    label = preprocessing.label
    if label not in frame.columns:
        problems.append(f"no label column {label!r} to evaluate against")
    elif frame[label].isna().any() or not set(frame[label].unique()) <= {0, 1}:
        problems.append(f"label column {label!r} must hold 0 or 1 in every row, found {_some_values(frame[label])}")
    for column in problem.evaluation.slices:
        if column not in frame.columns:
            problems.append(f"no column {column!r} to slice by (evaluation.slices in {problem.source})")
    if problems:
        raise ModelInputError(f"{eval_path}: " + "; ".join(problems))


def reliability_bins(actual: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> list[ReliabilityBin]:
    """The reliability table: `bins` equal-width probability bins, a score of 1.0 in the last one."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    table = []
    for i in range(bins):
        inside = index == i
        rows = int(inside.sum())
        table.append(ReliabilityBin(
            lower=i / bins,
            upper=(i + 1) / bins,
            rows=rows,
            mean_predicted=float(scores[inside].mean()) if rows else None,
            observed_rate=float(actual[inside].mean()) if rows else None,
        ))
    return table


def expected_calibration_error(table: list[ReliabilityBin]) -> float:
    """The mean gap between predicted probability and observed rate, each bin weighted by its rows."""
    total = sum(b.rows for b in table)
    return sum(b.rows / total * abs(b.mean_predicted - b.observed_rate) for b in table if b.rows)


def save_evaluation(evaluation: Evaluation, path: Path) -> None:
    """Writes the full evaluation as JSON, whole or not at all, for the steps that judge the model after this one."""
    text = json.dumps({"format_version": FORMAT_VERSION, **evaluation.to_dict()}, indent=1, allow_nan=False)
    with atomic_output(path) as temp:
        temp.write_text(text)


def load_evaluation(path: Path) -> Evaluation:
    data = json.loads(Path(path).read_text())
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: evaluation format_version {version!r}, this Slipway reads {FORMAT_VERSION}")
    return Evaluation.from_dict(data)


def _metrics(actual: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """The metrics that both the whole split and each slice report."""
    from sklearn import metrics as skm

    predicted = (scores >= threshold).astype(int)
    return {
        "rows": len(actual),
        "positive_rate": float(actual.mean()),
        "auc": float(skm.roc_auc_score(actual, scores)) if len(np.unique(actual)) == 2 else None,
        "accuracy": float(skm.accuracy_score(actual, predicted)),
        "log_loss": float(skm.log_loss(actual, scores, labels=[0, 1])),
        "precision": float(skm.precision_score(actual, predicted, zero_division=0)),
        "recall": float(skm.recall_score(actual, predicted, zero_division=0)),
        "expected_calibration_error": expected_calibration_error(reliability_bins(actual, scores)),
    }


def _slice_column(
    values: pd.Series, actual: np.ndarray, scores: np.ndarray, threshold: float, min_rows: int
) -> ColumnSlices:
    keys = _slice_keys(values).to_numpy(dtype=object)
    counts = pd.Series(keys).value_counts()
    reported, skipped = counts[counts >= min_rows], counts[counts < min_rows]
    slices = []
    for value in reported.index:
        inside = keys == value
        slices.append(SliceMetrics(value=value, **_metrics(actual[inside], scores[inside], threshold)))
    return ColumnSlices(
        column=str(values.name),
        min_rows=min_rows,
        slices=sorted(slices, key=lambda s: (-s.rows, s.value)),
        skipped_values=len(skipped),
        skipped_rows=int(skipped.sum()),
    )


def _slice_keys(values: pd.Series) -> pd.Series:
    """Slice values as text; whole numbers stored as floats read "7", not "7.0"; missing is its own slice."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype("string").fillna(MISSING_SLICE)


def _kind(values: pd.Series) -> str:
    """A column's type in the words of the problem file's `columns` section."""
    if pd.api.types.is_string_dtype(values):
        return "string"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "timestamp"
    return str(values.dtype)


def _some_values(values: pd.Series, count: int = 5) -> list[Any]:
    """A few distinct values, for an error message."""
    return values.drop_duplicates().head(count).tolist()


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _thin(length: int, points: int) -> np.ndarray:
    """Indices of at most `points` evenly spaced entries, always keeping the first and the last."""
    if length <= points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, points).round().astype(int))

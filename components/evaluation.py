"""Evaluate: a model on the eval split, as the KFP UI shows it.

Scalar metrics (AUC, accuracy, log loss, precision, recall at the decision threshold) become a
`Metrics` artifact; the ROC curve and the confusion matrix become a `ClassificationMetrics`
artifact, which the KFP UI draws. The ROC curve is thinned to at most `ROC_POINTS` points:
enough to draw, small enough for the UI and the metadata store.

`evaluate_model` is the library; its KFP component is `slipway.components.catalog.evaluate`.
"""

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from slipway.components.model_artifact import load_model

log = logging.getLogger(__name__)

ROC_POINTS = 200


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
    roc_fpr: list[float]
    roc_tpr: list[float]
    roc_thresholds: list[float]
    confusion_categories: list[str]
    confusion_matrix: list[list[int]]  # rows: actual, columns: predicted, in `confusion_categories` order

    def scalars(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in
                ("auc", "accuracy", "log_loss", "precision", "recall", "positive_rate", "threshold", "rows")}


def evaluate_model(model_dir: Path, eval_path: Path, threshold: float = 0.5) -> Evaluation:
    """Scores the eval split with the model and computes the metrics at `threshold`."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    model = load_model(model_dir)
    label = model.preprocessing.label
    frame = pd.read_parquet(eval_path)
    if label not in frame.columns:
        raise KeyError(f"{eval_path}: no label column {label!r} to evaluate against")
    actual = frame[label].to_numpy()
    if len(np.unique(actual)) < 2:
        raise ValueError(f"{eval_path}: the eval split has only one class in {label!r}; AUC is undefined")
    scores = model.predict_proba(frame)
    predicted = (scores >= threshold).astype(int)
    fpr, tpr, thresholds = skm.roc_curve(actual, scores)
    keep = _thin(len(fpr), ROC_POINTS)
    # roc_curve's first threshold is +inf ("predict nothing positive"); JSON and the UI need a number.
    thresholds = np.minimum(thresholds, 1.0)
    evaluation = Evaluation(
        rows=len(frame),
        positive_rate=float(actual.mean()),
        threshold=threshold,
        auc=float(skm.roc_auc_score(actual, scores)),
        accuracy=float(skm.accuracy_score(actual, predicted)),
        log_loss=float(skm.log_loss(actual, scores, labels=[0, 1])),
        precision=float(skm.precision_score(actual, predicted, zero_division=0)),
        recall=float(skm.recall_score(actual, predicted, zero_division=0)),
        roc_fpr=fpr[keep].tolist(),
        roc_tpr=tpr[keep].tolist(),
        roc_thresholds=thresholds[keep].tolist(),
        confusion_categories=[f"{label}=0", f"{label}=1"],
        confusion_matrix=skm.confusion_matrix(actual, predicted, labels=[0, 1]).tolist(),
    )
    log.info("eval on %d rows: auc %.4f accuracy %.4f log_loss %.4f", evaluation.rows, evaluation.auc,
             evaluation.accuracy, evaluation.log_loss)
    return evaluation


def _thin(length: int, points: int) -> np.ndarray:
    """Indices of at most `points` evenly spaced entries, always keeping the first and the last."""
    if length <= points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, points).round().astype(int))

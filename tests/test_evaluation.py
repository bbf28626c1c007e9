"""Evaluation: the numbers the KFP UI shows agree with an independent computation."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from slipway.components.evaluation import ROC_POINTS, evaluate_model
from slipway.components.model_artifact import load_model


def test_metrics_match_an_independent_computation_on_the_eval_split(taxi_model: Path, taxi_splits) -> None:
    result = evaluate_model(taxi_model, taxi_splits[1])
    evaluation = pd.read_parquet(taxi_splits[1])
    label = evaluation["tip_over_20pct"].to_numpy()
    scores = load_model(taxi_model).predict_proba(evaluation)

    assert result.rows == len(evaluation)
    assert result.auc == pytest.approx(roc_auc_score(label, scores))
    assert result.accuracy == pytest.approx(((scores >= 0.5) == label).mean())
    matrix = np.array(result.confusion_matrix)
    assert matrix.sum() == len(evaluation)
    assert matrix[1].sum() == label.sum(), "confusion matrix rows must be the actual classes"


def test_the_roc_curve_is_thinned_for_the_ui_but_keeps_its_ends(taxi_model: Path, taxi_splits) -> None:
    result = evaluate_model(taxi_model, taxi_splits[1])
    assert len(result.roc_fpr) <= ROC_POINTS
    assert (result.roc_fpr[0], result.roc_tpr[0]) == (0.0, 0.0)
    assert (result.roc_fpr[-1], result.roc_tpr[-1]) == (1.0, 1.0)
    assert all(np.isfinite(result.roc_thresholds)) and max(result.roc_thresholds) <= 1.0
    assert result.roc_fpr == sorted(result.roc_fpr)


def test_a_threshold_moves_precision_and_recall_in_opposite_directions(taxi_model: Path, taxi_splits) -> None:
    low, high = evaluate_model(taxi_model, taxi_splits[1], 0.2), evaluate_model(taxi_model, taxi_splits[1], 0.8)
    assert low.recall > high.recall and low.precision < high.precision
    assert low.auc == high.auc


def test_a_threshold_outside_zero_to_one_is_refused(taxi_model: Path, taxi_splits) -> None:
    with pytest.raises(ValueError, match="threshold must be between 0 and 1, got 1.5"):
        evaluate_model(taxi_model, taxi_splits[1], 1.5)

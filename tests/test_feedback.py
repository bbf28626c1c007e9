"""Feedback: late labels joined to the prediction log by request id give live AUC, and a drop triggers retraining."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from slipway.components.feedback import (
    FeedbackError,
    FeedbackPolicy,
    judge_live_performance,
    live_performance,
    logged_scores,
    read_labels,
    retrain_reason,
)
from slipway.components.model_artifact import load_model
from slipway.serving.deploy import json_instances
from slipway.serving.prediction_log import PredictionLogConfig, PredictionLogger, read_events

LABEL = "tip_over_20pct"


@pytest.fixture(scope="module")
def served(taxi_model: Path, taxi_training_sets: tuple[Path, Path], tmp_path_factory) -> dict:
    """The real model's answers to 1,000 eval rows, one request each, through the real prediction logger; the
    log, the request ids, the true outcomes and the scores."""
    rows = pd.read_parquet(taxi_training_sets[1]).head(1000)
    scores = load_model(taxi_model).predict_proba(rows)
    log = tmp_path_factory.mktemp("feedback") / "predictions.jsonl"
    ids = [uuid.uuid4().hex for _ in range(len(rows))]
    with PredictionLogger(PredictionLogConfig(path=log, inference_service="taxi")) as logger:
        for request_id, row, score in zip(ids, json_instances(rows), scores, strict=True):
            logger.log(request_id, "chicago_taxi", {"instances": [row]}, {"predictions": [float(score)]})
    return {"log": log, "ids": ids, "outcomes": rows[LABEL].to_numpy(), "scores": scores}


def labels_file(path: Path, ids: list[str], outcomes: np.ndarray) -> Path:
    pd.DataFrame({"request_id": ids, "outcome": outcomes}).to_csv(path, index=False)
    return path


def test_true_outcomes_give_the_models_own_auc_and_no_drop(served, tmp_path) -> None:
    labels = read_labels(str(labels_file(tmp_path / "labels.csv", served["ids"], served["outcomes"])))
    expected = roc_auc_score(served["outcomes"], served["scores"])
    result = live_performance(logged_scores(read_events(served["log"])), labels, baseline_auc=expected)
    assert result.labelled == 1000 and result.unmatched_labels == 0
    assert result.auc == pytest.approx(expected, abs=1e-9)
    assert not result.dropped and result.drop_percent == pytest.approx(0, abs=1e-9)
    assert result.metrics()["performance_dropped"] == 0


def test_a_model_that_got_worse_in_production_is_a_drop_past_five_percent(served, tmp_path) -> None:
    # The world changed under the model: a fifth of the outcomes are now the opposite of what it learned.
    outcomes = served["outcomes"].copy()
    flipped = np.random.default_rng(0).choice(len(outcomes), size=200, replace=False)
    outcomes[flipped] = 1 - outcomes[flipped]
    labels = read_labels(str(labels_file(tmp_path / "labels.csv", served["ids"], outcomes)))
    baseline = roc_auc_score(served["outcomes"], served["scores"])
    result = live_performance(logged_scores(read_events(served["log"])), labels, baseline_auc=baseline)
    assert result.auc < baseline * 0.95
    assert result.dropped and "dropped: retrain" in result.summary()
    # The same drop within a looser limit is tolerated: the limit is what decides.
    loose = live_performance(logged_scores(read_events(served["log"])), labels, baseline_auc=baseline,
                             policy=FeedbackPolicy(max_drop_percent=float(result.drop_percent) + 1))
    assert not loose.dropped


def test_labels_of_unlogged_requests_and_degraded_answers_are_left_out(served, tmp_path) -> None:
    log = tmp_path / "predictions.jsonl"
    with PredictionLogger(PredictionLogConfig(path=log, inference_service="taxi")) as logger:
        for index, request_id in enumerate(served["ids"][:300]):
            logger.log(request_id, "chicago_taxi", {"instances": [{}]}, {"predictions": [0.5]},
                       degraded="model-error" if index < 50 else None)
    labels = read_labels(str(labels_file(tmp_path / "labels.csv", served["ids"][:400], served["outcomes"][:400])))
    result = live_performance(logged_scores(read_events(log)), labels, baseline_auc=0.9)
    assert (result.labelled, result.degraded, result.unmatched_labels) == (250, 50, 100)


def test_too_few_labels_or_one_class_only_is_not_judged(served, tmp_path) -> None:
    scores = logged_scores(read_events(served["log"]))
    few = read_labels(str(labels_file(tmp_path / "few.csv", served["ids"][:50], served["outcomes"][:50])))
    result = live_performance(scores, few, baseline_auc=0.9)
    assert result.auc is None and not result.dropped and "50 labelled rows, fewer than min_labels 200" in result.reason
    ones = read_labels(str(labels_file(tmp_path / "ones.csv", served["ids"], np.ones(1000, dtype=int))))
    assert "every labelled outcome is 1" in live_performance(scores, ones, baseline_auc=0.9).reason


def test_a_request_that_scored_several_rows_needs_the_labels_instance(tmp_path) -> None:
    log = tmp_path / "predictions.jsonl"
    with PredictionLogger(PredictionLogConfig(path=log, inference_service="taxi")) as logger:
        logger.log("batch-1", "chicago_taxi", {"instances": [{}, {}]}, {"predictions": [0.2, 0.9]})
    scores = logged_scores(read_events(log))
    pd.DataFrame({"request_id": ["batch-1"], "outcome": [1]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(FeedbackError, match="request 'batch-1' scored 2 rows but its label has no 'instance'"):
        live_performance(scores, read_labels(str(tmp_path / "labels.csv")), baseline_auc=0.9)
    pd.DataFrame({"request_id": ["batch-1", "batch-1"], "instance": [1, 0], "outcome": [1, 0]}).to_parquet(
        tmp_path / "labels.parquet")
    placed = live_performance(scores, read_labels(str(tmp_path / "labels.parquet")), baseline_auc=0.9,
                              policy=FeedbackPolicy(min_labels=2))
    assert placed.auc == 1.0  # 0.9 scored the positive row, 0.2 the negative one


@pytest.mark.parametrize(("text", "message"), [
    ("id,outcome\na,1\n", r"no column\(s\) \['request_id'\]"),
    ("request_id,outcome\na,1\nb,maybe\n",
     r"'outcome' must be 0/1 or true/false; row\(s\) 2 are not \(first: 'maybe'\)"),
    ("request_id,outcome\na,1\na,0\n", r"request 'a' is labelled twice \(rows 2\)"),
    ("request_id,outcome,instance\na,1,-1\n", r"'instance' must hold row positions"),
    ("request_id,outcome\n", "has a header but no data rows"),
])
def test_a_bad_labels_file_is_named_with_the_column_and_row(tmp_path, text, message) -> None:
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(FeedbackError, match=rf"labels .*labels\.csv: .*{message}"):
        read_labels(str(tmp_path / "labels.csv"))


def test_true_false_outcomes_are_read_as_one_and_zero(tmp_path) -> None:
    (tmp_path / "labels.csv").write_text("request_id,outcome\na,true\nb,False\nc,1.0\n")
    assert read_labels(str(tmp_path / "labels.csv"))["outcome"].tolist() == [1, 0, 1]


def test_slipway_feedback_exits_1_on_a_drop_and_says_by_how_much(served, tmp_path) -> None:
    outcomes = served["outcomes"].copy()
    outcomes[:300] = 1 - outcomes[:300]
    labels = labels_file(tmp_path / "labels.csv", served["ids"], outcomes)
    baseline = roc_auc_score(served["outcomes"], served["scores"])
    done = subprocess.run([sys.executable, "-m", "slipway", "feedback", "--prediction-log", str(served["log"]),
                           "--labels", str(labels), "--baseline-auc", f"{baseline:.6f}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "on 1000 labelled rows" in done.stdout and "dropped: retrain, limit 5%" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "slipway", "feedback", "--prediction-log", str(served["log"]),
                              "--labels", str(tmp_path / "nope.csv"), "--baseline-auc", "0.9"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 3 and "nope.csv" in missing.stderr


def test_either_critical_drift_or_a_live_auc_drop_is_reason_to_retrain(served, tmp_path) -> None:
    baseline = roc_auc_score(served["outcomes"], served["scores"])
    true_labels = labels_file(tmp_path / "true.csv", served["ids"], served["outcomes"])
    flipped = served["outcomes"].copy()
    flipped[:300] = 1 - flipped[:300]
    worse_labels = labels_file(tmp_path / "worse.csv", served["ids"], flipped)
    steady = judge_live_performance(str(served["log"]), str(true_labels), baseline)
    dropped = judge_live_performance(str(served["log"]), str(worse_labels), baseline)
    assert retrain_reason("none", steady) == "none"
    assert retrain_reason("warning", steady) == "none"  # a warning is reported, not acted on
    assert retrain_reason("critical", steady) == "critical drift"
    assert retrain_reason("none", dropped) == "live AUC drop"
    assert retrain_reason("critical", dropped) == "critical drift and live AUC drop"
    assert retrain_reason("critical", None) == "critical drift"  # no labels: drift alone decides


def test_a_missing_prediction_log_is_named(tmp_path) -> None:
    labels = labels_file(tmp_path / "labels.csv", ["a"], np.array([1]))
    with pytest.raises(FeedbackError, match=r"prediction log .*gone\.jsonl: no such file"):
        judge_live_performance(str(tmp_path / "gone.jsonl"), str(labels), 0.9)

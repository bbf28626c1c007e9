"""Evaluation: the numbers the KFP UI shows, and the later steps read, agree with an independent computation."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import files_in
from sklearn.metrics import roc_auc_score

from slipway.components.evaluation import (
    MISSING_SLICE,
    ROC_POINTS,
    Evaluation,
    ModelInputError,
    evaluate_model,
    expected_calibration_error,
    load_evaluation,
    reliability_bins,
    save_evaluation,
)
from slipway.components.model_artifact import load_model
from slipway.problem import EvaluationSpec, Problem, load_problem

LABEL = "tip_over_20pct"


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("chicago_taxi")


@pytest.fixture(scope="module")
def result(taxi_model: Path, taxi_training_sets, problem: Problem) -> Evaluation:
    return evaluate_model(taxi_model, taxi_training_sets[1], problem)


@pytest.fixture(scope="module")
def scored(taxi_model: Path, taxi_training_sets) -> pd.DataFrame:
    """The eval split with the model's score per row, computed here independently of evaluate_model."""
    frame = pd.read_parquet(taxi_training_sets[1])
    return frame.assign(score=load_model(taxi_model).predict_proba(frame))


def with_columns(source: Path, target: Path, **columns) -> Path:
    """A copy of the eval split with some columns replaced (None drops the column)."""
    frame = pd.read_parquet(source)
    for name, values in columns.items():
        frame = frame.drop(columns=name) if values is None else frame.assign(**{name: values})
    frame.to_parquet(target)
    return target


def test_metrics_match_an_independent_computation_on_the_eval_split(result: Evaluation, scored) -> None:
    label, scores = scored[LABEL].to_numpy(), scored["score"].to_numpy()
    assert result.rows == len(scored)
    assert result.auc == pytest.approx(roc_auc_score(label, scores))
    assert result.accuracy == pytest.approx(((scores >= 0.5) == label).mean())
    matrix = np.array(result.confusion_matrix)
    assert matrix.sum() == len(scored)
    assert matrix[1].sum() == label.sum(), "confusion matrix rows must be the actual classes"
    assert result.scalars()["expected_calibration_error"] == result.expected_calibration_error


def test_the_roc_curve_is_thinned_for_the_ui_but_keeps_its_ends(result: Evaluation) -> None:
    assert len(result.roc_fpr) <= ROC_POINTS
    assert (result.roc_fpr[0], result.roc_tpr[0]) == (0.0, 0.0)
    assert (result.roc_fpr[-1], result.roc_tpr[-1]) == (1.0, 1.0)
    assert all(np.isfinite(result.roc_thresholds)) and max(result.roc_thresholds) <= 1.0
    assert result.roc_fpr == sorted(result.roc_fpr)


def test_a_threshold_moves_precision_and_recall_in_opposite_directions(taxi_model, taxi_training_sets, problem) -> None:
    low = evaluate_model(taxi_model, taxi_training_sets[1], problem, 0.2)
    high = evaluate_model(taxi_model, taxi_training_sets[1], problem, 0.8)
    assert low.recall > high.recall and low.precision < high.precision
    assert low.auc == high.auc


def test_a_threshold_outside_zero_to_one_is_refused(taxi_model: Path, taxi_training_sets, problem) -> None:
    with pytest.raises(ValueError, match="threshold must be between 0 and 1, got 1.5"):
        evaluate_model(taxi_model, taxi_training_sets[1], problem, 1.5)


# --- calibration ---------------------------------------------------------------------------


def test_expected_calibration_error_matches_a_hand_computed_example() -> None:
    # Bins of width 0.1: 0.2 opens bin [0.2, 0.3) and 1.0 belongs to the last bin.
    scores = np.array([0.1, 0.2, 0.25, 0.8, 0.9, 1.0])
    actual = np.array([0, 0, 1, 1, 1, 0])
    table = reliability_bins(actual, scores)
    assert [b.rows for b in table] == [0, 1, 2, 0, 0, 0, 0, 0, 1, 2]
    assert (table[2].mean_predicted, table[2].observed_rate) == (pytest.approx(0.225), 0.5)
    assert (table[3].mean_predicted, table[3].observed_rate) == (None, None)
    assert (table[9].lower, table[9].upper) == (0.9, 1.0)
    # |0.1 - 0| * 1 + |0.225 - 0.5| * 2 + |0.8 - 1| * 1 + |0.95 - 0.5| * 2, over 6 rows
    assert expected_calibration_error(table) == pytest.approx(1.75 / 6)


def test_the_eval_calibration_agrees_with_numpys_histogram(result: Evaluation, scored) -> None:
    label, scores = scored[LABEL].to_numpy(), scored["score"].to_numpy()
    edges = np.linspace(0, 1, 11)
    rows, _ = np.histogram(scores, edges)
    predicted, _ = np.histogram(scores, edges, weights=scores)
    positives, _ = np.histogram(scores, edges, weights=label)
    filled = rows > 0
    expected = np.sum(np.abs(predicted[filled] - positives[filled])) / len(scores)
    assert [b.rows for b in result.reliability] == rows.tolist()
    assert result.expected_calibration_error == pytest.approx(expected)


# --- slices --------------------------------------------------------------------------------


def test_each_slice_reports_sklearns_auc_on_its_own_rows(result: Evaluation, scored, problem: Problem) -> None:
    assert [c.column for c in result.slices] == list(problem.evaluation.slices)
    for column in result.slices:
        keys = scored[column.column].astype("string").fillna(MISSING_SLICE)
        for piece in column.slices:
            rows = scored[keys == piece.value]
            assert piece.rows == len(rows) >= problem.evaluation.min_slice_rows
            assert piece.positive_rate == pytest.approx(rows[LABEL].mean())
            if rows[LABEL].nunique() == 2:
                assert piece.auc == pytest.approx(roc_auc_score(rows[LABEL], rows["score"])), piece.value
            else:
                assert piece.auc is None, f"{column.column}={piece.value} has one class; AUC is undefined"


def test_slices_are_ordered_by_rows_and_small_values_are_counted_not_dropped(result: Evaluation, scored) -> None:
    for column in result.slices:
        counts = scored[column.column].astype("string").fillna(MISSING_SLICE).value_counts()
        small = counts[counts < column.min_rows]
        assert [s.rows for s in column.slices] == sorted(counts[counts >= column.min_rows], reverse=True)
        assert (column.skipped_values, column.skipped_rows) == (len(small), small.sum())
        assert sum(s.rows for s in column.slices) + column.skipped_rows == len(scored)
    payment = result.slices[0]
    assert payment.column == "payment_type" and payment.skipped_values > 0, "the sample has rare payment types"
    cash = next(s for s in payment.slices if s.value == "Cash")
    assert cash.auc is None, "cash tips are not recorded in the sample: one class only"


def test_missing_values_form_their_own_slice_and_min_slice_rows_applies(
    taxi_model: Path, taxi_training_sets, problem: Problem, tmp_path: Path
) -> None:
    # As floats, the way a Parquet writer without nullable integers stores an hour with gaps.
    hours = pd.read_parquet(taxi_training_sets[1])["trip_start_hour"].astype("float64")
    hours.iloc[:50] = np.nan
    eval_path = with_columns(taxi_training_sets[1], tmp_path / "eval.parquet", trip_start_hour=hours)
    spec = EvaluationSpec(slices=("trip_start_hour",), min_slice_rows=100)
    result = evaluate_model(taxi_model, eval_path, dataclasses.replace(problem, evaluation=spec))
    (hour,) = result.slices
    assert MISSING_SLICE not in [s.value for s in hour.slices], "50 missing rows are below min_slice_rows=100"
    assert all(s.rows >= 100 for s in hour.slices)
    assert all(s.value.isdigit() for s in hour.slices), "an hour stored as 7.0 is the slice '7'"
    spec = EvaluationSpec(slices=("trip_start_hour",), min_slice_rows=50)
    result = evaluate_model(taxi_model, eval_path, dataclasses.replace(problem, evaluation=spec))
    assert next(s for s in result.slices[0].slices if s.value == MISSING_SLICE).rows == 50


def test_the_worst_slices_are_those_below_the_overall_auc_lowest_first(result: Evaluation) -> None:
    worst = result.worst_slices(3)
    assert len(worst) == 3
    aucs = [s.auc for _, s in worst]
    assert aucs == sorted(aucs) and all(auc < result.auc for auc in aucs)
    everything = [s.auc for c in result.slices for s in c.slices if s.auc is not None]
    assert aucs[0] == min(everything)


# --- saved for the next steps --------------------------------------------------------------


def test_the_evaluation_round_trips_through_json(result: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    save_evaluation(result, path)
    assert load_evaluation(path) == result
    assert files_in(tmp_path) == ["evaluation.json"], "no temporary file is left behind"
    saved = json.loads(path.read_text())
    cash = next(s for s in saved["slices"][0]["slices"] if s["value"] == "Cash")
    assert cash["auc"] is None
    assert saved["reliability"][1]["mean_predicted"] is None, "an empty bin has no mean"


def test_an_undefined_number_is_written_as_null_never_nan(result: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    save_evaluation(dataclasses.replace(result, log_loss=float("nan"), roc_thresholds=[float("inf")]), path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    reloaded = load_evaluation(path)
    assert (reloaded.log_loss, reloaded.roc_thresholds) == (None, [None])


def test_an_evaluation_file_of_another_format_is_refused(result: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({**result.to_dict(), "format_version": 99}))
    with pytest.raises(ValueError, match=f"{path}: evaluation format_version 99, this Slipway reads 1"):
        load_evaluation(path)


# --- eval data that does not match the model -----------------------------------------------


def test_a_text_feature_and_missing_features_are_named_with_what_the_model_expects(
    taxi_model: Path, taxi_training_sets, problem: Problem, tmp_path: Path
) -> None:
    fares = pd.read_parquet(taxi_training_sets[1])["fare"].astype("string")
    eval_path = with_columns(taxi_training_sets[1], tmp_path / "eval.parquet", fare=fares, trip_miles=None,
                             company=None)
    with pytest.raises(ModelInputError) as caught:
        evaluate_model(taxi_model, eval_path, problem)
    assert str(caught.value) == (
        f"{eval_path}: column 'fare' is string, the model expects a number; "
        "missing columns ['trip_miles', 'company'] that the model was trained on; "
        f"no column 'company' to slice by (evaluation.slices in {problem.source})"
    )


def test_a_missing_or_non_binary_label_is_named(taxi_model: Path, taxi_training_sets, problem, tmp_path: Path) -> None:
    no_label = with_columns(taxi_training_sets[1], tmp_path / "no-label.parquet", tip_over_20pct=None)
    with pytest.raises(ModelInputError, match=f"^{no_label}: no label column 'tip_over_20pct' to evaluate against$"):
        evaluate_model(taxi_model, no_label, problem)
    tips = with_columns(taxi_training_sets[1], tmp_path / "tips.parquet", tip_over_20pct=2)
    expected = r"label column 'tip_over_20pct' must hold 0 or 1 in every row, found \[2\]"
    with pytest.raises(ModelInputError, match=expected):
        evaluate_model(taxi_model, tips, problem)


def test_a_slice_column_missing_from_the_eval_data_names_the_problem_field(
    taxi_model: Path, taxi_training_sets, problem: Problem, tmp_path: Path
) -> None:
    eval_path = with_columns(taxi_training_sets[1], tmp_path / "eval.parquet", pickup_census_tract=None)
    spec = EvaluationSpec(slices=("payment_type", "pickup_census_tract"))
    with pytest.raises(ModelInputError) as caught:
        evaluate_model(taxi_model, eval_path, dataclasses.replace(problem, evaluation=spec))
    expected = f"{eval_path}: no column 'pickup_census_tract' to slice by (evaluation.slices in {problem.source})"
    assert str(caught.value) == expected

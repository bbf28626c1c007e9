"""The problem file is the one place the columns, label and features are written down."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import GS_BUCKET

from slipway.problem import (
    PROBLEMS_DIR,
    EvaluationSpec,
    ProblemError,
    ValidationSpec,
    available_problems,
    load_problem,
)
from slipway.storage import upload


def write_problem(tmp_path: Path, **changes) -> Path:
    """The packaged taxi problem with some top-level fields replaced."""
    raw = yaml.safe_load((PROBLEMS_DIR / "chicago_taxi.yaml").read_text())
    raw.update(changes)
    path = tmp_path / "problem.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_taxi_problem_declares_the_label_entities_and_features_of_the_design() -> None:
    problem = load_problem("chicago_taxi")
    assert problem.label.expression == "tips > 0.2 * fare"
    assert problem.entities == ("pickup_community_area", "company")
    assert problem.timestamp.column == "trip_start_timestamp"
    assert "tips" not in problem.features.all, "the label's own source column must never be a feature"
    assert set(problem.features.all) <= set(problem.columns)


def test_an_unknown_problem_name_lists_the_packaged_ones() -> None:
    expected = r"problem 'nyc_taxi': no such file .*packaged problems are \['chicago_taxi'\]"
    with pytest.raises(ProblemError, match=expected):
        load_problem("nyc_taxi")
    assert available_problems() == ["chicago_taxi"]


def test_a_feature_that_is_not_a_declared_column_is_named_with_its_field(tmp_path: Path) -> None:
    path = write_problem(tmp_path, features={"numeric": ["fares"], "categorical": []})
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    assert str(caught.value).startswith(f"{path}: features.numeric: 'fares' is not a declared column")


def test_an_unknown_column_type_is_refused_with_the_valid_types(tmp_path: Path) -> None:
    path = write_problem(tmp_path, columns={"fare": "money", "trip_start_timestamp": "timestamp"})
    expected = r"columns.fare: type 'money' is not one of \['integer', 'float', 'string', 'timestamp'\]"
    with pytest.raises(ProblemError, match=expected):
        load_problem(str(path))


def test_a_text_column_cannot_be_a_numeric_feature(tmp_path: Path) -> None:
    path = write_problem(tmp_path, features={"numeric": ["company"]})
    with pytest.raises(ProblemError, match=r"features.numeric: 'company' has type 'string'"):
        load_problem(str(path))


def test_a_missing_problem_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProblemError, match=f"problem '{tmp_path}/mine.yaml': no such file"):
        load_problem(str(tmp_path / "mine.yaml"))


@pytest.mark.servers
def test_a_problem_can_come_from_object_storage_so_a_cluster_run_needs_no_new_image(
    tmp_path: Path, gcs_emulator: str
) -> None:
    uri = f"gs://{GS_BUCKET}/problems/taxi.yaml"
    upload(PROBLEMS_DIR / "chicago_taxi.yaml", uri)
    problem = load_problem(uri)
    assert problem == dataclasses.replace(load_problem("chicago_taxi"), source=uri)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, "a fifth"])
def test_eval_fraction_must_be_strictly_between_zero_and_one(tmp_path: Path, fraction) -> None:
    path = write_problem(tmp_path, split={"eval_fraction": fraction})
    with pytest.raises(ProblemError, match="split.eval_fraction: expected a number between 0 and 1"):
        load_problem(str(path))


def test_the_taxi_problem_slices_its_evaluation_and_states_its_intended_use() -> None:
    problem = load_problem("chicago_taxi")
    assert problem.evaluation.slices == ("payment_type", "company", "trip_start_hour")
    assert problem.evaluation.min_slice_rows == 30
    assert problem.intended_use.startswith("Ranking taxi trips") and "Not for decisions" in problem.intended_use


def test_evaluation_and_intended_use_are_optional(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROBLEMS_DIR / "chicago_taxi.yaml").read_text())
    del raw["evaluation"], raw["intended_use"]
    path = tmp_path / "problem.yaml"
    path.write_text(yaml.safe_dump(raw))
    problem = load_problem(str(path))
    assert (problem.evaluation, problem.intended_use) == (EvaluationSpec(), "")
    assert EvaluationSpec().min_slice_rows == 30


def test_only_min_slice_rows_can_be_given_and_slices_default_to_none(tmp_path: Path) -> None:
    path = write_problem(tmp_path, evaluation={"min_slice_rows": 5})
    assert load_problem(str(path)).evaluation == EvaluationSpec(slices=(), min_slice_rows=5)


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        ({"slices": ["driver"]}, "evaluation.slices: 'driver' is not a declared column"),
        ({"slices": "company"}, "evaluation.slices: expected a list of column names"),
        ({"slices": ["fare"]}, "evaluation.slices: 'fare' has type 'float'; slice on integer or string columns"),
        ({"slices": ["company", "company"]}, "evaluation.slices: 'company' is listed more than once"),
        ({"min_slice_rows": 0}, "evaluation.min_slice_rows: expected a positive whole number, got 0"),
        ({"min_slice_rows": 2.5}, "evaluation.min_slice_rows: expected a positive whole number, got 2.5"),
        ({"min_slice_rows": True}, "evaluation.min_slice_rows: expected a positive whole number, got True"),
        ({"slice": ["company"]}, "evaluation: unknown key(s) ['slice']; expected `slices` and `min_slice_rows`"),
        (["company"], "evaluation: expected a mapping with `slices` and `min_slice_rows`"),
    ],
)
def test_a_wrong_evaluation_section_is_named_with_its_field(tmp_path: Path, evaluation, expected: str) -> None:
    path = write_problem(tmp_path, evaluation=evaluation)
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    assert str(caught.value).startswith(f"{path}: {expected}")


def test_intended_use_must_be_text(tmp_path: Path) -> None:
    path = write_problem(tmp_path, intended_use=["ranking"])
    with pytest.raises(ProblemError, match=r"intended_use: expected text, got \['ranking'\]"):
        load_problem(str(path))


def test_the_taxi_problem_declares_its_feature_store() -> None:
    store = load_problem("chicago_taxi").feature_store
    assert store.missing_keys == {"pickup_community_area": -1, "company": "(unknown)"}
    assert (store.windows, store.ttl) == (("1h", "24h", "7d"), "30d")
    assert [(a.name, a.function, a.of) for a in store.aggregates] == [
        ("trips", "count", ""), ("mean_fare", "mean", "fare"), ("mean_tip_rate", "mean", "tips / fare")]


def feature_store_with(**changes) -> dict:
    """The packaged feature_store section with some of its keys replaced (None removes the key)."""
    section = yaml.safe_load((PROBLEMS_DIR / "chicago_taxi.yaml").read_text())["feature_store"] | changes
    return {key: value for key, value in section.items() if value is not None}


AGGREGATES = yaml.safe_load((PROBLEMS_DIR / "chicago_taxi.yaml").read_text())["feature_store"]["aggregates"]


@pytest.mark.parametrize(
    ("feature_store", "expected"),
    [
        (feature_store_with(window=["1h"]),
         "feature_store: unknown key(s) ['window']; expected missing_keys, windows, aggregates, ttl"),
        (feature_store_with(ttl=None), "feature_store.ttl: is required"),
        (feature_store_with(ttl="a month"), "feature_store.ttl: 'a month' is not a positive duration like 1h, 24h, 7d"),
        (feature_store_with(windows=["1h", "-2h"]), "feature_store.windows: '-2h' is not a positive duration"),
        (feature_store_with(windows=["1h", "60min"]), "feature_store.windows: ['1h', '60min'] lists one duration more"),
        (feature_store_with(missing_keys={"pickup_community_area": "-1", "company": "(unknown)"}),
         "feature_store.missing_keys.pickup_community_area: expected a whole number like the integer column, got '-1'"),
        (feature_store_with(missing_keys={"pickup_community_area": -1, "company": 0}),
         "feature_store.missing_keys.company: expected text like the string column, got 0"),
        (feature_store_with(missing_keys={"pickup_community_area": -1}),
         "feature_store.missing_keys: expected one key for each entity ['pickup_community_area', 'company']"),
        (feature_store_with(aggregates=[*AGGREGATES, {"name": "mean_miles", "function": "mean"}]),
         "feature_store.aggregates[3].of: mean needs `of`"),
        (feature_store_with(aggregates=[*AGGREGATES, {"name": "trips", "function": "count"}]),
         "feature_store.aggregates: aggregate names must be unique"),
        (feature_store_with(aggregates=[{"name": "max_fare", "function": "max", "of": "fare"}]),
         "feature_store.aggregates[0].function: 'max' is not one of ['count', 'mean']"),
    ],
)
def test_a_wrong_feature_store_section_is_named_with_its_field(tmp_path: Path, feature_store, expected: str) -> None:
    path = write_problem(tmp_path, feature_store=feature_store)
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    assert str(caught.value).startswith(f"{path}: {expected}")


def test_the_feature_store_section_is_optional(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROBLEMS_DIR / "chicago_taxi.yaml").read_text())
    del raw["feature_store"]
    path = tmp_path / "problem.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_problem(str(path)).feature_store is None


def test_the_taxi_problem_curates_its_schema_and_gates_training_on_anomalies() -> None:
    validation = load_problem().validation
    assert validation.ranges["trip_start_hour"] == (0, 23)
    assert "Mobile" in validation.domains["payment_type"] and validation.open_domains == ("company",)
    assert validation.fail_on_anomalies is True
    assert validation.threshold("drift", "fare") == 0.2 and validation.threshold("skew", "company") == 0.2


def test_per_feature_thresholds_override_the_default(tmp_path: Path) -> None:
    path = write_problem(tmp_path, validation={"skew": {"company": 0.35}})
    validation = load_problem(str(path)).validation
    assert validation.threshold("skew", "company") == 0.35
    assert validation.threshold("skew", "fare") == ValidationSpec().threshold("skew", "fare") == 0.2


@pytest.mark.parametrize(
    ("validation", "expected"),
    [
        ({"ranges": {"company": [0, 1]}}, "validation.ranges.company: 'company' is not a declared integer or float"),
        ({"ranges": {"fare": [10, 0]}}, "validation.ranges.fare: expected [min, max] with min <= max, got [10, 0]"),
        ({"domains": {"fare": ["cheap"]}}, "validation.domains.fare: 'fare' is not a declared string column"),
        ({"domains": {"payment_type": []}}, "validation.domains.payment_type: expected a non-empty list"),
        ({"open_domains": ["fare"]}, "validation.open_domains: expected a list of declared string columns"),
        ({"min_domain_mass": 1.5}, "validation.min_domain_mass: expected a number in (0, 1], got 1.5"),
        ({"drift": {"driver": 0.1}}, "validation.drift.driver: 'driver' is not a feature"),
        ({"skew": {"default": 0}}, "validation.skew.default: expected a distance in (0, 1], got 0"),
        ({"skew": 0.2}, "validation.skew: expected a mapping of feature (or `default`) to a distance"),
        ({"fail_on_anomalies": "yes"}, "validation.fail_on_anomalies: expected true or false, got 'yes'"),
        ({"fail": True}, "validation: expected a mapping with some of"),
    ],
)
def test_a_wrong_validation_section_is_named_with_its_field(tmp_path: Path, validation, expected: str) -> None:
    path = write_problem(tmp_path, validation=validation)
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    assert str(caught.value).startswith(f"{path}: {expected}")

"""A problem file's expressions are data: the known ways out of pandas' eval are refused before any step runs,
and what is allowed computes exactly what `DataFrame.eval` computed on the real sample."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from slipway.expression import ExpressionError, check_expression, evaluate
from slipway.problem import PROBLEMS_DIR, ProblemError, load_problem

TAXI = load_problem("chicago_taxi")


def problem_with(tmp_path: Path, *, label: str | None = None, of: str | None = None) -> Path:
    """The packaged taxi problem with its label expression or its mean_tip_rate aggregate's `of` replaced."""
    raw = yaml.safe_load((PROBLEMS_DIR / "chicago_taxi.yaml").read_text())
    if label is not None:
        raw["label"]["expression"] = label
    if of is not None:
        raw["feature_store"]["aggregates"][2]["of"] = of
    path = tmp_path / "problem.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file each escape below tries to create: it must never appear."""
    return tmp_path / "pwned"


# Each of these computes the right label (or runs a command) under DataFrame.eval(engine="python").
ESCAPES = [
    ("tips > 0.2 * fare + 0 * @pd.io.common.os.system('touch {marker}')",
     "uses '@': local variables are not allowed"),
    ("tips > 0.2 * fare & fare.__class__.__init__.__globals__['os'].system('touch {marker}') == 0",
     "a call (\"fare.__class__.__init__.__globals__['os'].system('touch {marker}')\") is not allowed"),
    ("__import__('os').system('touch {marker}') == 0",
     "a call (\"__import__('os').system('touch {marker}')\") is not allowed"),
    ("tips.__class__ == fare", "an attribute ('tips.__class__') is not allowed"),
    ("tips[0] > fare", "a subscript ('tips[0]') is not allowed"),
    ("(lambda: 1)() == 1", "a call ('(lambda: 1)()') is not allowed"),
    ("[x for x in 'ab'] == fare", "a comprehension (\"[x for x in 'ab']\") is not allowed"),
    ("f'{{tips}}' == company", "an f-string (\"f'{{tips}}'\") is not allowed"),
    ("(x := tips) > fare", "an assignment ('(x := tips)') is not allowed"),
    ("tips in [1, 2]", "a membership or identity test ('tips in [1, 2]') is not allowed"),
    ("tips > 0.2 * fare if fare else tips", "a conditional expression"),
    ("tips > fare << 2", "the '<<' operator ('fare << 2') is not allowed"),
    ("tips > None", "a NoneType constant ('None') is not allowed"),
    ("__builtins__ > 0", "'__builtins__' is not a declared column"),
    ("tips > 0.2 * fare;import os", "is not a valid expression"),
    ("tips > 1" + " " * 1000, "is 1,008 characters long; expressions are at most 1,000"),
]


@pytest.mark.parametrize(("expression", "reason"), ESCAPES)
def test_a_label_expression_that_could_run_code_is_refused_naming_the_file_field_and_part(
    tmp_path: Path, marker: Path, expression: str, reason: str
) -> None:
    expression = expression.format(marker=marker)
    path = problem_with(tmp_path, label=expression)
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: label.expression: ")
    assert reason.format(marker=marker) in message
    assert not marker.exists()


def test_the_refusal_of_an_at_name_is_one_sentence(tmp_path: Path) -> None:
    path = problem_with(tmp_path, label="tips > @threshold")
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    assert str(caught.value) == (f"{path}: label.expression: 'tips > @threshold' uses '@': local variables are not "
                                 "allowed; use column names, numbers, strings, arithmetic, comparisons and and/or/not")


def test_an_aggregate_expression_is_checked_the_same_way(tmp_path: Path, marker: Path) -> None:
    path = problem_with(tmp_path, of=f"tips / fare + 0 * @pd.io.common.os.system('touch {marker}')")
    with pytest.raises(ProblemError, match=r"feature_store\.aggregates\[2\]\.of: .* uses '@'"):
        load_problem(str(path))
    assert not marker.exists()


def test_an_expression_built_in_code_is_refused_when_evaluated_too(marker: Path) -> None:
    """A Problem need not come through load_problem: evaluation checks the syntax again."""
    frame = pd.DataFrame({"tips": [1.0], "fare": [2.0]})
    with pytest.raises(ExpressionError, match="a call .* is not allowed"):
        evaluate(f"__import__('os').system('touch {marker}') == 0", frame)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("tips + 0.2 * fare", "'tips + 0.2 * fare' gives a number per row, expected bool"),
        ("company > 1", "'company > 1': '>' compares a string with a number; compare numbers with numbers"),
        ("company > 'A'", "\"company > 'A'\": strings compare only with == and !=, not '>'"),
        ("company * 2 > 1", "the '*' operator needs number or bool, got the string 'company'"),
        ("not fare", "not (~) needs bool, got the number 'fare'"),
        ("tip > 0.2 * fare", "'tip' is not a declared column (declared: ["),
    ],
)
def test_a_mistyped_expression_is_named_at_load_time(tmp_path: Path, expression: str, message: str) -> None:
    path = problem_with(tmp_path, label=expression)
    with pytest.raises(ProblemError) as caught:
        load_problem(str(path))
    assert str(caught.value).startswith(f"{path}: label.expression: ")
    assert message in str(caught.value)


def test_an_integer_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExpressionError, match=r"an integer outside the 64-bit range \('100000000000000000000'\)"):
        check_expression("fare > 100000000000000000000", TAXI.columns, ("bool",))


@pytest.mark.parametrize(
    "expression",
    [
        "tips > 0.2 * fare",
        "tips > 0.2 * fare & payment_type == 'Credit Card'",
        "tips > 0.2 * fare and payment_type == 'Credit Card' or trip_miles >= 10",
        "not (tips <= 0.2 * fare) | (company != 'Flash Cab')",
        "~(tips > 0.2 * fare)",
        "0 < trip_miles < 2 and -fare < -5",
        "tips / fare > 0.2",
        "tips ** 2 // 1 % 7 > 3",
    ],
)
def test_allowed_expressions_give_what_pandas_eval_gave_on_the_sample(taxi_csv: Path, expression: str) -> None:
    """Same rows, same missing values (nullable floats, as ingestion types them), same true/false."""
    trips = pd.read_csv(taxi_csv).astype({"tips": "Float64", "fare": "Float64", "trip_miles": "Float64"})
    trips.loc[::500, "fare"] = pd.NA  # the sample has no missing fare; a missing term must give a missing label
    check_expression(expression, TAXI.columns, ("bool",))
    ours = evaluate(expression, trips)
    theirs = trips.eval(expression, engine="python")
    pd.testing.assert_series_equal(ours, theirs, check_names=False)
    assert ours.isna().sum() == theirs.isna().sum()


def test_a_missing_term_gives_a_missing_label_not_false(taxi_csv: Path) -> None:
    trips = pd.read_csv(taxi_csv).astype({"tips": "Float64", "fare": "Float64"})
    trips.loc[::500, "fare"] = pd.NA
    label = evaluate(TAXI.label.expression, trips)
    assert label.isna().sum() == 20 and label[::500].isna().all()


def test_an_aggregate_expression_gives_what_pandas_eval_gave(taxi_csv: Path) -> None:
    trips = pd.read_csv(taxi_csv)
    check_expression("tips / fare", TAXI.columns, ("number", "bool"))
    np.testing.assert_array_equal(evaluate("tips / fare", trips), trips.eval("tips / fare", engine="python"))


def test_a_constant_power_is_computed_in_64_bits_instead_of_building_a_huge_integer() -> None:
    """In Python integers 99 ** 99 ** 99 would never finish; in numpy's it wraps and numpy refuses the power."""
    frame = pd.DataFrame({"fare": [1.0, 2.0]})
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="Integers to negative integer powers"):
        evaluate("fare > 99 ** 99 ** 99", frame)

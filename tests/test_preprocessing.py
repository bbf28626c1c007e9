"""Preprocessing: fitted on the train split only; missing and unseen values get their own ids."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from slipway.components.feature_store import joined_columns
from slipway.components.preprocessing import MISSING_ID, UNKNOWN_ID, FeatureInputError, Preprocessing
from slipway.problem import load_problem

PROBLEM = load_problem("chicago_taxi")


def test_preprocessing_statistics_come_from_the_train_split_only(taxi_training_sets) -> None:
    train = pd.read_parquet(taxi_training_sets[0])
    both = pd.concat([train, pd.read_parquet(taxi_training_sets[1])])
    fitted = Preprocessing.fit(train, PROBLEM)
    fare = fitted.numeric.index("fare")
    assert fitted.means[fare] == pytest.approx(train["fare"].mean())
    assert fitted.means[fare] != pytest.approx(both["fare"].mean()), "eval rows leaked into the fit"


def test_missing_and_unseen_categories_get_their_reserved_ids(taxi_training_sets) -> None:
    train = pd.read_parquet(taxi_training_sets[0])
    fitted = Preprocessing.fit(train, PROBLEM)
    rows = train.head(3).copy()
    rows["company"] = pd.array(["Taxi Affiliation Services", None, "A Company Founded Tomorrow"], dtype="string")
    numeric, categorical = fitted.transform(rows)
    company = fitted.categorical.index("company")
    assert categorical[1, company] == MISSING_ID
    assert categorical[2, company] == UNKNOWN_ID
    assert categorical[0, company] >= 2
    assert numeric.shape == (3, 2 * len(fitted.numeric))


def test_the_model_reads_the_raw_trip_features_then_every_feast_feature(taxi_training_sets) -> None:
    fitted = Preprocessing.fit(pd.read_parquet(taxi_training_sets[0]), PROBLEM)
    assert fitted.numeric == [*PROBLEM.features.numeric, *joined_columns(PROBLEM)]
    assert len(fitted.numeric) == 7 + 2 * 9  # two entities' views, 3 aggregates x 3 windows each
    assert fitted.categorical == list(PROBLEM.features.categorical)
    trips_24h = fitted.numeric.index("company_stats__trips_24h")
    assert fitted.stds[trips_24h] > 1, "the aggregate was standardised from its real spread, not left at 1"


def test_a_missing_numeric_is_the_train_mean_plus_an_indicator(taxi_training_sets) -> None:
    train = pd.read_parquet(taxi_training_sets[0])
    fitted = Preprocessing.fit(train, PROBLEM)
    rows = train.head(1).copy()
    rows["trip_miles"] = np.nan
    numeric, _ = fitted.transform(rows)
    miles = fitted.numeric.index("trip_miles")
    assert numeric[0, miles] == 0.0  # standardised mean
    assert numeric[0, len(fitted.numeric) + miles] == 1.0  # its missing indicator


def test_a_request_as_plain_lists_is_transformed_exactly_like_the_training_frame(taxi_training_sets) -> None:
    # The model server passes JSON values (lists with None); training passes typed DataFrames.
    train, eval_frame = (pd.read_parquet(path) for path in taxi_training_sets)
    fitted = Preprocessing.fit(train, PROBLEM)
    as_json = {column: [None if pd.isna(v) else v for v in eval_frame[column].tolist()] for column in eval_frame}
    for expected, actual in zip(fitted.transform(eval_frame), fitted.transform(as_json), strict=True):
        assert torch.equal(expected, actual)


def test_an_integer_category_sent_as_a_float_finds_its_vocabulary_entry(taxi_training_sets) -> None:
    fitted = Preprocessing.fit(pd.read_parquet(taxi_training_sets[0]), PROBLEM)
    row = {c: [1.0] for c in fitted.numeric} | {c: ["x"] for c in fitted.categorical}
    hour = fitted.categorical.index("trip_start_hour")
    ids = [fitted.transform(row | {"trip_start_hour": [value]})[1][0, hour] for value in (17, 17.0, "17")]
    assert ids[0] == ids[1] == ids[2] >= 2


def test_the_vocabulary_is_the_same_whatever_type_holds_the_categories(taxi_training_sets) -> None:
    # Training counts keys once per distinct value of a typed column: 32 in an Int64 column, 32.0 in a
    # float one and "32" as text are one key, and a column of Python objects still counts value by value.
    train = pd.read_parquet(taxi_training_sets[0])
    expected = Preprocessing.fit(train, PROBLEM).vocabularies
    area = PROBLEM.features.categorical.index("pickup_community_area")
    for retyped in (train["pickup_community_area"].astype("float64"),
                    train["pickup_community_area"].astype("string"),
                    train["pickup_community_area"].astype(object)):
        assert Preprocessing.fit(train.assign(pickup_community_area=retyped), PROBLEM).vocabularies == expected
    assert all(key.isdigit() for key in expected[area])  # "32", never "32.0"
    mixed = train.assign(payment_type=pd.Series([True, 1] * (len(train) // 2), dtype=object))
    payment = PROBLEM.features.categorical.index("payment_type")
    assert sorted(Preprocessing.fit(mixed, PROBLEM).vocabularies[payment]) == ["1", "True"]


@pytest.mark.parametrize(("change", "message"), [
    ({"fare": ["twelve"]}, "feature 'fare': expected numbers (or null)"),
    ({"fare": [1.0, 2.0]}, "feature columns differ in length"),
])
def test_bad_request_values_name_the_feature(taxi_training_sets, change, message) -> None:
    fitted = Preprocessing.fit(pd.read_parquet(taxi_training_sets[0]), PROBLEM)
    row = {c: [1.0] for c in fitted.numeric} | {c: ["x"] for c in fitted.categorical}
    with pytest.raises(FeatureInputError, match=re.escape(message)):
        fitted.transform(row | change)
    with pytest.raises(FeatureInputError, match=r"missing feature column\(s\) \['company'\]"):
        fitted.transform({k: v for k, v in row.items() if k != "company"})

"""Preprocessing: fitted on the train split only; missing and unseen values get their own ids."""

import numpy as np
import pandas as pd
import pytest

from slipway.components.preprocessing import MISSING_ID, UNKNOWN_ID, Preprocessing
from slipway.problem import load_problem

PROBLEM = load_problem("chicago_taxi")


def test_preprocessing_statistics_come_from_the_train_split_only(taxi_splits) -> None:
    train = pd.read_parquet(taxi_splits[0])
    both = pd.concat([train, pd.read_parquet(taxi_splits[1])])
    fitted = Preprocessing.fit(train, PROBLEM)
    fare = fitted.numeric.index("fare")
    assert fitted.means[fare] == pytest.approx(train["fare"].mean())
    assert fitted.means[fare] != pytest.approx(both["fare"].mean()), "eval rows leaked into the fit"


def test_missing_and_unseen_categories_get_their_reserved_ids(taxi_splits) -> None:
    train = pd.read_parquet(taxi_splits[0])
    fitted = Preprocessing.fit(train, PROBLEM)
    rows = train.head(3).copy()
    rows["company"] = pd.array(["Taxi Affiliation Services", None, "A Company Founded Tomorrow"], dtype="string")
    numeric, categorical = fitted.transform(rows)
    company = fitted.categorical.index("company")
    assert categorical[1, company] == MISSING_ID
    assert categorical[2, company] == UNKNOWN_ID
    assert categorical[0, company] >= 2
    assert numeric.shape == (3, 2 * len(PROBLEM.features.numeric))


def test_a_missing_numeric_is_the_train_mean_plus_an_indicator(taxi_splits) -> None:
    train = pd.read_parquet(taxi_splits[0])
    fitted = Preprocessing.fit(train, PROBLEM)
    rows = train.head(1).copy()
    rows["trip_miles"] = np.nan
    numeric, _ = fitted.transform(rows)
    miles = fitted.numeric.index("trip_miles")
    assert numeric[0, miles] == 0.0  # standardised mean
    assert numeric[0, len(fitted.numeric) + miles] == 1.0  # its missing indicator

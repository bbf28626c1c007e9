"""The baseline model: preprocessing fitted on train only, a safe artifact, reproducible training."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from slipway.components.baseline import TrainConfig, train_baseline
from slipway.components.model_artifact import METADATA_FILE, WEIGHTS_FILE, ModelArtifactError, load_model
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


def test_the_artifact_is_safetensors_and_json_only_and_predicts_as_trained(taxi_model: Path, taxi_splits) -> None:
    assert sorted(p.name for p in taxi_model.iterdir()) == [METADATA_FILE, WEIGHTS_FILE]
    metadata = json.loads((taxi_model / METADATA_FILE).read_text())
    assert metadata["architecture"]["name"] == "logistic_regression"
    assert metadata["preprocessing"]["label"] == PROBLEM.label.name
    assert set(load_file(str(taxi_model / WEIGHTS_FILE))) >= {"linear.weight", "linear.bias"}

    evaluation = pd.read_parquet(taxi_splits[1])
    scores = load_model(taxi_model).predict_proba(evaluation)
    assert scores.shape == (len(evaluation),) and ((scores > 0) & (scores < 1)).all()
    assert roc_auc_score(evaluation[PROBLEM.label.name], scores) > 0.85


def test_training_is_reproducible_for_a_seed_and_differs_across_seeds(taxi_splits, tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> dict:
        train_baseline(*taxi_splits, PROBLEM, TrainConfig(epochs=1, seed=seed), tmp_path / name)
        return load_file(str(tmp_path / name / WEIGHTS_FILE))

    first, again, other = weights(7, "a"), weights(7, "b"), weights(8, "c")
    assert all((first[k] == again[k]).all() for k in first)
    assert not all((first[k] == other[k]).all() for k in first)


def test_a_directory_without_the_artifact_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactError, match=f"{tmp_path}: no model.safetensors; not a Slipway model artifact"):
        load_model(tmp_path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("batch_size", 0, "batch_size must be at least 1, got 0"),
    ("learning_rate", 0.0, "learning_rate must be positive, got 0.0"),
])
def test_train_config_refuses_values_that_cannot_train(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})

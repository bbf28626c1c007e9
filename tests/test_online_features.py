"""Serving with online features: the request's entities looked up in Feast (Redis), and a stopped Redis survived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import running_redis

from slipway.components import feature_store
from slipway.components.feature_aggregates import write_feature_tables
from slipway.components.model_artifact import load_model
from slipway.problem import load_problem
from slipway.serving.deploy import json_instances
from slipway.serving.online_features import OnlineFeatures
from slipway.serving.predictor import PredictorSettings, SlipwayPredictor
from slipway.serving.protocol import DEGRADED_HEADER, FEATURE_STORE_UNAVAILABLE

PROBLEM = load_problem("chicago_taxi")
COMPANY_TRIPS_7D = "company_stats__trips_7d"


@pytest.fixture
def redis_store(taxi_splits, tmp_path: Path) -> Any:
    """A Redis online store holding the sample's latest features; yields (StoreConfig, the redis process)."""
    trips = tmp_path / "trips.parquet"
    frames = [pd.read_parquet(path) for path in taxi_splits]
    pd.concat(frames).to_parquet(trips)
    tables = write_feature_tables(trips, PROBLEM, tmp_path / "tables")
    (tmp_path / "redis").mkdir()
    with running_redis(tmp_path / "redis") as (address, process):
        config = feature_store.StoreConfig(repo_dir=tmp_path / "repo", online="redis", redis_url=address)
        store = feature_store.open_store(config, PROBLEM)
        feature_store.apply(store, PROBLEM, tables)
        feature_store.materialize(store, pd.concat(frames)[PROBLEM.timestamp.column].max().to_pydatetime())
        yield config, process, frames[1]


def test_requests_get_their_entities_features_and_survive_a_stopped_redis(redis_store, taxi_model: Path) -> None:
    config, redis, eval_rows = redis_store
    model = load_model(taxi_model)
    predictor = SlipwayPredictor("chicago_taxi", model, PredictorSettings(fallback_score=0.3),
                                 online_features=OnlineFeatures(config, PROBLEM))
    latest = eval_rows.sort_values(PROBLEM.timestamp.column).tail(20)  # entities within the materialized window
    rows = json_instances(latest)
    columns = {name: [row[name] for row in rows] for name in rows[0]}

    enriched, degraded = predictor.online_features.enrich(columns)
    assert degraded is None
    assert any(value is not None and value > 0 for value in enriched[COMPANY_TRIPS_7D])

    headers: dict[str, str] = {}
    healthy = predictor.predict({"instances": rows}, {}, headers)
    assert DEGRADED_HEADER not in headers and len(healthy["predictions"]) == 20
    # The raw trips carry no Feast features: the model scored them with the store's vectors...
    assert COMPANY_TRIPS_7D not in rows[0] and COMPANY_TRIPS_7D in model.preprocessing.numeric
    assert healthy["predictions"] == pytest.approx(model.predict_proba(enriched).tolist())
    # ...and feature values a caller sends are not read: the store's win.
    poisoned = [row | {COMPANY_TRIPS_7D: 1e9} for row in rows]
    assert predictor.predict({"instances": poisoned}, {}, {})["predictions"] == pytest.approx(healthy["predictions"])

    redis.terminate()
    redis.wait(timeout=10)
    answered = []
    for row in rows * 5:  # 100 requests with the store gone
        headers = {}
        response = predictor.predict({"instances": [row]}, {}, headers)
        answered.append((len(response["predictions"]), headers.get(DEGRADED_HEADER)))
    assert answered == [(1, FEATURE_STORE_UNAVAILABLE)] * 100
    _, degraded = predictor.online_features.enrich(columns)
    assert degraded == FEATURE_STORE_UNAVAILABLE


def test_after_a_failure_the_store_is_left_alone_for_a_while_then_asked_again(redis_store) -> None:
    config, redis, eval_rows = redis_store
    now = [0.0]
    online = OnlineFeatures(config, PROBLEM, retry_after_s=5.0, clock=lambda: now[0])
    rows = json_instances(eval_rows.sort_values(PROBLEM.timestamp.column).tail(1))
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    assert online.enrich(columns)[1] is None
    redis.terminate()
    redis.wait(timeout=10)
    assert online.enrich(columns)[1] == FEATURE_STORE_UNAVAILABLE  # asked, and failed
    online._store = None  # a store that would answer again, were it asked: it must not be, yet
    now[0] = 4.9
    assert online.enrich(columns)[1] == FEATURE_STORE_UNAVAILABLE and online._store is None
    now[0] = 5.1
    assert online.enrich(columns)[1] == FEATURE_STORE_UNAVAILABLE and online._store is not None  # asked again


def test_a_request_without_its_entity_columns_is_a_400_naming_them(redis_store, taxi_model: Path) -> None:
    from kserve.errors import InvalidInput

    config, _, eval_rows = redis_store
    predictor = SlipwayPredictor("chicago_taxi", load_model(taxi_model), PredictorSettings(fallback_score=0.3),
                                 online_features=OnlineFeatures(config, PROBLEM))
    row = {k: v for k, v in json_instances(eval_rows.head(1))[0].items() if k != "company"}
    with pytest.raises(InvalidInput, match=r"missing feature\(s\) \['company'\]"):
        predictor.predict({"instances": [row]}, {}, {})

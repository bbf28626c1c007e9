"""The model server's inference cache (serving/inference_cache.py): what it keys on, when it answers, when not."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
from conftest import free_port, running_redis, wait_until_answers

from slipway.components.model_artifact import LoadedModel, load_model
from slipway.serving.deploy import json_instances
from slipway.serving.inference_cache import (
    ERRORS,
    KEY_PREFIX,
    CacheSettings,
    LocalCache,
    RedisCache,
    build_cache,
    model_identity,
    row_keys,
)
from slipway.serving.predictor import PredictorSettings, SlipwayPredictor
from slipway.serving.protocol import DEGRADED_HEADER, MODEL_HEADER

NAME = "chicago_taxi"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rows(taxi_training_sets: tuple[Path, Path]) -> list[dict[str, Any]]:
    return json_instances(pd.read_parquet(taxi_training_sets[1]).head(16))


class Counted:
    """Counts the model's calls and the rows it scored; `fail` makes the next call raise."""

    def __init__(self, model: LoadedModel) -> None:
        self.model, self.calls, self.rows, self.fail = model, 0, 0, False
        self.original = model.predict_proba
        model.predict_proba = self  # type: ignore[method-assign]

    def __call__(self, columns: Any) -> np.ndarray:
        self.calls += 1
        self.rows += len(next(iter(columns.values())))
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.original(columns)


def predictor(model: LoadedModel, cache: Any, uri: str = "models:/chicago_taxi/3") -> SlipwayPredictor:
    return SlipwayPredictor(NAME, model, PredictorSettings(fallback_score=0.25, model_uri=uri), cache=cache)


def scores(server: SlipwayPredictor, instances: list[dict[str, Any]]) -> tuple[list[float], dict[str, str]]:
    headers: dict[str, str] = {}
    return server.predict({"instances": instances}, {}, headers)["predictions"], headers


def test_the_local_cache_evicts_the_least_recently_used_and_forgets_after_its_ttl() -> None:
    clock = Clock()
    cache = LocalCache(size=2, ttl_s=10, clock=clock)
    cache.put_many([(b"a", 0.1), (b"b", 0.2)])
    assert cache.get_many([b"a"]) == [0.1]  # "a" is now the most recently used
    cache.put_many([(b"c", 0.3)])  # full: "b", the least recently used, goes
    assert cache.get_many([b"a", b"b", b"c"]) == [0.1, None, 0.3]
    clock.now += 9.99
    assert cache.get_many([b"a"]) == [0.1]  # a hit does not extend the TTL
    cache.put_many([(b"c", 0.3)])  # a put does
    clock.now += 0.01
    assert cache.get_many([b"a", b"c"]) == [None, 0.3]
    assert len(cache) == 1  # the expired entry is dropped, not just hidden
    clock.now += 10
    assert cache.get_many([b"c"]) == [None] and len(cache) == 0


def test_a_row_key_is_its_values_as_the_model_reads_them(taxi_model: Path, rows: list[dict[str, Any]]) -> None:
    model = load_model(taxi_model)
    numeric, categorical = model.preprocessing.numeric, model.preprocessing.categorical
    identity = model_identity(model.module, model.metadata, "models:/chicago_taxi/3")

    def key(row: dict[str, Any], of: bytes = identity) -> bytes:
        return row_keys(of, numeric, categorical, {name: [row[name]] for name in row})[0]

    row = dict(rows[0])
    row["fare"], row["pickup_community_area"], row["company"] = 12.5, 8, "Flash Cab"
    assert key(row) == key(dict(reversed(list(row.items()))))  # the request's column order does not matter
    assert key(row | {"trip_start_timestamp": 1}) == key(row)  # columns the model does not read do not either
    # Every change the model can see is another key ...
    assert key(row | {"fare": 12.500000000000002}) != key(row)
    assert key(row | {"fare": row["trip_miles"], "trip_miles": row["fare"]}) != key(row)  # swapped columns
    assert key(row | {"company": "flash cab"}) != key(row)
    assert key(row | {"company": None}) != key(row | {"company": ""})  # missing vs an unknown category
    assert key(row | {"fare": None}) != key(row | {"fare": 0.0})
    assert key(row, of=model_identity(model.module, model.metadata, "models:/chicago_taxi/4")) != key(row)
    # ... and what the model reads alike is one key: a missing number as null or NaN, an integer category
    # as 8, 8.0 or "8" (the vocabulary is keyed by decimal text).
    assert key(row | {"fare": None}) == key(row | {"fare": math.nan})
    assert key(row | {"pickup_community_area": 8.0}) == key(row | {"pickup_community_area": "8"}) == key(row)
    same = [row | {"fare": None}, row | {"fare": math.nan}, row | {"pickup_community_area": "8"}, row]
    scored = model.predict_proba({name: [r[name] for r in same] for name in numeric + categorical})
    assert scored[0] == scored[1] and scored[2] == scored[3]
    assert len(set(row_keys(identity, numeric, categorical, {n: [r[n] for r in rows] for n in rows[0]}))) == 16


def test_the_model_identity_is_its_weights_and_metadata_not_its_name(taxi_model: Path) -> None:
    model, again = load_model(taxi_model), load_model(taxi_model)
    identity = model_identity(model.module, model.metadata, "models:/chicago_taxi@champion")
    assert model_identity(again.module, again.metadata, "models:/chicago_taxi@champion") == identity
    with np.errstate(all="ignore"):
        next(iter(again.module.parameters())).data[0, 0] += 1e-6  # retrained: same name, other weights
    assert model_identity(again.module, again.metadata, "models:/chicago_taxi@champion") != identity
    other = model.metadata | {"preprocessing": model.metadata["preprocessing"] | {"means": [0.0] * 99}}
    assert model_identity(model.module, other, "models:/chicago_taxi@champion") != identity


def test_a_mixed_batch_scores_only_its_misses_and_answers_as_without_the_cache(
        taxi_model: Path, rows: list[dict[str, Any]]) -> None:
    uncached, _ = scores(predictor(load_model(taxi_model), None), rows)
    model = load_model(taxi_model)
    counted = Counted(model)
    server = predictor(model, LocalCache(size=100, ttl_s=60))
    first, _ = scores(server, rows[:10:2])  # rows 0, 2, 4, 6, 8
    assert (counted.calls, counted.rows) == (1, 5)
    mixed, headers = scores(server, rows[:12])  # 5 known, 7 new
    assert (counted.calls, counted.rows) == (2, 12)
    # In the request's order: the known rows as first scored, the new ones as the model scores them alone.
    new = [1, 3, 5, 7, 9, 10, 11]
    alone, _ = scores(predictor(load_model(taxi_model), None), [rows[i] for i in new])
    assert mixed[:10:2] == first and [mixed[i] for i in new] == alone
    # The model's float32 sums already differ in their last bits with the batch it is given (row 8 alone or
    # among 16), with or without a cache; within that, these are the uncached answers.
    assert np.allclose(mixed, uncached[:12], rtol=1e-5, atol=0)
    assert headers == {MODEL_HEADER: "models:/chicago_taxi/3"}
    again, _ = scores(server, rows[11::-1])  # all known: the model is not called
    assert (counted.calls, again) == (2, mixed[::-1])


def test_a_degraded_answer_is_never_cached(taxi_model: Path, rows: list[dict[str, Any]]) -> None:
    model = load_model(taxi_model)
    counted = Counted(model)
    cache = LocalCache(size=100, ttl_s=60)
    server = predictor(model, cache)
    counted.fail = True
    fallback, headers = scores(server, rows[:3])
    assert fallback == [0.25] * 3 and headers[DEGRADED_HEADER] == "model-error"
    assert len(cache) == 0
    counted.fail = False
    recovered, headers = scores(server, rows[:3])
    assert DEGRADED_HEADER not in headers and recovered != fallback and counted.rows == 6


def test_a_model_flagged_non_deterministic_is_served_without_the_cache(
        taxi_model: Path, rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    flagged = load_model(taxi_model)
    flagged.metadata["deterministic"] = False
    with caplog.at_level(logging.WARNING, logger="slipway.serving.predictor"):
        server = predictor(flagged, LocalCache(size=100, ttl_s=60))
    assert server.cache is None
    assert 'inference cache is off for this model: its model.json says "deterministic": false' in caplog.text
    sampling = load_model(taxi_model)
    sampling.module.train()  # dropout at inference
    assert predictor(sampling, LocalCache(size=100, ttl_s=60)).cache is None
    served = predictor(load_model(taxi_model), LocalCache(size=100, ttl_s=60))
    assert served.cache is not None  # ours: eval mode
    served.replace_model(flagged)
    assert served.cache is None
    served.replace_model(load_model(taxi_model))  # a deterministic model again: cached again
    assert served.cache is served.configured_cache


def test_another_model_never_answers_from_the_old_ones_entries(taxi_model: Path, rows: list[dict[str, Any]]) -> None:
    cache = LocalCache(size=100, ttl_s=60)
    server = predictor(load_model(taxi_model), cache)
    before, _ = scores(server, rows[:4])
    assert len(cache) == 4
    retrained = load_model(taxi_model)
    next(iter(retrained.module.parameters())).data.mul_(1.5)
    counted = Counted(retrained)
    server.replace_model(retrained)
    assert len(cache) == 0
    after, _ = scores(server, rows[:4])
    assert counted.rows == 4 and after != before


def test_replicas_share_scores_through_redis_with_a_ttl(
        taxi_model: Path, rows: list[dict[str, Any]], redis_server: str) -> None:
    settings = CacheSettings(redis=redis_server, ttl_s=30)
    first = predictor(load_model(taxi_model), build_cache(settings, NAME))
    answered, _ = scores(first, rows[:6])
    model = load_model(taxi_model)
    counted = Counted(model)
    second = predictor(model, build_cache(CacheSettings(redis=redis_server, ttl_s=30, size=10), NAME))  # tiered
    shared, _ = scores(second, rows[:8])
    assert counted.rows == 2 and shared[:6] == answered
    host, port = redis_server.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    keys = client.keys(f"{KEY_PREFIX}*")
    assert len(keys) == 8
    assert all(25_000 < client.pttl(key) <= 30_000 for key in keys)


def test_a_redis_that_goes_away_costs_misses_not_answers(
        taxi_model: Path, rows: list[dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    errors = ERRORS.labels("down", "redis")
    with running_redis(tmp_path) as (address, process):
        cache = RedisCache(address, ttl_s=30, model="down", clock=clock)
        server = SlipwayPredictor("down", load_model(taxi_model), PredictorSettings(fallback_score=0.25), cache=cache)
        expected, _ = scores(server, rows[:3])
        process.kill()
        process.wait()
        before = errors._value.get()
        with caplog.at_level(logging.WARNING, logger="slipway.serving.inference_cache"):
            for _ in range(3):
                answered, headers = scores(server, rows[:3])
                assert answered == expected and DEGRADED_HEADER not in headers
            assert errors._value.get() == before + 1  # then left alone for retry_after_s
            clock.now += 1.0
            scores(server, rows[:3])
        assert errors._value.get() == before + 2  # the retry's get (its put is not tried: Redis rests again)
        assert len([r for r in caplog.records if "Redis at" in r.getMessage()]) == 1  # logged once per outage


@pytest.fixture(scope="module")
def cached_server(taxi_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`slipway serve` configured as an InferenceService would be, through the environment."""
    root = tmp_path_factory.mktemp("serve-cached")
    http_port, grpc_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "slipway"), "serve", "--model", str(taxi_model), "--name", NAME,
               "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = os.environ | {"SLIPWAY_INFERENCE_CACHE_SIZE": "1000", "SLIPWAY_INFERENCE_CACHE_TTL": "60"}
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until_answers(f"{url}/v2/health/ready", timeout_s=60)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def metric(text: str, name: str) -> float:
    found = re.search(rf'^{name}{{model="{NAME}"}} (\S+)$', text, re.MULTILINE)
    assert found, f"{name} is not on /metrics"
    return float(found.group(1))


def test_the_server_counts_hits_and_misses_on_its_metrics(cached_server: str, rows: list[dict[str, Any]]) -> None:
    url = f"{cached_server}/v1/models/{NAME}:predict"
    first = httpx.post(url, json={"instances": rows[:4]})
    second = httpx.post(url, json={"instances": rows[:6]})
    assert first.status_code == second.status_code == 200, first.text
    assert second.json()["predictions"][:4] == first.json()["predictions"]
    metrics = httpx.get(f"{cached_server}/metrics").text
    assert metric(metrics, "slipway_inference_cache_hits_total") == 4
    assert metric(metrics, "slipway_inference_cache_misses_total") == 6
    assert metric(metrics, "slipway_inference_cache_entries") == 6

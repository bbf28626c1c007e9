"""`slipway serve`: a real KServe model server process answering V1, V2 REST and V2 gRPC with the trained model."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import free_port, wait_until_answers
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from slipway.components.model_artifact import METADATA_FILE, WEIGHTS_FILE, load_model
from slipway.components.registry import ModelRegistry
from slipway.components.tracking import TrackingConfig, TrainingRun
from slipway.serving.deploy import json_instances
from slipway.serving.model_source import fetch_model
from slipway.serving.prediction_log import read_events
from slipway.serving.predictor import PredictorSettings, SlipwayPredictor, fallback_score_of
from slipway.serving.protocol import DEGRADED_HEADER
from slipway.storage import upload

NAME = "chicago_taxi"
ROWS = 32


@pytest.fixture(scope="module")
def eval_rows(taxi_training_sets: tuple[Path, Path]) -> pd.DataFrame:
    return pd.read_parquet(taxi_training_sets[1]).head(ROWS)


@pytest.fixture(scope="module")
def expected(taxi_model: Path, eval_rows: pd.DataFrame) -> np.ndarray:
    """What the library computes for the same rows: the server must answer exactly this."""
    return load_model(taxi_model).predict_proba(eval_rows)


@pytest.fixture(scope="module")
def server(taxi_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("serve")
    http_port, grpc_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "slipway"), "serve", "--model", str(taxi_model), "--name", NAME,
               "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--max-batch-rows", "100",
               "--max-payload-bytes", "65536", "--prediction-log", str(root / "predictions.jsonl")]
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until_answers(f"{url}/v2/health/ready", timeout_s=60)
        yield {"url": url, "grpc": f"127.0.0.1:{grpc_port}", "root": root, "process": process}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def v2_inputs(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> list[dict[str, Any]]:
    inputs = []
    for column in features:
        values = [None if pd.isna(v) else v for v in frame[column].tolist()]
        if column in categorical:
            inputs.append({"name": column, "datatype": "BYTES", "shape": [len(frame)],
                           "data": ["" if v is None else str(v) for v in values]})
        else:
            inputs.append({"name": column, "datatype": "FP64", "shape": [len(frame)], "data": values})
    return inputs


def test_v1_answers_the_libraries_scores_for_a_batch_of_real_rows(server, eval_rows, expected) -> None:
    response = httpx.post(f"{server['url']}/v1/models/{NAME}:predict", json={"instances": json_instances(eval_rows)})
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["predictions"], expected, atol=1e-6)
    assert DEGRADED_HEADER not in response.headers


def test_v2_rest_answers_the_same_scores_and_always_an_id(server, taxi_model, eval_rows, expected) -> None:
    preprocessing = load_model(taxi_model).preprocessing
    inputs = v2_inputs(eval_rows, preprocessing.numeric + preprocessing.categorical, preprocessing.categorical)
    url = f"{server['url']}/v2/models/{NAME}/infer"
    given = httpx.post(url, json={"id": "trip-42", "inputs": inputs}).json()
    assert given["id"] == "trip-42" and given["model_name"] == NAME
    [output] = given["outputs"]
    assert output["name"] == "probability" and output["shape"] == [ROWS] and output["datatype"] == "FP64"
    # Missing categoricals travel as "" in BYTES tensors: an unknown value, as null is in V1.
    missing = [i for i, v in enumerate(eval_rows["company"]) if pd.isna(v)]
    assert np.allclose(np.delete(output["data"], missing), np.delete(expected, missing), atol=1e-6)
    anonymous = httpx.post(url, json={"inputs": inputs}).json()
    assert anonymous["id"], "a V2 response without an id breaks KServe's clients"


def v2_tensors(frame: pd.DataFrame, numeric: list[str], categorical: list[str], binary: bool) -> list[InferInput]:
    inputs = []
    for column in numeric:
        tensor = InferInput(column, [len(frame)], "FP64")
        tensor.set_data_from_numpy(frame[column].to_numpy("float64"), binary_data=binary)
        inputs.append(tensor)
    for column in categorical:
        tensor = InferInput(column, [len(frame)], "BYTES")
        tensor.set_data_from_numpy(np.array([str(v) for v in frame[column]], dtype=object), binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_v2_grpc_answers_the_same_scores(server, taxi_model, eval_rows, expected) -> None:
    preprocessing = load_model(taxi_model).preprocessing
    frame = eval_rows.dropna(subset=preprocessing.categorical)
    inputs = v2_tensors(frame, preprocessing.numeric, preprocessing.categorical, binary=False)

    async def infer() -> Any:
        client = InferenceGRPCClient(server["grpc"])
        try:
            return await client.infer(InferRequest(model_name=NAME, infer_inputs=inputs, request_id="g-1"))
        finally:
            await client.close()

    response = asyncio.run(infer())
    assert response.id == "g-1"
    assert np.allclose(response.outputs[0].as_numpy(), expected[frame.index.to_numpy()], atol=1e-6)


def test_v2_rest_reads_the_binary_tensor_extension_as_kserves_client_sends_it(
        server, taxi_model, eval_rows, expected) -> None:
    preprocessing = load_model(taxi_model).preprocessing
    frame = eval_rows.dropna(subset=preprocessing.categorical)
    inputs = v2_tensors(frame, preprocessing.numeric, preprocessing.categorical, binary=True)

    async def infer() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            return await client.infer(server["url"], InferRequest(model_name=NAME, infer_inputs=inputs,
                                                                  request_id="b-1"), model_name=NAME)
        finally:
            await client.close()

    response = asyncio.run(infer())
    assert response.id == "b-1"
    assert np.allclose(response.outputs[0].as_numpy(), expected[frame.index.to_numpy()], atol=1e-6)


def test_health_readiness_and_prometheus_metrics(server) -> None:
    assert httpx.get(f"{server['url']}/v2/health/live").status_code == 200
    assert httpx.get(f"{server['url']}/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert httpx.get(f"{server['url']}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    metrics = httpx.get(f"{server['url']}/metrics").text
    assert f'slipway_predicted_rows_total{{model="{NAME}"}}' in metrics
    assert "request_predict_seconds" in metrics  # KServe's own latency histograms


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"instances": [{"fare": 1.0}]}, 400, "instances[0]: missing feature(s) ['trip_miles'"),
    ({"instances": ["a row"]}, 400, "instances[0]: expected an object of feature values, got str"),
    ({"instances": []}, 400, "a non-empty list of objects"),
    ({"rows": []}, 400, 'expected {"instances": [...]}'),
])
def test_a_malformed_v1_request_is_a_400_naming_the_field(server, body, status, message) -> None:
    response = httpx.post(f"{server['url']}/v1/models/{NAME}:predict", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(("body", "message"), [
    (b"{}", "not a V2 inference request: no 'inputs' field"),
    (b'{"inputs": [{"name": "fare", "datatype": "FP64", "data": [1.0]}]}', "no 'shape' field"),
    (b'{"inputs": "fare"}', 'not a V2 inference request (\'str\' object has no attribute \'get\'; expected {"inputs"'),
    (b'{"inputs": []}', '"inputs" is empty'),
    (b"{not json", "Unrecognized request format"),
])
def test_a_malformed_v2_request_is_a_400_naming_what_is_missing(server, body, message) -> None:
    response = httpx.post(f"{server['url']}/v2/models/{NAME}/infer", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_bad_value_or_too_big_a_request_is_refused_with_its_reason(server, eval_rows) -> None:
    url = f"{server['url']}/v1/models/{NAME}:predict"
    [row] = json_instances(eval_rows.head(1))
    bad = httpx.post(url, json={"instances": [row | {"fare": "twelve"}]})
    assert bad.status_code == 400
    assert bad.json()["error"] == "feature 'fare', row 0: expected a number (or null), got text 'twelve'"
    many = httpx.post(url, json={"instances": [{}] * 101})  # the row count is checked before any row
    assert many.status_code == 400 and "101 rows is more than this server's limit of 100" in many.json()["error"]
    huge = httpx.post(url, content=b"{" + b" " * 70000 + b"}")
    assert huge.status_code == 413 and "exceeds this server's limit of 65536 bytes" in huge.json()["error"]
    chunked = httpx.post(url, content=iter([b"{", b" " * 70000, b"}"]))  # no Content-Length
    assert chunked.status_code == 413
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(f"{server['url']}/v1/models/other:predict", json={"instances": [row]}).status_code == 404
    assert httpx.post(f"{server['url']}/v2/models/other/infer", json={"inputs": [
        {"name": "fare", "datatype": "FP64", "shape": [1], "data": [1.0]}]}).status_code == 404
    v2 = httpx.post(f"{server['url']}/v2/models/{NAME}/infer",
                    json={"inputs": [{"name": "fare", "datatype": "FP64", "shape": [1], "data": [1.0]}]})
    assert v2.status_code == 400 and "missing feature tensor(s) ['trip_miles'" in v2.json()["error"]
    assert server["process"].poll() is None, "the server must survive bad requests"


def test_served_requests_are_logged_as_kserve_cloudevents(server, eval_rows) -> None:
    headers = {"x-request-id": "logged-1"}
    httpx.post(f"{server['url']}/v1/models/{NAME}:predict", json={"instances": json_instances(eval_rows.head(2))},
               headers=headers)
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in read_events(server["root"] / "predictions.jsonl") if e["id"] == "logged-1"]
        if len(events) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    types = sorted(e["type"] for e in events)
    assert types == ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"]
    request = next(e for e in events if e["type"].endswith("request"))
    assert len(request.get_data()["instances"]) == 2


def test_a_failing_model_answers_the_fallback_marked_degraded_not_a_5xx(taxi_model, eval_rows) -> None:
    model = load_model(taxi_model)

    def broken(*_: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    model.module.forward = broken
    predictor = SlipwayPredictor(NAME, model, PredictorSettings(fallback_score=fallback_score_of(model, None)))
    headers: dict[str, str] = {}
    response = predictor.predict({"instances": json_instances(eval_rows.head(3))}, {}, headers)
    prior = model.metadata["lineage"]["train_positive_rate"]
    assert 0.1 < prior < 0.5 and response == {"predictions": [prior] * 3}
    assert headers == {DEGRADED_HEADER: "model-error"}


def test_a_model_is_fetched_from_the_registry_by_alias_and_from_object_storage(
    taxi_model: Path, tmp_path: Path, s3_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking = TrackingConfig.embedded(tmp_path / "mlflow")
    with TrainingRun.start(TrackingConfig(tracking.tracking_uri, "serve-test"), "train", {}, {}) as run:
        run.log_model_dir(taxi_model)
    registry = ModelRegistry.connect(tracking.tracking_uri)
    registry.promote("taxi", registry.register("taxi", run.run_id, {}, card=lambda v: "").version)
    source = fetch_model("models:/taxi@champion", tmp_path / "cache", tracking.tracking_uri)
    assert (source.version, source.registered_name) == ("1", "taxi")  # the server names its URLs "taxi"
    assert (source.path / WEIGHTS_FILE).read_bytes() == (taxi_model / WEIGHTS_FILE).read_bytes()

    for name in (WEIGHTS_FILE, METADATA_FILE):
        upload(taxi_model / name, f"s3://slipway-artifacts/served/taxi/{name}", s3_config)
    # The pod's way: the S3 endpoint and credentials come from the environment.
    for name, value in {"AWS_ENDPOINT_URL": s3_config.s3_endpoint, "AWS_ACCESS_KEY_ID": s3_config.s3_access_key,
                        "AWS_SECRET_ACCESS_KEY": s3_config.s3_secret_key, "AWS_REGION": s3_config.s3_region}.items():
        monkeypatch.setenv(name, value)
    fetched = fetch_model("s3://slipway-artifacts/served/taxi", tmp_path / "cache")
    assert load_model(fetched.path).preprocessing == load_model(taxi_model).preprocessing
    assert (fetched.version, fetched.registered_name) == ("", "")  # not from the registry: the problem names it

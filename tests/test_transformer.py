"""`slipway transform`: the Feast transformer as its own KServe server in front of a real `slipway serve`.

The clients send only the trip and its entity keys; the transformer adds the online features and the
predictor scores. Its answers must equal the predictor's own in-process lookup (`serve --features`),
for V1, V2 REST and V2 gRPC, and it must answer (degraded, never 5xx) when the predictor is gone.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import free_port, wait_until_answers
from kserve import InferenceGRPCClient, InferInput, InferRequest

from slipway.components import feature_store
from slipway.components.model_artifact import load_model
from slipway.problem import load_problem
from slipway.serving.deploy import json_instances
from slipway.serving.online_features import OnlineFeatures, RequestKeyError
from slipway.serving.predictor import PredictorSettings, SlipwayPredictor, request_features
from slipway.serving.protocol import DEGRADED_HEADER, FEATURE_STORE_UNAVAILABLE, PREDICTOR_UNAVAILABLE

PROBLEM = load_problem("chicago_taxi")
NAME = "chicago_taxi"
ROWS = 24
SLIPWAY = str(Path(sys.executable).parent / "slipway")
README = Path(__file__).resolve().parents[1] / "README.md"


@contextmanager
def running(command: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answers(ready_url, timeout_s=60)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def feature_repo(taxi_splits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store with every view materialized up to the snapshot rows after the sample's last trip."""
    repo = tmp_path_factory.mktemp("transformer") / "feature_repo"
    store = feature_store.local_store(taxi_splits, PROBLEM, repo)
    last_trip = max(pd.read_parquet(path)[PROBLEM.timestamp.column].max() for path in taxi_splits)
    feature_store.materialize(store, (last_trip + pd.Timedelta(hours=1)).to_pydatetime())
    return repo


@pytest.fixture(scope="module")
def trips(taxi_splits: tuple[Path, Path], taxi_model: Path) -> pd.DataFrame:
    """The newest eval trips as a client sends them: the model's raw features and the entity keys, no Feast
    features."""
    model = load_model(taxi_model)
    frame = pd.read_parquet(taxi_splits[1]).sort_values(PROBLEM.timestamp.column).tail(ROWS)
    columns = request_features(model, OnlineFeatures(feature_store.StoreConfig(repo_dir=Path("unused")), PROBLEM))
    assert not set(columns) & set(feature_store.joined_columns(PROBLEM))
    return frame[columns].reset_index(drop=True)


@pytest.fixture(scope="module")
def expected(taxi_model: Path, feature_repo: Path, trips: pd.DataFrame) -> list[float]:
    """The predictor's own in-process lookup (`slipway serve --features`) on the same store and trips."""
    predictor = SlipwayPredictor(NAME, load_model(taxi_model), PredictorSettings(fallback_score=0.3),
                                 online_features=OnlineFeatures(feature_store.StoreConfig(repo_dir=feature_repo),
                                                                PROBLEM))
    headers: dict[str, str] = {}
    scores = predictor.predict({"instances": json_instances(trips)}, {}, headers)["predictions"]
    assert DEGRADED_HEADER not in headers
    return scores


@pytest.fixture(scope="module")
def servers(taxi_model: Path, feature_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A predictor (no feature store of its own) and the transformer in front of it, each its own process."""
    root = tmp_path_factory.mktemp("transformer-servers")
    predictor_http, transformer_http, transformer_grpc = free_port(), free_port(), free_port()
    serve = [SLIPWAY, "serve", "--model", str(taxi_model), "--name", NAME, "--http-port", str(predictor_http),
             "--grpc-port", str(free_port())]
    # The spelling KServe appends to a transformer container's arguments.
    transform = [SLIPWAY, "transform", "--features", str(feature_repo), "--fallback-score", "0.3", "--model_name", NAME,
                 "--predictor_host", f"127.0.0.1:{predictor_http}", "--http_port", str(transformer_http),
                 "--grpc-port", str(transformer_grpc)]
    url = f"http://127.0.0.1:{transformer_http}"
    with running(serve, root / "predictor.log", f"http://127.0.0.1:{predictor_http}/v2/health/ready"), \
            running(transform, root / "transformer.log", f"{url}/v2/health/ready"):
        yield {"url": url, "grpc": f"127.0.0.1:{transformer_grpc}", "predictor_host": f"127.0.0.1:{predictor_http}"}


def v2_inputs(frame: pd.DataFrame) -> list[dict[str, Any]]:
    inputs = []
    for column in frame.columns:
        values = [None if pd.isna(v) else v for v in frame[column].tolist()]
        if PROBLEM.columns[column] == "string":
            inputs.append({"name": column, "datatype": "BYTES", "shape": [len(frame)],
                           "data": ["" if v is None else str(v) for v in values]})
        else:
            inputs.append({"name": column, "datatype": "FP64" if PROBLEM.columns[column] == "float" else "INT64",
                           "shape": [len(frame)], "data": values})
    return inputs


def test_v1_through_the_transformer_scores_as_the_predictors_own_lookup(servers, trips, expected) -> None:
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": json_instances(trips)})
    assert response.status_code == 200, response.text
    assert DEGRADED_HEADER not in response.headers
    assert response.json()["predictions"] == pytest.approx(expected, abs=1e-6)


def test_feature_values_a_client_sends_are_replaced_by_the_stores(servers, trips, expected) -> None:
    poisoned = [row | {name: 1e9 for name in feature_store.joined_columns(PROBLEM)} for row in json_instances(trips)]
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": poisoned})
    assert response.json()["predictions"] == pytest.approx(expected, abs=1e-6)


def test_v2_rest_through_the_transformer_keeps_the_id_and_the_scores(servers, trips, expected) -> None:
    complete = trips.dropna().index  # V2 BYTES carry a missing category as "", which V1's null is not
    response = httpx.post(f"{servers['url']}/v2/models/{NAME}/infer",
                          json={"id": "trip-7", "inputs": v2_inputs(trips.loc[complete])})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "trip-7" and body["model_name"] == NAME
    [output] = body["outputs"]
    assert output["name"] == "probability" and output["shape"] == [len(complete)]
    assert output["data"] == pytest.approx([expected[i] for i in complete], abs=1e-6)


def test_v2_grpc_through_the_transformer(servers, trips, expected) -> None:
    complete = trips.dropna()
    inputs = []
    for column in complete.columns:
        kind = PROBLEM.columns[column]
        tensor = InferInput(column, [len(complete)], {"string": "BYTES", "float": "FP64"}.get(kind, "INT64"))
        values = complete[column].to_numpy()
        tensor.set_data_from_numpy(np.array([str(v) for v in values], dtype=object) if kind == "string"
                                   else values.astype("float64" if kind == "float" else "int64"), binary_data=False)
        inputs.append(tensor)

    async def infer() -> Any:
        client = InferenceGRPCClient(servers["grpc"])
        try:
            return await client.infer(InferRequest(model_name=NAME, infer_inputs=inputs, request_id="g-7"))
        finally:
            await client.close()

    response = asyncio.run(infer())
    assert response.id == "g-7"
    assert response.outputs[0].as_numpy().tolist() == pytest.approx([expected[i] for i in complete.index], abs=1e-6)


def test_a_request_without_an_entity_key_is_a_400_naming_it(servers, trips) -> None:
    row = {k: v for k, v in json_instances(trips.head(1))[0].items() if k != "pickup_community_area"}
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": [row]})
    assert response.status_code == 400
    assert "pickup_community_area" in response.json()["error"]


def test_a_key_of_the_wrong_type_is_a_400_and_does_not_count_against_the_store(servers, trips, expected) -> None:
    row = json_instances(trips.head(1))[0] | {"pickup_community_area": "the loop"}
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": [row]})
    assert response.status_code == 400
    assert "'pickup_community_area' (integer) has keys that are not integers" in response.json()["error"]
    after = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": json_instances(trips)})
    assert DEGRADED_HEADER not in after.headers and after.json()["predictions"] == pytest.approx(expected, abs=1e-6)


def test_the_predictors_400_comes_back_as_a_400_with_its_reason(servers, trips) -> None:
    row = {k: v for k, v in json_instances(trips.head(1))[0].items() if k != "trip_miles"}
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": [row]})
    assert response.status_code == 400
    assert "trip_miles" in response.json()["error"] and "predictor" in response.json()["error"]


def test_a_store_that_cannot_be_read_degrades_to_missing_features(servers, trips, tmp_path) -> None:
    """An empty folder: no registry, no online store. The predictor still scores (missing indicators)."""
    port = free_port()
    command = [SLIPWAY, "transform", "--features", str(tmp_path / "no-store"), "--model-name", NAME,
               "--predictor-host", servers["predictor_host"], "--http-port", str(port),
               "--grpc-port", str(free_port())]
    with running(command, tmp_path / "transformer.log", f"http://127.0.0.1:{port}/v2/health/ready"):
        response = httpx.post(f"http://127.0.0.1:{port}/v1/models/{NAME}:predict",
                              json={"instances": json_instances(trips.head(3))})
        assert response.status_code == 200, response.text
        assert response.headers[DEGRADED_HEADER] == FEATURE_STORE_UNAVAILABLE
        assert len(response.json()["predictions"]) == 3
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert f'slipway_degraded_responses_total{{model="{NAME}",reason="{FEATURE_STORE_UNAVAILABLE}"}} 1.0' in metrics


def test_with_the_predictor_gone_every_request_gets_the_fallback_marked_degraded(
        feature_repo, trips, tmp_path) -> None:
    port = free_port()
    command = [SLIPWAY, "transform", "--features", str(feature_repo), "--fallback-score", "0.25", "--model-name", NAME,
               "--predictor-host", f"127.0.0.1:{free_port()}", "--predictor-timeout", "1", "--http-port", str(port),
               "--grpc-port", str(free_port())]
    with running(command, tmp_path / "transformer.log", f"http://127.0.0.1:{port}/v2/health/ready"):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [client.post(f"/v1/models/{NAME}:predict", json={"instances": json_instances(trips.head(2))})
                       for _ in range(20)]
            v2 = client.post(f"/v2/models/{NAME}/infer", json={"inputs": v2_inputs(trips.dropna().head(1))})
    assert {(r.status_code, r.headers.get(DEGRADED_HEADER)) for r in answers} == {(200, PREDICTOR_UNAVAILABLE)}
    assert all(r.json()["predictions"] == [0.25, 0.25] for r in answers)
    assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [0.25]
    assert v2.json()["parameters"]["degraded"] == PREDICTOR_UNAVAILABLE



def test_the_transformers_v2_metadata_lists_what_a_client_sends(servers, trips) -> None:
    """The predictor's inputs less the features the transformer looks up: the trip and its entity keys."""
    metadata = httpx.get(f"{servers['url']}/v2/models/{NAME}").json()
    assert [tensor["name"] for tensor in metadata["inputs"]] == list(trips.columns)
    assert {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}["company"] == "BYTES"
    assert metadata["outputs"] == [{"name": "probability", "datatype": "FP64", "shape": [-1]}]


def test_the_transformer_reads_a_v1_body_as_json_whatever_its_content_type(servers, trips, expected) -> None:
    body = json.dumps({"instances": json_instances(trips)}).encode()
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", content=body,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(expected, abs=1e-6)


def test_the_readmes_curl_example_works_as_written(taxi_model, feature_repo, tmp_path) -> None:
    """The README's `slipway serve --features` and its V1 curl, run as written (only the model and the port
    differ): curl's -d sends no JSON Content-Type, which KServe alone answered with a misleading 400."""
    [curl] = re.findall(r"^curl -s localhost:8080/v1/models/chicago_taxi:predict -d '.*?'$", README.read_text(),
                        flags=re.MULTILINE | re.DOTALL)
    port = free_port()
    command = [SLIPWAY, "serve", "--model", str(taxi_model), "--features", str(feature_repo), "--http-port", str(port),
               "--grpc-port", str(free_port())]
    with running(command, tmp_path / "server.log", f"http://127.0.0.1:{port}/v2/health/ready"):
        answer = subprocess.run(["bash", "-c", curl.replace("localhost:8080", f"localhost:{port}")],
                                capture_output=True, text=True, timeout=60, check=True)
    [score] = json.loads(answer.stdout)["predictions"]
    assert 0 < score < 1


@pytest.mark.parametrize(("key", "message"), [
    (10**30, "entity 'pickup_community_area' (integer) has keys out of the 64-bit range the store holds: "
             "[1000000000000000000000000000000]"),
    (math.inf, "entity 'pickup_community_area' (integer) has keys that are not integers: an infinite number"),
])
def test_a_key_the_store_cannot_hold_is_the_callers_error_not_the_stores(key, message) -> None:
    """Feast refused a key beyond 64 bits, which counted as the store failing: every request was answered degraded
    for the next 5 s. It is refused before the store is asked (no store here: it would fail the test)."""
    online = OnlineFeatures(feature_store.StoreConfig(repo_dir=Path("no-store-here")), PROBLEM)
    with pytest.raises(RequestKeyError) as refused:
        online.enrich({"pickup_community_area": [8, key], "company": ["Flash Cab", "Flash Cab"]})
    assert str(refused.value) == message


def test_through_the_transformer_a_key_beyond_64_bits_is_a_400_and_the_store_stays_up(servers, trips,
                                                                                      expected) -> None:
    row = json_instances(trips.head(1))[0] | {"pickup_community_area": 1e30}  # a whole number, as JSON reads it
    response = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": [row]})
    assert (response.status_code, response.json()) == (400, {"error": (
        "entity 'pickup_community_area' (integer) has keys out of the 64-bit range the store holds: "
        "[1000000000000000019884624838656]")})
    after = httpx.post(f"{servers['url']}/v1/models/{NAME}:predict", json={"instances": json_instances(trips)})
    assert DEGRADED_HEADER not in after.headers and after.json()["predictions"] == pytest.approx(expected, abs=1e-6)

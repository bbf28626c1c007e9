"""`slipway serve` against a hostile or careless client: every bad input is a 4xx naming what is wrong, never a 5xx.

A 5xx says the server failed, and the canary analysis counts 5xx as the model's errors: a client that could
cause one could fail a canary. Each class of bad input found by trying (issue 29) is replayed here against a
real server process, on V1 REST, V2 REST and V2 gRPC, with the exact status and message it must get. So is
port ownership: a second server on a busy port is refused, never sharing it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pandas as pd
import pytest
import torch
from conftest import free_port
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.infer_type import InferResponse

from slipway.components.model_artifact import load_model
from slipway.serving.deploy import json_instances
from slipway.serving.grpc_server import ExclusiveGRPCServer
from slipway.serving.inference_cache import LocalCache
from slipway.serving.ports import PortError
from slipway.serving.prediction_log import PredictionLogConfig, PredictionLogger
from slipway.serving.predictor import PredictorSettings, SlipwayPredictor, numeric_ranges
from slipway.serving.process import ServerProcess
from slipway.serving.protocol import DEGRADED_HEADER
from slipway.serving.v2_rest import EXPECTED

NAME = "chicago_taxi"
SLIPWAY = str(Path(sys.executable).parent / "slipway")
BUSY = "is already in use (another process listens on it): stop that process or choose another port"


@pytest.fixture(scope="module")
def model(taxi_model: Path) -> Any:
    return load_model(taxi_model)


@pytest.fixture(scope="module")
def row(taxi_training_sets: tuple[Path, Path], model: Any) -> dict[str, Any]:
    """One real eval row, as a V1 client sends it (every model feature, nothing missing)."""
    features = model.preprocessing.numeric + model.preprocessing.categorical
    frame = pd.read_parquet(taxi_training_sets[1])[features].dropna().head(1)
    return json_instances(frame)[0]


@pytest.fixture(scope="module")
def server(taxi_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hardening")
    args = ["serve", "--model", str(taxi_model), "--name", NAME, "--prediction-log", str(root / "predictions.jsonl")]
    with ServerProcess(args, NAME, root) as process:
        yield process


def v2_inputs(row: dict[str, Any], model: Any, **changed: dict[str, Any]) -> list[dict[str, Any]]:
    """The row as V2 tensors (FP64 numerics, BYTES categoricals), with the named tensors' fields changed."""
    numeric = model.preprocessing.numeric
    inputs = [{"name": name, "datatype": "FP64" if name in numeric else "BYTES", "shape": [1],
               "data": [row[name] if name in numeric else str(row[name])]}
              for name in numeric + model.preprocessing.categorical]
    return [tensor | changed.get(tensor["name"], {}) for tensor in inputs]


def binary_request(row: dict[str, Any], model: Any, company: bytes) -> tuple[bytes, dict[str, str]]:
    """A V2 request in the binary tensor extension: the JSON, then `company`'s raw BYTES tensor."""
    inputs = v2_inputs(row, model, company={"parameters": {"binary_data_size": len(company)}})
    without_data = [{k: v for k, v in tensor.items() if not (tensor["name"] == "company" and k == "data")}
                    for tensor in inputs]
    header = json.dumps({"inputs": without_data}).encode()
    return header + company, {"inference-header-content-length": str(len(header))}


def json_error(body: bytes) -> str:
    """orjson's own words for a body it cannot parse."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return str(error)
    raise AssertionError(f"{body!r} parses")


def rest_cases(row: dict[str, Any], model: Any) -> dict[str, tuple[dict[str, Any], int, str]]:
    """Every class of bad REST request: name -> (httpx.request arguments, status, the exact error)."""
    v1, v2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"
    low, high = numeric_ranges(model)["fare"]
    out_of_range = f"is not a finite number in the range the model computes with, [{low:.3g}, {high:.3g}]"
    infinity = json.dumps({"instances": [row | {"fare": 0.0}]}).replace('"fare": 0.0', '"fare": Infinity').encode()
    not_json = b"fare=12.5"
    invalid_utf8, invalid_utf8_headers = binary_request(row, model, struct.pack("<I", 4) + b"\xff\xfe\xfd\xfc")
    overrun, overrun_headers = binary_request(row, model, struct.pack("<I", 1000) + b"abcd")

    def post(path: str, **kwargs: Any) -> dict[str, Any]:
        return {"method": "POST", "url": path, **kwargs}

    return {
        # Were 500s: what decoding raised escaped as an internal error.
        "INT32 value out of range": (
            post(v2, json={"inputs": v2_inputs(row, model, fare={"datatype": "INT32", "data": [2**40]})}), 400,
            "input 'fare' (INT32): Python integer 1099511627776 out of bounds for int32"),
        "INT64 value out of range": (
            post(v2, json={"inputs": v2_inputs(row, model, fare={"datatype": "INT64", "data": [2**70]})}), 400,
            "input 'fare' (INT64): Python int too large to convert to C long"),
        "non-ASCII digit in Inference-Header-Content-Length": (
            post(v2, content=json.dumps({"inputs": v2_inputs(row, model)}).encode(),
                 headers={"inference-header-content-length": "\u00b2".encode("latin-1")}), 400,
            "inference-header-content-length: '\u00b2' is not a length in bytes"),
        "binary BYTES tensor that is not UTF-8": (
            post(v2, content=invalid_utf8, headers=invalid_utf8_headers), 400,
            "not a V2 inference request (Failed to encode \"b'\\xff\\xfe\\xfd\\xfc'\" using UTF-8. Please use "
            f"binary_data=True, if you want to pass a byte array.; {EXPECTED})"),
        "binary BYTES length prefix past the end": (
            post(v2, content=overrun, headers=overrun_headers), 400,
            "not a V2 inference request (unpack_from requires a buffer of at least 1004 bytes for unpacking 1000 "
            f"bytes at offset 4 (actual buffer size is 8); {EXPECTED})"),
        # Were 200s with a null score: infinite and out-of-range numbers.
        "V1 number beyond float32": (
            post(v1, json={"instances": [row | {"fare": 1e308}]}), 400,
            f"feature 'fare', row 0: 1e+308 {out_of_range}"),
        "V1 'inf' text": (
            post(v1, json={"instances": [row | {"fare": "inf"}]}), 400,
            f"feature 'fare', row 0: 'inf' {out_of_range}"),
        "V1 JSON Infinity": (
            post(v1, content=infinity, headers={"content-type": "application/json"}), 400,
            f"Unrecognized request format: {json_error(infinity)}"),
        "V2 FP32 number beyond float32": (
            post(v2, json={"inputs": v2_inputs(row, model, fare={"datatype": "FP32", "data": [1e308]})}), 400,
            "input 'fare' (FP32), row 0: infinite, or too large for FP32; send a finite number (NaN for missing)"),
        "V2 FP64 'inf' text": (
            post(v2, json={"inputs": v2_inputs(row, model, fare={"data": ["inf"]})}), 400,
            "input 'fare' (FP64), row 0: infinite, or too large for FP64; send a finite number (NaN for missing)"),
        # Were answered with the fallback and counted as model errors: input-shape errors.
        "V1 list where a number belongs": (
            post(v1, json={"instances": [row | {"fare": [1, 2]}]}), 400,
            "feature 'fare', row 0: expected a number (or null), got a list [1, 2]"),
        "V1 object where a number belongs": (
            post(v1, json={"instances": [row | {"fare": {"a": 1}}]}), 400,
            "feature 'fare', row 0: expected a number (or null), got an object {'a': 1}"),
        "V1 list where a category belongs": (
            post(v1, json={"instances": [row | {"company": ["Flash Cab"]}]}), 400,
            "feature 'company', row 0: expected a category (text or a whole number, or null), got a list "
            "['Flash Cab']"),
        "V2 nested data": (
            post(v2, json={"inputs": v2_inputs(row, model, fare={"data": [[1.0, 2.0]]})}), 400,
            "input 'fare' (FP64): cannot reshape array of size 2 into shape (1,)"),
        # Not JSON at all, whatever it is declared as.
        "V1 body that is not JSON": (
            post(v1, content=not_json, headers={"content-type": "application/x-www-form-urlencoded"}), 400,
            f"the body is not JSON (Content-Type: application/x-www-form-urlencoded): {json_error(not_json)}"),
        # Were 501s: what is not served is not found.
        ":explain": (post(f"/v1/models/{NAME}:explain", json={"instances": [row]}), 404,
                     "model 'chicago_taxi' has no explainer: only :predict is served"),
        "versioned V2 infer": (post(f"/v2/models/{NAME}/versions/1/infer", json={"inputs": v2_inputs(row, model)}),
                               404, "model versions are not served: send to /v2/models/chicago_taxi/infer"),
        "versioned V2 metadata": ({"method": "GET", "url": f"/v2/models/{NAME}/versions/1"}, 404,
                                  "model versions are not served: ask /v2/models/chicago_taxi"),
    }


CASE_NAMES = [
    "INT32 value out of range", "INT64 value out of range", "non-ASCII digit in Inference-Header-Content-Length",
    "binary BYTES tensor that is not UTF-8", "binary BYTES length prefix past the end", "V1 number beyond float32",
    "V1 'inf' text", "V1 JSON Infinity", "V2 FP32 number beyond float32", "V2 FP64 'inf' text",
    "V1 list where a number belongs", "V1 object where a number belongs", "V1 list where a category belongs",
    "V2 nested data", "V1 body that is not JSON", ":explain", "versioned V2 infer", "versioned V2 metadata",
]


def test_the_case_list_names_every_case(row, model) -> None:
    assert CASE_NAMES == list(rest_cases(row, model))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_a_bad_rest_request_is_a_4xx_with_its_reason(server, row, model, case) -> None:
    request, status, error = rest_cases(row, model)[case]
    response = httpx.request(**request | {"url": server.url + request["url"]})
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert DEGRADED_HEADER not in response.headers


def grpc_request(row: dict[str, Any], model: Any, raw: dict[str, bytes] | None = None,
                 **changed: pb.ModelInferRequest.InferInputTensor) -> pb.ModelInferRequest:
    """The row as gRPC tensors (contents, or `raw` contents for every tensor when given), some replaced."""
    numeric = model.preprocessing.numeric
    tensors, raw_contents = [], []
    for name in numeric + model.preprocessing.categorical:
        datatype = "FP64" if name in numeric else "BYTES"
        value = row[name] if name in numeric else str(row[name]).encode()
        if raw is not None:
            tensors.append(pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=[1]))
            default = struct.pack("<d", value) if name in numeric else struct.pack("<I", len(value)) + value
            raw_contents.append(raw.get(name, default))
            continue
        contents = pb.InferTensorContents(fp64_contents=[value]) if name in numeric else \
            pb.InferTensorContents(bytes_contents=[value])
        tensors.append(changed.get(name) or pb.ModelInferRequest.InferInputTensor(
            name=name, datatype=datatype, shape=[1], contents=contents))
    return pb.ModelInferRequest(model_name=NAME, inputs=tensors, raw_input_contents=raw_contents)


def grpc_cases(row: dict[str, Any], model: Any) -> dict[str, tuple[pb.ModelInferRequest, str]]:
    tensor, contents = pb.ModelInferRequest.InferInputTensor, pb.InferTensorContents
    low, high = numeric_ranges(model)["fare"]
    return {
        "FP32 infinity": (
            grpc_request(row, model, fare=tensor(name="fare", datatype="FP32", shape=[1],
                                                 contents=contents(fp32_contents=[math.inf]))),
            "input 'fare' (FP32), row 0: infinite, or too large for FP32; send a finite number (NaN for missing)"),
        "FP64 beyond float32": (
            grpc_request(row, model, fare=tensor(name="fare", datatype="FP64", shape=[1],
                                                 contents=contents(fp64_contents=[1e308]))),
            f"feature 'fare', row 0: 1e+308 is not a finite number in the range the model computes with, "
            f"[{low:.3g}, {high:.3g}]"),
        "BYTES that are not UTF-8": (
            grpc_request(row, model, company=tensor(name="company", datatype="BYTES", shape=[1],
                                                    contents=contents(bytes_contents=[b"\xff\xfe"]))),
            "input 'company' (BYTES), row 0: not UTF-8 text (invalid start byte at byte 0)"),
        "raw BYTES length prefix past the end": (
            grpc_request(row, model, raw={"company": struct.pack("<I", 1000) + b"ab"}),
            "input 'company' (BYTES): unpack_from requires a buffer of at least 1004 bytes for unpacking 1000 bytes "
            "at offset 4 (actual buffer size is 6)"),
        "raw BYTES that are not UTF-8": (
            grpc_request(row, model, raw={"company": struct.pack("<I", 2) + b"\xff\xfe"}),
            "input 'company' (BYTES), row 0: not UTF-8 text (invalid start byte at byte 0)"),
        "raw FP64 of 5 bytes": (
            grpc_request(row, model, raw={"fare": b"\x00" * 5}),
            "input 'fare' (FP64): buffer size must be a multiple of element size"),
        "raw FP64 infinity": (
            grpc_request(row, model, raw={"fare": struct.pack("<d", math.inf)}),
            "input 'fare' (FP64), row 0: infinite, or too large for FP64; send a finite number (NaN for missing)"),
        "a [1, 2] tensor": (
            grpc_request(row, model, fare=tensor(name="fare", datatype="FP64", shape=[1, 2],
                                                 contents=contents(fp64_contents=[1.0, 2.0]))),
            "input 'fare': expected shape [N] or [N, 1], got [1, 2]"),
    }


@pytest.mark.parametrize("case", ["FP32 infinity", "FP64 beyond float32", "BYTES that are not UTF-8",
                                  "raw BYTES length prefix past the end", "raw BYTES that are not UTF-8",
                                  "raw FP64 of 5 bytes", "raw FP64 infinity", "a [1, 2] tensor"])
def test_a_bad_grpc_request_is_invalid_argument_with_its_reason(server, row, model, case) -> None:
    request, details = grpc_cases(row, model)[case]
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)


def test_nan_and_null_still_mean_missing(server, row, model) -> None:
    v1 = httpx.post(f"{server.url}/v1/models/{NAME}:predict", json={"instances": [row | {"fare": None}]})
    rest = httpx.post(f"{server.url}/v2/models/{NAME}/infer",
                      json={"inputs": v2_inputs(row, model, fare={"data": [None]})})
    with grpc.insecure_channel(server.grpc_target) as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(row, model, raw={
            "fare": struct.pack("<d", math.nan)}), timeout=30)
    [score] = v1.json()["predictions"]
    assert v1.status_code == rest.status_code == 200 and 0 < score < 1
    assert rest.json()["outputs"][0]["data"] == pytest.approx([score])
    assert InferResponse.from_grpc(answer).outputs[0].as_numpy().tolist() == pytest.approx([score])


def test_a_v1_body_is_json_whatever_its_content_type(server, row) -> None:
    body = json.dumps({"instances": [row]}).encode()
    declared = httpx.post(f"{server.url}/v1/models/{NAME}:predict", content=body,
                          headers={"content-type": "application/json"})
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        response = httpx.post(f"{server.url}/v1/models/{NAME}:predict", content=body, headers=headers)
        assert (response.status_code, response.json()) == (200, declared.json()), content_type


def test_v2_model_metadata_lists_the_inputs_and_output_a_request_is_built_from(server, row, model) -> None:
    metadata = httpx.get(f"{server.url}/v2/models/{NAME}").json()
    numeric, categorical = model.preprocessing.numeric, model.preprocessing.categorical
    assert metadata == {
        "name": NAME, "versions": None, "platform": "",
        "inputs": [{"name": name, "datatype": "FP64", "shape": [-1]} for name in numeric]
        + [{"name": name, "datatype": "BYTES", "shape": [-1]} for name in categorical],
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
    }
    inputs = [{"name": tensor["name"], "datatype": tensor["datatype"], "shape": [1],
               "data": [row[tensor["name"]] if tensor["datatype"] == "FP64" else str(row[tensor["name"]])]}
              for tensor in metadata["inputs"]]
    built = httpx.post(f"{server.url}/v2/models/{NAME}/infer", json={"inputs": inputs})
    v1 = httpx.post(f"{server.url}/v1/models/{NAME}:predict", json={"instances": [row]})
    assert built.status_code == 200 and built.json()["outputs"][0]["data"] == pytest.approx(v1.json()["predictions"])


def test_a_bad_request_is_one_info_line_in_the_servers_log(server, row) -> None:
    marker = 271828.5
    response = httpx.post(f"{server.url}/v1/models/{NAME}:predict", json={"instances": [row | {"fare": [marker]}]})
    assert response.status_code == 400
    deadline = time.monotonic() + 10
    while not (lines := [line for line in server.log_path.read_text().splitlines() if str(marker) in line]):
        assert time.monotonic() < deadline, "the refusal was not logged"
        time.sleep(0.05)
    assert len(lines) == 1
    assert re.fullmatch(r"\S+ \S+ INFO kserve: refused a request: feature 'fare', row 0: expected a number \(or "
                        r"null\), got a list \[271828\.5\]", lines[0]), lines[0]
    text = server.log_path.read_text()
    assert "Traceback" not in text and " ERROR " not in text


def test_a_mixed_load_of_good_and_bad_requests_gets_no_5xx(server, row, model) -> None:
    """2,000 requests, 8 at a time: a third good (V1 and V2), the rest every bad class in turn, shuffled. Each gets
    its own status; none is a 5xx, and none counts as a model error."""
    cases = rest_cases(row, model)
    cases["good V1"] = ({"method": "POST", "url": f"/v1/models/{NAME}:predict", "json": {"instances": [row]}}, 200, "")
    cases["good V2"] = ({"method": "POST", "url": f"/v2/models/{NAME}/infer",
                         "json": {"inputs": v2_inputs(row, model)}}, 200, "")
    names = [name for name in cases for _ in range(3 if name.startswith("good") else 1)]
    plan = random.Random(29).choices(names, k=2000)

    async def run() -> collections.Counter:
        statuses: collections.Counter = collections.Counter()
        queue = iter(plan)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            async def worker() -> None:
                for name in queue:
                    request, _, _ = cases[name]
                    response = await client.request(**request)
                    statuses[(name, response.status_code)] += 1
            await asyncio.gather(*(worker() for _ in range(8)))
        return statuses

    statuses = asyncio.run(run())
    assert sum(statuses.values()) == 2000
    assert {(name, status) for name, status in statuses} == {(name, cases[name][1]) for name in set(plan)}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'reason="model-error"' not in metrics
    server.check_alive("after the mixed load")


def test_a_score_that_is_not_finite_is_a_model_failure_never_answered_cached_or_logged(
        taxi_model, row, tmp_path) -> None:
    model = load_model(taxi_model)
    model.module.forward = lambda numeric, categorical: torch.full((len(numeric),), math.nan)
    cache = LocalCache(100, 60)
    with PredictionLogger(PredictionLogConfig(tmp_path / "predictions.jsonl", inference_service=NAME)) as log:
        predictor = SlipwayPredictor(NAME, model, PredictorSettings(fallback_score=0.25), log, cache=cache)
        headers: dict[str, str] = {}
        answer = predictor.predict({"instances": [row, row | {"fare": None}]}, {"x-request-id": "nan-1"}, headers)
    assert answer == {"predictions": [0.25, 0.25]} and headers == {DEGRADED_HEADER: "model-error"}
    assert len(cache) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"the prediction log holds a bare {constant}")

    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    events = [json.loads(line, parse_constant=refuse) for line in lines]
    assert [event["data"] for event in events][1] == {"predictions": [0.25, 0.25]}


def test_a_second_server_on_a_busy_grpc_port_is_refused_in_one_line(server, taxi_model) -> None:
    result = subprocess.run([SLIPWAY, "serve", "--model", str(taxi_model), "--http-port", str(free_port()),
                             "--grpc-port", str(server.grpc_port)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"Error: --grpc-port {server.grpc_port} {BUSY}\n"


def test_a_second_server_on_a_busy_http_port_is_refused_in_one_line(server, taxi_model) -> None:
    result = subprocess.run([SLIPWAY, "serve", "--model", str(taxi_model), "--http-port", str(server.http_port),
                             "--grpc-port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"Error: --http-port {server.http_port} {BUSY}\n"


def test_one_port_for_both_is_refused_before_anything_loads(tmp_path) -> None:
    port = free_port()
    result = subprocess.run([SLIPWAY, "serve", "--model", str(tmp_path / "no-model-here"), "--http-port", str(port),
                             "--grpc-port", str(port)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"Error: --http-port and --grpc-port are both {port}: REST and gRPC each need a port of their own\n")


def test_the_grpc_port_is_not_shared_even_with_a_server_that_asks_to_share_it(server) -> None:
    """grpcio listens with SO_REUSEPORT by default: such a server joined the port before, splitting its traffic."""
    sharing = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    with pytest.raises(RuntimeError, match="Failed to bind"):
        sharing.add_insecure_port(f"[::]:{server.grpc_port}")


def test_the_grpc_server_refuses_a_port_held_by_one_that_shares(tmp_path) -> None:
    """The bind itself is the guarantee, for a port taken after the check at start-up."""

    async def start_on_a_held_port() -> int:
        holder = grpc.aio.server()
        port = holder.add_insecure_port("[::]:0")
        await holder.start()
        try:
            limits = {"grpc_max_send_message_length": 2**20, "grpc_max_receive_message_length": 2**20}
            await ExclusiveGRPCServer(port, None, None, kwargs=limits).start(max_workers=1)
        finally:
            await holder.stop(None)
        return port

    with pytest.raises(PortError, match=rf"^--grpc-port \d+ {re.escape(BUSY)}$"):
        asyncio.run(start_on_a_held_port())



def test_the_transformer_owns_its_ports_too(server, tmp_path) -> None:
    transform = [SLIPWAY, "transform", "--predictor-host", server.url, "--features", str(tmp_path / "no-store")]
    busy = subprocess.run([*transform, "--http-port", str(free_port()), "--grpc-port", str(server.grpc_port)],
                          capture_output=True, text=True, timeout=120)
    assert (busy.returncode, busy.stderr) == (1, f"Error: --grpc-port {server.grpc_port} {BUSY}\n")
    port = free_port()
    same = subprocess.run([*transform, "--http-port", str(port), "--grpc-port", str(port)],
                          capture_output=True, text=True, timeout=120)
    assert (same.returncode, same.stderr) == (
        1, f"Error: --http-port and --grpc-port are both {port}: REST and gRPC each need a port of their own\n")


def test_the_drift_service_answers_a_logged_body_it_cannot_read_with_a_400(taxi_splits) -> None:
    """KServe's logger forwards whatever a client sent, refused or not: the drift service must not 500 on it."""
    from fastapi.testclient import TestClient

    from slipway.serving.drift_monitor import DriftMonitor, MonitorConfig
    from slipway.serving.drift_service import drift_app

    client = TestClient(drift_app(DriftMonitor(MonitorConfig(reference=str(taxi_splits[0])))),
                        raise_server_exceptions=False)
    event = {"specversion": "1.0", "id": "logged-1", "source": "http://localhost:8080/", "modelname": NAME,
             "type": "org.kubeflow.serving.inference.request", "datacontenttype": "application/json",
             "data": {"inputs": {"fare": 5}}}
    response = client.post("/", content=json.dumps(event), headers={"content-type": "application/cloudevents+json"})
    assert (response.status_code, response.json()) == (
        400, {"detail": "event logged-1: its data cannot be read ('int' object is not iterable)"})

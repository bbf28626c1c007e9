"""Benchmark: a mixed load of good and malformed requests against a real `slipway serve`: how many of each
status came back, and the latency. The figure that matters is the 5xx count, which must be 0: the canary
analysis counts 5xx as the model's errors, so a client that can cause one can fail a canary (issue 29).

The mix (REST, by weight): good V1 and V2 requests (3 each), and one each of every class of malformed
request issue 29 found: integer tensor values out of their datatype's range, a non-ASCII digit in
Inference-Header-Content-Length, binary BYTES tensors that are not UTF-8 or whose length prefix runs past
the end, numbers beyond float32 (1e308, "inf", JSON Infinity), a list or object where a number belongs, a
body that is not JSON, `:explain` and a versioned V2 path. The same over gRPC: good requests, and
infinities, bytes that are not UTF-8, raw contents of the wrong length, wrong shapes.

Clients: httpx (HTTP/1.1 keep-alive, `--concurrency` requests in flight) and grpc.aio on one channel,
closed loop, on 127.0.0.1, sharing the machine with the server: the latencies are what such a client
sees, not the server's time alone (bench/serving.py measures that with a cheaper client).

    python bench/hostile_load.py [--model DIR --eval-rows EVAL.parquet] [--requests 15000] [--concurrency 8]

Writes bench/results/hostile_load.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pandas as pd
from common import machine, write_results
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from loadgen import distribution

# bench/serving.py (this folder is the script's sys.path[0]), not slipway.serving
from serving import train_model, training_sets, versions
from slipway.components.model_artifact import load_model
from slipway.problem import load_problem
from slipway.serving.deploy import json_instances
from slipway.serving.process import ServerProcess

GOOD_WEIGHT = 3
NO_ANSWER = "no answer"  # counted as an error by the canary analysis, as a 5xx is


def log(message: str) -> None:
    print(f"[hostile_load] {message}", file=sys.stderr, flush=True)


def rest_mix(row: dict[str, Any], numeric: list[str], categorical: list[str], name: str) -> dict[str, dict]:
    """name -> httpx.request arguments, for the good requests and each malformed class."""
    v1, v2 = f"/v1/models/{name}:predict", f"/v2/models/{name}/infer"

    def inputs(**changed: dict) -> list[dict]:
        tensors = [{"name": n, "datatype": "FP64" if n in numeric else "BYTES", "shape": [1],
                    "data": [row[n] if n in numeric else str(row[n])]} for n in numeric + categorical]
        return [tensor | changed.get(tensor["name"], {}) for tensor in tensors]

    def binary(company: bytes) -> dict:
        tensors = [{k: v for k, v in tensor.items() if k != "data"} if tensor["name"] == "company" else tensor
                   for tensor in inputs(company={"parameters": {"binary_data_size": len(company)}})]
        header = json.dumps({"inputs": tensors}).encode()
        return {"method": "POST", "url": v2, "content": header + company,
                "headers": {"inference-header-content-length": str(len(header))}}

    infinity = json.dumps({"instances": [row | {"fare": 0.0}]}).replace('"fare": 0.0', '"fare": Infinity')
    return {
        "good V1": {"method": "POST", "url": v1, "json": {"instances": [row]}},
        "good V2": {"method": "POST", "url": v2, "json": {"inputs": inputs()}},
        "INT32 out of range": {"method": "POST", "url": v2,
                               "json": {"inputs": inputs(fare={"datatype": "INT32", "data": [2**40]})}},
        "INT64 out of range": {"method": "POST", "url": v2,
                               "json": {"inputs": inputs(fare={"datatype": "INT64", "data": [2**70]})}},
        "non-ASCII length header": {"method": "POST", "url": v2, "content": json.dumps({"inputs": inputs()}).encode(),
                                    "headers": {"inference-header-content-length": "\u00b2".encode("latin-1")}},
        "binary BYTES not UTF-8": binary(struct.pack("<I", 4) + b"\xff\xfe\xfd\xfc"),
        "binary BYTES overrun": binary(struct.pack("<I", 1000) + b"abcd"),
        "V1 1e308": {"method": "POST", "url": v1, "json": {"instances": [row | {"fare": 1e308}]}},
        "V1 'inf'": {"method": "POST", "url": v1, "json": {"instances": [row | {"fare": "inf"}]}},
        "V1 Infinity": {"method": "POST", "url": v1, "content": infinity.encode(),
                        "headers": {"content-type": "application/json"}},
        "V2 FP32 1e308": {"method": "POST", "url": v2,
                          "json": {"inputs": inputs(fare={"datatype": "FP32", "data": [1e308]})}},
        "V1 list for a number": {"method": "POST", "url": v1, "json": {"instances": [row | {"fare": [1, 2]}]}},
        "V1 object for a number": {"method": "POST", "url": v1, "json": {"instances": [row | {"fare": {"a": 1}}]}},
        "V1 not JSON": {"method": "POST", "url": v1, "content": b"fare=12.5"},
        ":explain": {"method": "POST", "url": f"/v1/models/{name}:explain", "json": {"instances": [row]}},
        "versioned V2 infer": {"method": "POST", "url": f"/v2/models/{name}/versions/1/infer",
                               "json": {"inputs": inputs()}},
    }


def grpc_mix(row: dict[str, Any], numeric: list[str], categorical: list[str], name: str) -> dict[str, Any]:
    tensor, contents = pb.ModelInferRequest.InferInputTensor, pb.InferTensorContents

    def request(raw: dict[str, bytes] | None = None, **changed: Any) -> pb.ModelInferRequest:
        tensors, raws = [], []
        for n in numeric + categorical:
            datatype, value = ("FP64", row[n]) if n in numeric else ("BYTES", str(row[n]).encode())
            if raw is not None:
                tensors.append(tensor(name=n, datatype=datatype, shape=[1]))
                raws.append(raw.get(n, struct.pack("<d", value) if n in numeric
                                    else struct.pack("<I", len(value)) + value))
            else:
                tensors.append(changed.get(n) or tensor(name=n, datatype=datatype, shape=[1], contents=contents(
                    **{"fp64_contents" if n in numeric else "bytes_contents": [value]})))
        return pb.ModelInferRequest(model_name=name, inputs=tensors, raw_input_contents=raws)

    return {
        "good": request(),
        "good raw": request(raw={}),
        "FP32 infinity": request(fare=tensor(name="fare", datatype="FP32", shape=[1],
                                             contents=contents(fp32_contents=[math.inf]))),
        "BYTES not UTF-8": request(company=tensor(name="company", datatype="BYTES", shape=[1],
                                                  contents=contents(bytes_contents=[b"\xff\xfe"]))),
        "raw BYTES overrun": request(raw={"company": struct.pack("<I", 1000) + b"ab"}),
        "raw FP64 of 5 bytes": request(raw={"fare": b"\x00" * 5}),
        "shape [1, 2]": request(fare=tensor(name="fare", datatype="FP64", shape=[1, 2],
                                            contents=contents(fp64_contents=[1.0, 2.0]))),
    }


def plan(names: list[str], count: int, seed: int) -> list[str]:
    weighted = [name for name in names for _ in range(GOOD_WEIGHT if name.startswith("good") else 1)]
    return random.Random(seed).choices(weighted, k=count)


async def rest_load(url: str, mix: dict[str, dict], order: list[str], concurrency: int) -> dict:
    statuses: collections.Counter = collections.Counter()
    by_case: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    latencies: list[float] = []
    queue = iter(order)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def worker() -> None:
            for name in queue:
                started = time.perf_counter()
                try:
                    status: int | str = (await client.request(**mix[name])).status_code
                except httpx.TransportError:  # the server closed the connection without an answer
                    status = NO_ANSWER
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
                by_case[name][status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(order), "seconds": elapsed, "statuses": dict(sorted(statuses.items(), key=str)),
            "by_case": {name: dict(counter) for name, counter in sorted(by_case.items())},
            "latency_ms": distribution(sorted(latencies))}


async def grpc_load(target: str, mix: dict[str, Any], order: list[str], concurrency: int) -> dict:
    codes: collections.Counter = collections.Counter()
    by_case: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    latencies: list[float] = []
    queue = iter(order)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def worker() -> None:
            for name in queue:
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(mix[name], timeout=30)
                    code = grpc.StatusCode.OK.name
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                latencies.append(time.perf_counter() - started)
                codes[code] += 1
                by_case[name][code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(order), "seconds": elapsed, "codes": dict(sorted(codes.items())),
            "by_case": {name: dict(counter) for name, counter in sorted(by_case.items())},
            "latency_ms": distribution(sorted(latencies))}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model directory (default: train one on the sample)")
    parser.add_argument("--eval-rows", default=None, help="the eval training set the request rows come from "
                                                           "(with --model; default: built from the sample)")
    parser.add_argument("--requests", type=int, default=15_000, help="REST requests (gRPC: a third as many)")
    parser.add_argument("--concurrency", type=int, default=8)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    problem = load_problem()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slipway-bench-hostile-") as tmp:
        workdir = Path(tmp)
        if args.model is None or args.eval_rows is None:
            log("ingesting the sample, joining its Feast features, training a model (3 epochs)")
            train, args.eval_rows, _ = training_sets(problem, workdir)
            args.model = str(train_model(problem, train, args.eval_rows, workdir))
        preprocessing = load_model(Path(args.model)).preprocessing
        numeric, categorical = preprocessing.numeric, preprocessing.categorical
        frame = pd.read_parquet(args.eval_rows)[numeric + categorical].dropna()
        row = json_instances(frame.head(1))[0]
        rest = rest_mix(row, numeric, categorical, problem.name)
        grpc_requests = grpc_mix(row, numeric, categorical, problem.name)
        with ServerProcess(["serve", "--model", args.model, "--name", problem.name], problem.name,
                           workdir / "server") as server:
            log(f"REST: {args.requests:,} requests, {args.concurrency} in flight")
            rest_result = asyncio.run(rest_load(server.url, rest, plan(list(rest), args.requests, 29),
                                                args.concurrency))
            log(f"gRPC: {args.requests // 3:,} requests, {args.concurrency} in flight")
            grpc_result = asyncio.run(grpc_load(server.grpc_target, grpc_requests,
                                                plan(list(grpc_requests), args.requests // 3, 30), args.concurrency))
            server.check_alive("after the load")
            log_text = server.log_path.read_text()
        results = {"machine": machine(), "versions": versions(), "concurrency": args.concurrency,
                   "rest": rest_result, "grpc": grpc_result, "wall_s": time.monotonic() - started,
                   "server_log": {"tracebacks": log_text.count("Traceback"),
                                  "error_lines": sum(" ERROR " in line for line in log_text.splitlines()),
                                  "refusal_lines": log_text.count("INFO kserve: refused a request: ")}}
    write_results("hostile_load", results, markdown(results))


def markdown(results: dict) -> str:
    rest, grpc_result, m = results["rest"], results["grpc"], results["machine"]
    answered = {int(status): count for status, count in rest["statuses"].items() if status != NO_ANSWER}
    four = sum(count for status, count in answered.items() if 400 <= status < 500)
    five = sum(count for status, count in answered.items() if status >= 500)
    lines = [
        "# Hostile load: good and malformed requests against `slipway serve`", "",
        f"{m['cpu']}, {m['cores']} cores; server, clients and everything else on one machine. "
        f"{results['concurrency']} requests in flight, closed loop, latency as the client sees it.", "",
        "| protocol | requests | 2xx / OK | 4xx / INVALID_ARGUMENT, NOT_FOUND | 5xx / INTERNAL | no answer | req/s "
        "| p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| REST (V1, V2) | {rest['requests']:,} | {answered.get(200, 0):,} | {four:,} | {five} | "
        f"{rest['statuses'].get(NO_ANSWER, 0)} | "
        f"{rest['requests'] / rest['seconds']:,.0f} | {rest['latency_ms']['p50']:.2f} | "
        f"{rest['latency_ms']['p99']:.2f} |",
        f"| gRPC (V2) | {grpc_result['requests']:,} | {grpc_result['codes'].get('OK', 0):,} | "
        f"{grpc_result['codes'].get('INVALID_ARGUMENT', 0) + grpc_result['codes'].get('NOT_FOUND', 0):,} | "
        f"{grpc_result['codes'].get('INTERNAL', 0) + grpc_result['codes'].get('UNKNOWN', 0)} | "
        f"{grpc_result['codes'].get('UNAVAILABLE', 0)} | "
        f"{grpc_result['requests'] / grpc_result['seconds']:,.0f} | {grpc_result['latency_ms']['p50']:.2f} | "
        f"{grpc_result['latency_ms']['p99']:.2f} |",
        "", "Statuses by request class (REST):", "",
        *(f"- {name}: {', '.join(f'{status}: {count:,}' for status, count in counts.items())}"
          for name, counts in rest["by_case"].items()),
        "", "Codes by request class (gRPC):", "",
        *(f"- {name}: {', '.join(f'{code}: {count:,}' for code, count in counts.items())}"
          for name, counts in grpc_result["by_case"].items()),
        "", f"Server log: {results['server_log']['refusal_lines']:,} one-line refusals at INFO, "
        f"{results['server_log']['tracebacks']} tracebacks, {results['server_log']['error_lines']} ERROR lines.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

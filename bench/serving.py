"""Benchmark: the served model under load: V1 REST, V2 REST and V2 gRPC, closed and open loop, and a soak,
with and without the Feast transformer.

Real server processes (KServe's ModelServer, 1 worker each) serve the taxi model on free loopback
ports; the load generator (bench/loadgen.py: raw asyncio HTTP/1.1 streams, grpc.aio with pre-built
protobufs) runs in its own process. Nothing is pinned: on this 2-core machine the servers and the
load generator share both cores, and each run reports the CPU (in cores) that the servers, the load
generator and the whole machine used. Request rows are the real eval split of the taxi sample,
encoded once before any clock runs. Three setups (`--setups`), each measured in full in turn:

- direct: `slipway serve` alone; requests carry every model feature (the caller joined them).
- in-process features: `slipway serve --features`; requests carry the trip and its entity keys,
  and the predictor looks them up in the online store (embedded SQLite, materialized as the
  pipeline does) before scoring.
- transformer: `slipway transform` in front of `slipway serve`, as KServe's transformer
  container would be: the same requests, one more process and one more hop (V1/V2 REST).

Per setup:

- Closed loop: `--concurrency` requests in flight back to back for `--duration` s, for each
  protocol at batch 1 and 32: requests/s, rows/s, latency p50/p99.
- Open loop: sends scheduled on the clock at `--rate` requests/s for `--duration` s (V2 REST batch
  1; direct also V1 REST), latency measured from the scheduled send time, so waiting counts (no
  coordinated omission); non-2xx, late sends and failures are counted. Goal: p99 <= 5 ms at 500 RPS
  for V2 REST batch 1.
- Direct only: a soak (`--soak-seconds` s open loop at `--rate` on V2 REST, batch 1; goal: no 5xx)
  and the capacity profile (sequential V2 REST requests on one connection at batch 1, 8, 32 and 128,
  written for `slipway estimate --profile bench/results/serving_profile.json`).

Each closed- and open-loop configuration runs `--repeats` times (the configurations of a setup take
turns, so that a burst of other work on the machine does not skew one of them); the figures are the
median, min and max over the repeats.

    python bench/serving.py [--model DIR|URI] [--setups direct transformer] [--duration 10] \\
        [--repeats 3] [--rate 500] [--soak-seconds 60] [--concurrency 8]
    python bench/serving.py --quick        # a smoke run of a few minutes: short everything

A full run takes about 17 minutes (60 runs of 11 s, the soak, the profile, the training sets,
training and start-ups).

Without --model, a model is trained on the sample first (3 epochs, a few seconds). Writes
bench/results/serving.json and .md (median and spread, and the machine) and
bench/results/serving_profile.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import importlib.metadata
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from common import RESULTS, machine, summary, write_results
from loadgen import write_bodies

from slipway.capacity import DEFAULT_BATCH_SIZES, BatchLatency, LatencyProfile, save_profile
from slipway.components.preprocessing import model_features
from slipway.problem import Problem, load_problem
from slipway.serving.process import ServerProcess

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / "loadgen.py"

PROTOCOLS = ("v1-rest", "v2-rest", "v2-grpc")
CLOSED_BATCHES = (1, 32)
OPEN_LOOP = (("v2-rest", 1), ("v1-rest", 1))
P99_GOAL_MS = 5.0
OPEN_LOOP_CONNECTIONS = 32
LATE_MS = 2.0  # an open-loop send that starts this long after its schedule is late (timers have ~1 ms slop)
MAX_DISTINCT_REQUESTS = 512
# REFERENCE.md, KServe 0.21 with a small torch MLP, 1 worker, 2 cores shared with the load generator.
REFERENCE = {
    ("closed", "v1-rest", 1): "1.87k RPS", ("closed", "v2-rest", 1): "1.4k RPS",
    ("closed", "v1-rest", 32): "49k rows/s", ("closed", "v2-rest", 32): "35k rows/s",
    ("open", "v1-rest", 1): "p99 4.3 ms", ("open", "v2-rest", 1): "p99 5.1 ms",
}
QUICK = {"duration": 1.0, "warmup": 0.3, "repeats": 1, "soak_seconds": 3.0, "profile_calls": 30}
FULL = {"duration": 10.0, "warmup": 1.0, "repeats": 3, "soak_seconds": 60.0, "profile_calls": 200}


def log(message: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the model, the rows and the requests --------------------------------------------------


def training_sets(problem: Problem, directory: Path) -> tuple[Path, Path, Path]:
    """The sample's training sets, as the pipeline trains on (each trip with its point-in-time Feast features),
    and the feature repo they came from, materialized up to the snapshot rows after the last trip, as the
    pipeline's materialize step leaves it: (train, eval, feature repo)."""
    from slipway.components.feature_store import local_store, materialize, write_training_sets
    from slipway.components.ingestion import ingest_source
    from slipway.sample_data import fetch_sample

    raw = directory / "raw" / "train.parquet", directory / "raw" / "eval.parquet"
    ingest_source(str(fetch_sample()["data.csv"]), problem, *raw)
    repo = directory / "feature_repo"
    store = local_store(raw, problem, repo)
    train, evaluation = write_training_sets(store, problem, raw, directory)
    last_trip = max(pd.read_parquet(path)[problem.timestamp.column].max() for path in raw)
    materialize(store, (last_trip + pd.Timedelta(hours=1)).to_pydatetime())
    return train, evaluation, repo


def train_model(problem: Problem, train: Path, evaluation: Path, directory: Path) -> Path:
    from slipway.components.train_config import TrainConfig
    from slipway.components.trainer import train as train_mlp

    train_mlp(train, evaluation, problem, TrainConfig(epochs=3), directory / "model", directory / "checkpoints")
    return directory / "model"


def json_value(value: Any) -> Any:
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


class Requests:
    """Pre-encoded request bodies for each protocol and batch size, from consecutive real eval rows."""

    def __init__(self, frame: pd.DataFrame, features: tuple[list[str], list[str]], name: str) -> None:
        self.name = name
        self.numeric, self.categorical = features
        self.columns = {f: [json_value(v) for v in frame[f].tolist()] for f in self.numeric + self.categorical}
        self.rows = len(frame)

    def batches(self, batch: int) -> list[list[int]]:
        count = max(1, min(MAX_DISTINCT_REQUESTS, self.rows // batch))
        return [[(i * batch + j) % self.rows for j in range(batch)] for i in range(count)]

    def v1(self, rows: list[int]) -> bytes:
        instances = [{f: values[r] for f, values in self.columns.items()} for r in rows]
        return json.dumps({"instances": instances}, separators=(",", ":")).encode()

    def v2(self, rows: list[int], request_id: str) -> bytes:
        inputs = [{"name": f, "datatype": "FP64", "shape": [len(rows)], "data": [self.columns[f][r] for r in rows]}
                  for f in self.numeric]
        inputs += [{"name": f, "datatype": "BYTES", "shape": [len(rows)],
                    "data": ["" if self.columns[f][r] is None else str(self.columns[f][r]) for r in rows]}
                   for f in self.categorical]
        return json.dumps({"id": request_id, "inputs": inputs}, separators=(",", ":")).encode()

    def grpc(self, rows: list[int], request_id: str) -> Any:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        inputs = [pb.ModelInferRequest.InferInputTensor(
            name=f, datatype="FP64", shape=[len(rows)],
            contents=pb.InferTensorContents(fp64_contents=[math.nan if self.columns[f][r] is None
                                                           else float(self.columns[f][r]) for r in rows]))
            for f in self.numeric]
        inputs += [pb.ModelInferRequest.InferInputTensor(
            name=f, datatype="BYTES", shape=[len(rows)],
            contents=pb.InferTensorContents(bytes_contents=[b"" if self.columns[f][r] is None
                                                            else str(self.columns[f][r]).encode() for r in rows]))
            for f in self.categorical]
        return pb.ModelInferRequest(model_name=self.name, id=request_id, inputs=inputs)

    def encoded(self, protocol: str, batch: int) -> list[bytes]:
        batches = self.batches(batch)
        if protocol == "v1-rest":
            return [self.v1(rows) for rows in batches]
        if protocol == "v2-rest":
            return [self.v2(rows, f"bench-{batch}-{i}") for i, rows in enumerate(batches)]
        return [self.grpc(rows, f"bench-{batch}-{i}").SerializeToString() for i, rows in enumerate(batches)]

    def write(self, protocol: str, batch: int, directory: Path) -> Path:
        path = directory / f"{protocol}-b{batch}.bin"
        if not path.exists():
            write_bodies(path, self.encoded(protocol, batch))
        return path


# --- the servers ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """How the features reach the model: what the client sends, and which processes answer it."""

    name: str
    online: bool  # the client sends the trip and its entity keys; the online store supplies the rest
    description: str


SETUPS = (
    Setup("direct", False, "`slipway serve` alone; each request carries every model feature (the trip and its "
                           "18 Feast features, joined by the caller)"),
    Setup("in-process features", True, "`slipway serve --features`: the predictor looks the request's entity keys "
                                       "up in the online store (embedded SQLite) before scoring"),
    Setup("transformer", True, "`slipway transform` (the Feast transformer, SQLite online store) in its own process, "
                               "calling `slipway serve` over V1/V2 REST: three processes on the machine's cores"),
)
OPEN_LOOP = {"direct": (("v2-rest", 1), ("v1-rest", 1)), "in-process features": (("v2-rest", 1),),
             "transformer": (("v2-rest", 1),)}


@dataclasses.dataclass
class Target:
    """What the load generator calls (`entry`), and every server process whose CPU counts."""

    entry: ServerProcess
    servers: list[ServerProcess]

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.entry.http_port}"

    @property
    def grpc(self) -> str:
        return self.entry.grpc_target

    @property
    def pids(self) -> list[int]:
        return [server.process.pid for server in self.servers]

    def check_alive(self, when: str) -> None:
        for server in self.servers:
            server.check_alive(when)


@contextlib.contextmanager
def serving(setup: Setup, model: str, name: str, feature_repo: Path, directory: Path) -> Iterator[Target]:
    serve = ["serve", "--model", model, "--name", name]
    with contextlib.ExitStack() as stack:
        log(f"starting the {setup.name} setup")
        if setup.name == "direct":
            server = stack.enter_context(ServerProcess(serve, name, directory / "direct"))
            yield Target(server, [server])
        elif setup.name == "in-process features":
            server = stack.enter_context(ServerProcess([*serve, "--features", str(feature_repo)], name,
                                                       directory / "in-process"))
            yield Target(server, [server])
        else:
            predictor = stack.enter_context(ServerProcess(serve, name, directory / "predictor"))
            transformer = stack.enter_context(ServerProcess(
                ["transform", "--model-name", name, "--predictor-host", f"127.0.0.1:{predictor.http_port}",
                 "--features", str(feature_repo)], name, directory / "transformer"))
            yield Target(transformer, [transformer, predictor])


def check_answers(server: Target, requests: Requests, batch: int) -> None:
    """One request per protocol, before any load: 200, one score per row, in [0, 1], not the degraded fallback."""
    rows = requests.batches(batch)[0]
    host, port = server.http.rsplit(":", 1)
    for protocol, path, body in (("v1-rest", f"/v1/models/{server.name}:predict", requests.v1(rows)),
                                 ("v2-rest", f"/v2/models/{server.name}/infer", requests.v2(rows, "check"))):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
            degraded = response.getheader("x-slipway-degraded")
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"{protocol} batch {batch}: {path} answered {response.status}: {text[:500]}")
        answer = json.loads(text)
        scores = answer["predictions"] if protocol == "v1-rest" else answer["outputs"][0]["data"]
        degraded = degraded or (answer.get("parameters") or {}).get("degraded")
        check_scores(protocol, batch, scores, degraded)

    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(requests.grpc(rows, "check"), timeout=30)
    output = response.outputs[0]
    if response.raw_output_contents:
        import numpy as np

        scores = np.frombuffer(response.raw_output_contents[0], dtype="<f8").tolist()
    else:
        scores = list(output.contents.fp64_contents)
    degraded = response.parameters["degraded"].string_param if "degraded" in response.parameters else None
    check_scores("v2-grpc", batch, scores, degraded)


def check_scores(protocol: str, batch: int, scores: list[float], degraded: str | None) -> None:
    if len(scores) != batch or not all(0.0 <= s <= 1.0 for s in scores):
        raise RuntimeError(f"{protocol} batch {batch}: expected {batch} probabilities, got {scores[:5]}...")
    if degraded:
        raise RuntimeError(f"{protocol} batch {batch}: the server answered its fallback score ({degraded}): "
                           "the benchmark would time the fallback, not the model")


# --- runs ----------------------------------------------------------------------------------


def loadgen(server: Target, protocol: str, bodies: list[str], options: list[str], timeout_s: float) -> dict:
    """Runs bench/loadgen.py in its own process and returns its JSON result."""
    if protocol == "v2-grpc":
        target = ["--target", server.grpc, "--protocol", "grpc"]
    else:
        path = f"/v1/models/{server.name}:predict" if protocol == "v1-rest" else f"/v2/models/{server.name}/infer"
        target = ["--target", server.http, "--protocol", "http", "--path", path]
    command = [sys.executable, str(LOADGEN), *target, *(a for b in bodies for a in ("--bodies", b)), *options,
               *(a for pid in server.pids for a in ("--watch-pid", str(pid)))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the load generator did not finish within {timeout_s:.0f} s: {' '.join(command)}") from None
    server.check_alive("during the run")
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def closed_run(server: Target, protocol: str, batch: int, bodies: Path, args: argparse.Namespace) -> dict:
    options = ["--mode", "closed", "--concurrency", str(args.concurrency), "--duration", str(args.duration),
               "--warmup", str(args.warmup)]
    return loadgen(server, protocol, [str(bodies)], options, args.warmup + args.duration + 120)


def open_run(server: Target, protocol: str, bodies: Path, rate: float, duration: float, warmup: float) -> dict:
    options = ["--mode", "open", "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
               "--connections", str(OPEN_LOOP_CONNECTIONS), "--late-ms", str(LATE_MS)]
    return loadgen(server, protocol, [str(bodies)], options, warmup + duration + 120)


def closed_summary(setup: str, protocol: str, batch: int, runs: list[dict]) -> dict:
    return {
        "setup": setup, "protocol": protocol, "batch": batch, "runs": runs,
        "rps": summary([r["rps"] for r in runs]), "rows_per_second": summary([r["rps"] * batch for r in runs]),
        "p50_ms": summary([r["latency_ms"]["p50"] for r in runs]),
        "p99_ms": summary([r["latency_ms"]["p99"] for r in runs]),
        "not_ok": sum(r["not_ok"] for r in runs), "failed": sum(r["failed"] for r in runs),
        "server_cores": median_of(runs, "server"), "loadgen_cores": median_of(runs, "loadgen"),
        "machine_cores": median_of(runs, "machine"),
    }


def open_summary(setup: str, protocol: str, batch: int, rate: float, runs: list[dict]) -> dict:
    p99 = summary([r["latency_ms"]["p99"] for r in runs])
    return {
        "setup": setup, "protocol": protocol, "batch": batch, "rate": rate, "runs": runs,
        "achieved_rps": summary([r["rps"] for r in runs]),
        "p50_ms": summary([r["latency_ms"]["p50"] for r in runs]), "p99_ms": p99,
        "max_ms": summary([r["latency_ms"]["max"] for r in runs]),
        "send_lag_p99_ms": summary([r["send_lag_ms"]["p99"] for r in runs]),
        "non_2xx": sum(r["not_ok"] for r in runs), "late": sum(r["late"] for r in runs),
        "failed": sum(r["failed"] for r in runs), "scheduled": sum(r["scheduled"] for r in runs),
        "server_cores": median_of(runs, "server"), "loadgen_cores": median_of(runs, "loadgen"),
        "machine_cores": median_of(runs, "machine"),
        "goal": f"median p99 <= {P99_GOAL_MS:g} ms", "goal_met": p99["median"] <= P99_GOAL_MS,
    }


def median_of(runs: list[dict], who: str) -> float | None:
    values = sorted(r["cpu_cores"][who] for r in runs if r["cpu_cores"].get(who) is not None)
    return values[len(values) // 2] if values else None


def measure_profile(server: Target, files: dict[int, Path], calls: int, m: dict) -> LatencyProfile:
    result = loadgen(server, "v2-rest", [f"{batch}={path}" for batch, path in files.items()],
                     ["--mode", "sequential", "--calls", str(calls)], 120 + calls * len(files))
    batches = []
    for label, stats in result["labels"].items():
        if stats["ok"] != stats["requests"]:
            raise RuntimeError(f"profile batch {label}: {stats['requests'] - stats['ok']} of {stats['requests']} "
                               f"requests failed: {stats['status']}")
        latency = stats["latency_ms"]
        batches.append(BatchLatency(int(label), latency["p50"], latency["p99"]))
    return LatencyProfile(
        device=f"cpu (one slipway serve process, 1 worker, torch 1 thread; {m['cpu']}, {m['cores']} cores shared "
               f"with the load generator)",
        source=f"served V2 REST /v2/models/{server.name}/infer on 127.0.0.1: {calls} sequential requests per batch "
               f"size over one keep-alive HTTP/1.1 connection (HTTP, JSON, preprocessing and the forward pass; no "
               f"batcher); bench/serving.py",
        batches=tuple(batches))


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="DIR|URI", default=None,
                        help="model to serve (as `slipway serve --model`); default: train one on the sample first")
    parser.add_argument("--duration", type=float, default=None,
                        help=f"measured seconds per closed/open-loop run (default {FULL['duration']:g}; "
                             f"--quick {QUICK['duration']:g})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"runs of each configuration (default {FULL['repeats']}; --quick {QUICK['repeats']})")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop and soak rate, requests/s (default 500)")
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help=f"soak length (default {FULL['soak_seconds']:g}; --quick {QUICK['soak_seconds']:g})")
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: requests in flight (default 8)")
    parser.add_argument("--setups", nargs="+", choices=[setup.name for setup in SETUPS], metavar="SETUP",
                        default=[setup.name for setup in SETUPS],
                        help="which to measure: " + "; ".join(f"'{s.name}': {s.description}" for s in SETUPS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (about a minute): short runs, 1 repeat, short soak and profile; explicit "
                             "flags still win")
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.duration <= 0 or args.repeats < 1 or args.rate <= 0 or args.soak_seconds < 0 or args.concurrency < 1:
        parser.error("--duration, --repeats, --rate and --concurrency must be positive, --soak-seconds >= 0")
    return args


def versions() -> dict:
    found = {}
    for package in ("kserve", "torch", "grpcio", "uvicorn", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


def request_features(problem: Problem, setup: Setup) -> tuple[list[str], list[str]]:
    """The (numeric, categorical) columns the client sends: every model feature, or without the store's."""
    from slipway.components.feature_store import joined_columns

    numeric, categorical = model_features(problem)
    if setup.online:
        numeric = [name for name in numeric if name not in set(joined_columns(problem))]
    return numeric, categorical


def run_setup(setup: Setup, target: Target, frame: pd.DataFrame, problem: Problem, workdir: Path,
              args: argparse.Namespace, results: dict[str, Any], m: dict) -> None:
    requests = Requests(frame, request_features(problem, setup), problem.name)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {(p, b): requests.write(p, b, workdir) for p in PROTOCOLS for b in CLOSED_BATCHES}
    for batch in CLOSED_BATCHES:
        check_answers(target, requests, batch)
    log(f"{setup.name}: every protocol answers one probability per row")
    closed: dict[tuple[str, int], list[dict]] = {key: [] for key in files}
    opened: dict[tuple[str, int], list[dict]] = {key: [] for key in OPEN_LOOP[setup.name]}
    for repeat in range(1, args.repeats + 1):
        for (protocol, batch), path in files.items():
            run = closed_run(target, protocol, batch, path, args)
            closed[protocol, batch].append(run)
            log(f"{setup.name} {repeat}/{args.repeats} closed {protocol} batch {batch}: {run['rps']:,.0f} req/s "
                f"({run['rps'] * batch:,.0f} rows/s), p50 {run['latency_ms']['p50']:.2f} ms, "
                f"p99 {run['latency_ms']['p99']:.2f} ms, not ok {run['not_ok']}, failed {run['failed']}"
                f"{cpu_note(run)}")
        for protocol, batch in OPEN_LOOP[setup.name]:
            run = open_run(target, protocol, files[protocol, batch], args.rate, args.duration, args.warmup)
            opened[protocol, batch].append(run)
            log(f"{setup.name} {repeat}/{args.repeats} open {protocol} batch {batch} at {args.rate:g}/s: "
                f"{open_note(run)}{cpu_note(run)}")
    results["closed_loop"] += [closed_summary(setup.name, p, b, runs) for (p, b), runs in closed.items()]
    results["open_loop"] += [open_summary(setup.name, p, b, args.rate, runs) for (p, b), runs in opened.items()]
    if setup.name != "direct":
        return
    if args.soak_seconds > 0:
        log(f"soak: {args.soak_seconds:g} s at {args.rate:g}/s, V2 REST batch 1")
        rss_before = target.entry.rss_mib()
        run = open_run(target, "v2-rest", files["v2-rest", 1], args.rate, args.soak_seconds, 0.0)
        results["soak"] = {
            "protocol": "v2-rest", "batch": 1, "rate": args.rate, "seconds": args.soak_seconds, "run": run,
            "server_errors_5xx": run["server_errors"], "goal": "no 5xx",
            "goal_met": run["server_errors"] == 0 and run["failed"] == 0,
            "server_rss_mib": {"before": rss_before, "after": target.entry.rss_mib()},
        }
        log(f"soak: {open_note(run)}, 5xx {run['server_errors']}")
    log(f"capacity profile: sequential V2 REST, batch sizes {list(DEFAULT_BATCH_SIZES)}, "
        f"{args.profile_calls} calls each")
    profile_files = {b: requests.write("v2-rest", b, workdir) for b in DEFAULT_BATCH_SIZES}
    profile = measure_profile(target, profile_files, args.profile_calls, m)
    for b in profile.batches:
        log(f"profile batch {b.batch_size}: p50 {b.p50_ms:.2f} ms, p99 {b.p99_ms:.2f} ms")
    results["profile"] = profile.to_dict()


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    problem = load_problem()
    m = machine()
    setups = [setup for setup in SETUPS if setup.name in args.setups]
    results: dict[str, Any] = {
        "machine": m, "quick": args.quick, "versions": versions(),
        "setup": (f"`slipway serve` (KServe ModelServer, 1 worker, torch 1 thread), for the transformer setup also "
                  f"`slipway transform`, and one load-generator process (bench/loadgen.py) on 127.0.0.1, none "
                  f"pinned: they share the machine's {m['cores']} cores"),
        "setups": {setup.name: setup.description for setup in setups},
        "duration_s": args.duration, "warmup_s": args.warmup, "repeats": args.repeats, "rate": args.rate,
        "concurrency": args.concurrency, "open_loop_connections": OPEN_LOOP_CONNECTIONS, "late_ms": LATE_MS,
        "closed_loop": [], "open_loop": [],
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slipway-bench-serving-") as tmp:
        workdir = Path(tmp)
        log("ingesting the taxi sample, joining its point-in-time Feast features, materializing the online store")
        train, evaluation, feature_repo = training_sets(problem, workdir)
        if args.model is None:
            log("training a model on the sample (3 epochs)")
            args.model = str(train_model(problem, train, evaluation, workdir))
        results["model"] = args.model if not args.model.startswith(tmp) else "trained on the sample (3 epochs)"
        frame = pd.read_parquet(evaluation)
        log(f"requests from {len(frame):,} eval rows")
        for setup in setups:
            with serving(setup, args.model, problem.name, feature_repo, workdir / "servers") as target:
                run_setup(setup, target, frame, problem, workdir / setup.name.replace(" ", "-"), args, results, m)
    results["wall_s"] = time.monotonic() - started
    RESULTS.mkdir(exist_ok=True)
    if "profile" in results:
        save_profile(LatencyProfile.from_dict(results["profile"]), RESULTS / "serving_profile.json")
    write_results("serving", results, markdown(results))


def open_note(run: dict) -> str:
    latency = run["latency_ms"]
    return (f"{run['rps']:,.0f} req/s answered, p50 {latency.get('p50', math.nan):.2f} ms, "
            f"p99 {latency.get('p99', math.nan):.2f} ms, max {latency.get('max', math.nan):.2f} ms, "
            f"non-2xx {run['not_ok']}, late {run['late']}, failed {run['failed']} of {run['scheduled']}")


def cpu_note(run: dict) -> str:
    cores = run["cpu_cores"]
    if cores.get("server") is None:
        return ""
    return (f"; CPU server {cores['server']:.2f}, loadgen {cores['loadgen']:.2f}, "
            f"machine {cores['machine']:.2f} of {cores['machine_cores']} cores")


# --- report --------------------------------------------------------------------------------


def spread(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def reference(loop: str, r: dict) -> str:
    """REFERENCE.md's figure for the same measurement: only the direct setup is what it measured."""
    return REFERENCE.get((loop, r["protocol"], r["batch"]), "") if r["setup"] == "direct" else ""


def cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Serving throughput and latency", ""]
    if results["quick"]:
        lines += ["**Quick smoke run (`--quick`): short runs, not a measurement.**", ""]
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"Setup: {results['setup']}. Model: {results['model']}. Rows: the taxi eval split (the newest trips' "
        "entity keys were materialized into the online store as the pipeline does). "
        f"{results['repeats']} repeat(s) of {results['duration_s']:g} s (after {results['warmup_s']:g} s warm-up); "
        "median (min–max) over the repeats. CPU columns: cores used during the window (machine = every process, "
        "other people's included).",
        "",
        "How the features reach the model:",
        "",
        *(f"- **{name}**: {description}" for name, description in results["setups"].items()),
        "",
        f"## Closed loop ({results['concurrency']} requests in flight, back to back)",
        "",
        "| setup | protocol | batch | requests/s | rows/s | p50 ms | p99 ms | not ok / failed | CPU servers / "
        "loadgen / machine | REFERENCE.md |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["closed_loop"]:
        lines.append(
            f"| {r['setup']} | {r['protocol']} | {r['batch']} | {spread(r['rps'])} | {spread(r['rows_per_second'])} | "
            f"{spread(r['p50_ms'], 2)} | {spread(r['p99_ms'], 2)} | {r['not_ok']} / {r['failed']} | "
            f"{cores(r['server_cores'])} / {cores(r['loadgen_cores'])} / {cores(r['machine_cores'])} | "
            f"{reference('closed', r)} |")
    lines += [
        "",
        f"## Open loop (sends on the clock over {results['open_loop_connections']} keep-alive connections; latency "
        "from the scheduled send)",
        "",
        f"Late: a send that started more than {results['late_ms']:g} ms after its schedule (the load generator or "
        "its connections could not keep up; the wait is in the latency either way). Failed: a connection error or no "
        "answer within 5 s of the last send.",
        "",
        "| setup | protocol | batch | target/s | answered/s | p50 ms | p99 ms | max ms | non-2xx | late | failed | "
        "CPU servers / loadgen / machine | goal | REFERENCE.md |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["open_loop"]:
        lines.append(
            f"| {r['setup']} | {r['protocol']} | {r['batch']} | {r['rate']:g} | {spread(r['achieved_rps'])} | "
            f"{spread(r['p50_ms'], 2)} | {spread(r['p99_ms'], 2)} | {spread(r['max_ms'], 1)} | {r['non_2xx']} | "
            f"{r['late']} | {r['failed']} of {r['scheduled']:,} | {cores(r['server_cores'])} / "
            f"{cores(r['loadgen_cores'])} / {cores(r['machine_cores'])} | {r['goal']}: "
            f"{'met' if r['goal_met'] else 'missed'} | {reference('open', r)} |")
    soak = results.get("soak")
    if soak:
        run, rss = soak["run"], soak["server_rss_mib"]
        latency = run["latency_ms"]
        rss_note = (f"; server RSS {rss['before']:.0f} → {rss['after']:.0f} MiB" if None not in rss.values() else "")
        lines += [
            "", f"## Soak ({soak['seconds']:g} s at {soak['rate']:g}/s, V2 REST batch 1)", "",
            f"5xx: **{soak['server_errors_5xx']}** (goal: {soak['goal']}, {'met' if soak['goal_met'] else 'missed'}); "
            f"non-2xx {run['not_ok']}, failed {run['failed']}, late {run['late']} of {run['scheduled']:,}; "
            f"p50 {latency.get('p50', math.nan):.2f} ms, p99 {latency.get('p99', math.nan):.2f} ms, "
            f"p99.9 {latency.get('p99.9', math.nan):.2f} ms, max {latency.get('max', math.nan):.1f} ms{rss_note}.",
        ]
    profile = results.get("profile")
    if not profile:
        return "\n".join(lines) + "\n"
    lines += [
        "", "## Capacity latency profile (bench/results/serving_profile.json)", "",
        f"{profile['source']}. Use it with `slipway estimate --profile bench/results/serving_profile.json "
        "--qps Q --p99-ms T`.", "",
        "| batch | p50 ms | p99 ms | p50 ms per row |", "|---|---|---|---|",
    ]
    for b in profile["batches"]:
        lines.append(f"| {b['batch_size']} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} | "
                     f"{b['p50_ms'] / b['batch_size']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as error:
        sys.exit(f"bench/serving.py failed: {error}")

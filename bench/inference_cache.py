"""Benchmark: the model server's inference cache (serving/inference_cache.py) on a 90%-hit workload, on and off.

Real `slipway serve` processes (KServe's ModelServer, 1 worker, torch 1 thread) serve the taxi model
on loopback, each request carrying every model feature (the "direct" setup of bench/serving.py):

- off:   no cache (the default);
- local: `--cache-size 100000` (the in-process LRU);
- redis: `--cache-redis` to a real redis-server on 127.0.0.1 and no local cache (every lookup and
         every store is a Redis round trip, as a replica sharing the cache with others pays);
- tiered: both: the in-process LRU in front of the shared Redis.

The workload (V2 REST): 90% of requests repeat one of a hot set of `--hot-rows` real eval rows, the
other 10% are rows never sent before (real eval rows with the fare nudged by a unique amount, so
each is new to the cache: a fresh set for every run, so no run hits on an earlier run's "new" rows).
At batch B, every row of a request is drawn that way. The load generator (bench/loadgen.py, its own
process) sends open loop at a fixed `--rate` for `--duration` s after `--warmup` s (the hot set is
cached during the warm-up), latency measured from the scheduled send time. The four servers run
side by side and take turns, run by run, for `--repeats` runs each; figures are the median and the
spread (min to max) over the runs. Each run also reads the server's
slipway_inference_cache_{hits,misses}_total before and after, so the hit ratio reported is the one
measured. Before any load, the cached and uncached servers must give the same scores for the same
rows (to float32 precision: the model's sums differ in their last bits with the batch they come in).

    python bench/inference_cache.py [--model DIR] [--loads 1:500 1:1000 32:100] [--duration 10] [--repeats 3]
    python bench/inference_cache.py --quick

Writes bench/results/inference_cache.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from common import machine, summary, write_results
from loadgen import write_bodies

# bench/serving.py (this folder is the script's sys.path[0]), not slipway.serving
from serving import LATE_MS, OPEN_LOOP_CONNECTIONS, Requests, Target, loadgen, train_model, training_sets, versions
from slipway.components.preprocessing import model_features
from slipway.problem import load_problem
from slipway.serving.process import ServerProcess, free_ports

HIT_SHARE = 0.9
LOADS = ("1:500", "1:1000", "32:100")  # batch:requests/s, each the same for every setup
SETUPS = ("off", "local", "redis", "tiered")


def log(message: str) -> None:
    print(f"[inference_cache {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    [port] = free_ports(1)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "redis.log").open("wb") as out:
        process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                    "--appendonly", "no", "--dir", str(directory)],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        import redis

        client = redis.Redis(port=port)
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 10 s")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Workload:
    """Request bodies where each row is one of the hot rows (90%) or a row never sent before (10%)."""

    def __init__(self, frame: pd.DataFrame, features: tuple[list[str], list[str]], name: str, hot_rows: int) -> None:
        self.requests = Requests(frame, features, name)
        self.hot = list(range(hot_rows))
        self.cold = list(range(hot_rows, self.requests.rows))
        self.base_fare = list(self.requests.columns["fare"])
        self.serial = 0

    def bodies(self, batch: int, count: int, seed: int) -> list[bytes]:
        random = np.random.default_rng(seed)
        requests = self.requests
        bodies = []
        for i in range(count):
            chosen = []
            for _ in range(batch):
                if random.random() < HIT_SHARE:
                    chosen.append(self.hot[random.integers(len(self.hot))])
                else:  # a new row: a real one, its fare nudged by an amount no other row has
                    row = self.cold[random.integers(len(self.cold))]
                    self.serial += 1
                    fare = self.base_fare[row] or 0.0
                    requests.columns["fare"].append(fare + self.serial * 1e-4)
                    for column, values in requests.columns.items():
                        if column != "fare":
                            values.append(values[row])
                    chosen.append(len(requests.columns["fare"]) - 1)
            bodies.append(requests.v2(chosen, f"cache-{seed}-{i}"))
        return bodies


def cache_counts(server: ServerProcess, name: str) -> tuple[float, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text

    def value(metric: str) -> float:
        found = re.search(rf'^{metric}{{model="{name}"}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return value("slipway_inference_cache_hits_total"), value("slipway_inference_cache_misses_total")


def check_same_scores(servers: dict[str, ServerProcess], workload: Workload, name: str) -> float:
    """The hot rows' scores from every setup, twice (the second time from the cache): the largest difference."""
    body = workload.requests.v2(workload.hot, "check")
    answers = {}
    for setup, server in servers.items():
        for _ in range(2):
            response = httpx.post(f"{server.url}/v2/models/{name}/infer", content=body,
                                  headers={"content-type": "application/json"}, timeout=30)
            response.raise_for_status()
            if "x-slipway-degraded" in response.headers:
                raise RuntimeError(f"{setup}: answered degraded ({response.headers['x-slipway-degraded']})")
            answers[setup] = np.array(response.json()["outputs"][0]["data"])
    worst = max(float(np.max(np.abs(answers[s] - answers["off"]) / answers["off"])) for s in answers)
    if worst > 1e-5:
        raise RuntimeError(f"the cached servers answer other scores than the uncached one (relative {worst:.2e})")
    return worst


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model directory (default: train one on the sample)")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), metavar="BATCH:RATE",
                        help="rows per request and requests/s of each load, run with every setup")
    parser.add_argument("--hot-rows", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 s runs, one repeat: a smoke run")
    args = parser.parse_args()
    try:
        args.loads = [(int(b), float(r)) for b, r in (load.split(":") for load in args.loads)]
    except ValueError:
        parser.error(f"--loads: expected BATCH:RATE pairs, got {args.loads}")
    if args.quick:
        args.duration, args.warmup, args.repeats = 1.0, 0.5, 1
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    problem = load_problem()
    m = machine()
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": m, "versions": versions(), "quick": args.quick, "hit_share": HIT_SHARE, "hot_rows": args.hot_rows,
        "duration_s": args.duration, "warmup_s": args.warmup, "repeats": args.repeats, "protocol": "v2-rest",
        "setup": (f"one `slipway serve` per setup (KServe ModelServer, 1 worker, torch 1 thread), redis-server and "
                  f"the load generator (bench/loadgen.py, open loop, {OPEN_LOOP_CONNECTIONS} connections) on "
                  f"127.0.0.1, none pinned: they share the machine's {m['cores']} cores"),
        "setups": {"off": "no cache (the default)", "local": "--cache-size 100000 (in-process LRU)",
                   "redis": "--cache-redis (shared Redis on loopback, no in-process cache)",
                   "tiered": "--cache-size 100000 --cache-redis (the in-process LRU in front of Redis)"},
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="slipway-bench-cache-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        if args.model is None:
            log("ingesting the sample, joining its Feast features, training a model (3 epochs)")
            train, evaluation, _ = training_sets(problem, workdir)
            args.model = str(train_model(problem, train, evaluation, workdir))
            frame = pd.read_parquet(evaluation)
            results["model"] = "trained on the sample (3 epochs)"
        else:
            log("ingesting the sample and joining its Feast features (the request rows)")
            _, evaluation, _ = training_sets(problem, workdir)
            frame = pd.read_parquet(evaluation)
            results["model"] = args.model
        address = stack.enter_context(redis_server(workdir / "redis"))
        serve = ["serve", "--model", args.model, "--name", problem.name]
        flags = {"off": [], "local": ["--cache-size", "100000"], "redis": ["--cache-redis", address],
                 "tiered": ["--cache-size", "100000", "--cache-redis", address]}
        servers = {setup: stack.enter_context(ServerProcess([*serve, *flags[setup]], problem.name, workdir / setup))
                   for setup in SETUPS}
        workload = Workload(frame, model_features(problem), problem.name, args.hot_rows)
        results["max_relative_score_difference"] = check_same_scores(servers, workload, problem.name)
        log(f"{len(frame):,} eval rows; hot set {args.hot_rows} rows; the cached servers answer the uncached scores")
        options = ["--mode", "open", "--duration", str(args.duration), "--warmup", str(args.warmup),
                   "--connections", str(OPEN_LOOP_CONNECTIONS), "--late-ms", str(LATE_MS)]
        for batch, rate in args.loads:
            count = round(rate * (args.warmup + args.duration))
            for repeat in range(1, args.repeats + 1):
                for setup in SETUPS:
                    path = workdir / f"b{batch}-{rate:g}-r{repeat}-{setup}.bin"
                    write_bodies(path, workload.bodies(batch, count, seed=len(results["runs"])))
                    server = servers[setup]
                    before = cache_counts(server, problem.name)
                    run = loadgen(Target(server, [server]), "v2-rest", [str(path)],
                                  [*options, "--rate", str(rate)], args.warmup + args.duration + 120)
                    hits, misses = (after - earlier for after, earlier in
                                    zip(cache_counts(server, problem.name), before, strict=True))
                    run.update(setup=setup, batch=batch, rate=rate, repeat=repeat,
                               hit_ratio=hits / (hits + misses) if hits + misses else None)
                    results["runs"].append(run)
                    latency = run["latency_ms"]
                    log(f"batch {batch} at {rate:g}/s, {setup} {repeat}/{args.repeats}: {run['rps']:,.0f} req/s, "
                        f"p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms, non-2xx {run['not_ok']}, "
                        f"failed {run['failed']}, hit ratio "
                        f"{'-' if run['hit_ratio'] is None else format(run['hit_ratio'], '.3f')}")
    results["summary"] = summarize(results["runs"])
    results["wall_s"] = time.monotonic() - started
    write_results("inference_cache", results, markdown(results))


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict[tuple[int, float, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["batch"], run["rate"], run["setup"]), []).append(run)
    rows = []
    for (batch, _, setup), group in groups.items():
        ratios = [r["hit_ratio"] for r in group if r["hit_ratio"] is not None]
        rows.append({
            "batch": batch, "setup": setup, "rate": group[0]["rate"],
            "achieved_rps": summary([r["rps"] for r in group]),
            "p50_ms": summary([r["latency_ms"]["p50"] for r in group]),
            "p99_ms": summary([r["latency_ms"]["p99"] for r in group]),
            "hit_ratio": summary(ratios) if ratios else None,
            "non_2xx": sum(r["not_ok"] for r in group), "failed": sum(r["failed"] for r in group),
            "late": sum(r["late"] for r in group), "scheduled": sum(r["scheduled"] for r in group),
            "server_cores": sorted(r["cpu_cores"].get("server") or 0 for r in group)[len(group) // 2],
        })
    return rows


def spread(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Inference cache: p50/p99 on a 90%-hit workload, cache off vs on, at the same RPS",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. {results['setup']}.",
        f"Workload: V2 REST, open loop; each row one of {results['hot_rows']} hot rows (90%) or a row never sent "
        f"before (10%); {results['duration_s']:g} s measured after {results['warmup_s']:g} s of warm-up, "
        f"{results['repeats']} runs per setup, the setups taking turns. Median (min–max) over the runs; the hit "
        "ratio is the server's own counters over the run (warm-up included).",
        f"Cached and uncached scores agree to a relative {results['max_relative_score_difference']:.1e} "
        "(float32: the model's sums differ in their last bits with the batch they come in).",
        "",
        "| batch | rate (req/s) | setup | achieved req/s | p50 ms | p99 ms | hit ratio | server cores | "
        "non-2xx / failed / late |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["summary"]:
        ratio = "–" if row["hit_ratio"] is None else f"{row['hit_ratio']['median']:.3f}"
        cores = f"{row['server_cores']:.2f}" if row["server_cores"] else "–"
        lines.append(f"| {row['batch']} | {row['rate']:g} | {row['setup']} | {spread(row['achieved_rps'], 0)} | "
                     f"{spread(row['p50_ms'])} | {spread(row['p99_ms'])} | {ratio} | {cores} | "
                     f"{row['non_2xx']} / {row['failed']} / {row['late']} of {row['scheduled']} |")
    lines += ["", "Setups: " + "; ".join(f"{k}: {v}" for k, v in results["setups"].items()) + ".",
              f"Wall time {results['wall_s']:.0f} s.", ""]
    if results["quick"]:
        lines.insert(2, "**Quick smoke run: 1 s runs, one repeat. Not for comparison.**\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

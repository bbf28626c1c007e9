"""Benchmark: the feature path: aggregates, materialization, historical retrieval and online lookups.

Everything runs on the real taxi sample (data.csv, 10,000 trips) ingested into its train and
eval splits; the feature tables are computed over train + eval, as the pipeline does.

- Aggregates: `write_feature_tables` (read the trips, compute every entity's windowed aggregates,
  write the Parquet tables): trips/s.
- Materialization: `materialize(store, end)` with `end` the tables' newest row (each key's snapshot row,
  one second after the latest trip), into SQLite and into
  a real Redis, each repeat on a fresh repo dir (and an emptied Redis): feature rows read per
  second. A first materialization loads each view's [end - ttl, end] and writes the latest row of
  each key (Feast dedups), so rows read and keys written are both reported. That window holds
  about a hundred rows of this sample, so Feast's own `store.materialize` over the whole history
  (~20,000 feature rows) is timed too, on another fresh repo dir.
- Historical retrieval: `training_set` of the train split (~8,000 trips, point in time, Feast's
  file offline store). It takes about 30 s on two cores, so its repeats are set apart
  (`--historical-repeats`, 0 skips it); `--quick` uses the first 1,000 train trips by time.
- Online lookups: `online_features` of 1 entity row and of 100 entity rows (both entities, every
  feature), on SQLite and on Redis, sequential calls after a warm-up: p50/p99 per repeat. Keys are
  drawn (fixed seed) from real trips within the materialized window; the 100-row calls mix in 5
  unknown keys. Goal: p99 <= 2 ms for one entity row; REFERENCE.md measured Feast's SQLite lookup
  of 1 entity at median 0.24 ms, p99 4.7 ms.

Redis is a `redis-server` (/usr/bin/redis-server) that the benchmark starts on a free loopback
port, persisting nothing, and stops at the end, on error too.

    python bench/features.py [--repeats 3] [--lookups 1000] [--historical-repeats 1]
    python bench/features.py --quick      # smoke run: 1 repeat, 200 lookups, retrieval of 1,000 trips

`--lookups N` is the number of timed 1-entity calls; the 100-entity case makes N / 5 (1000 -> 200).
Figures are the median (min–max) over the repeats. Writes bench/results/features.json and .md,
with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import logging
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import machine, summary, write_results

from slipway import logs
from slipway.components.feature_aggregates import EVENT_TIMESTAMP, write_feature_tables
from slipway.problem import Problem, load_problem
from slipway.serving.process import free_ports

STORES = ("sqlite", "redis")
ENTITY_ROWS = (1, 100)
UNKNOWN_PER_100 = 5
P99_GOAL_MS = 2.0  # one entity row, from the issue
REFERENCE = "Feast 0.67 SQLite, 1 entity: median 0.24 ms, p99 4.7 ms (REFERENCE.md)"
QUICK = {"repeats": 1, "lookups": 200, "historical_repeats": 1, "warmup": 20, "historical_rows": 1000}
FULL = {"repeats": 3, "lookups": 1000, "historical_repeats": 1, "warmup": 100, "historical_rows": None}
READY_TIMEOUT_S = 10


def log(message: str) -> None:
    print(f"[features {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- data ----------------------------------------------------------------------------------


def sample_trips(problem: Problem, directory: Path) -> tuple[pd.DataFrame, Path, Path]:
    """The ingested sample: the train split, and train + eval written as one trips file."""
    from slipway.components.ingestion import ingest_source
    from slipway.sample_data import fetch_sample

    train, evaluation = directory / "train.parquet", directory / "eval.parquet"
    ingest_source(str(fetch_sample()["data.csv"]), problem, train, evaluation)
    train_frame = pd.read_parquet(train)
    trips = directory / "trips.parquet"
    pd.concat([train_frame, pd.read_parquet(evaluation)], ignore_index=True).to_parquet(trips)
    return train_frame, trips, train


# --- redis ---------------------------------------------------------------------------------


def free_port() -> int:
    return free_ports(1)[0]


def redis_command(port: int, command: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(command.encode() + b"\r\n")
        return connection.recv(256)


class RedisServer:
    """A `redis-server` on a free loopback port, nothing persisted; stopped however the block ends."""

    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def version(self) -> str:
        return subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()

    def __enter__(self) -> RedisServer:
        if not Path(self.binary).exists():
            raise RuntimeError("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                   "--dir", str(self.directory)]
        with (self.directory / "server.log").open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not self.answers():
                if self.process.poll() is not None:
                    tail = (self.directory / "server.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"redis-server exited with status {self.process.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING within "
                                       f"{READY_TIMEOUT_S} s")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        log(f"redis-server ready on {self.address} (pid {self.process.pid})")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def answers(self) -> bool:
        try:
            return redis_command(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        answer = redis_command(self.port, "FLUSHALL")
        if not answer.startswith(b"+OK"):
            raise RuntimeError(f"redis FLUSHALL answered {answer!r}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        log("redis-server stopped")


# --- measurements --------------------------------------------------------------------------


def measure_aggregates(trips: Path, problem: Problem, directory: Path, repeats: int) -> tuple[dict, dict[str, Path]]:
    count = len(pd.read_parquet(trips, columns=[problem.timestamp.column]))
    seconds, tables = [], {}
    for repeat in range(1, repeats + 1):
        started = time.perf_counter()
        tables = write_feature_tables(trips, problem, directory / f"tables-{repeat}")
        seconds.append(time.perf_counter() - started)
        log(f"repeat {repeat}/{repeats} aggregates: {count:,} trips in {seconds[-1] * 1000:.1f} ms "
            f"({count / seconds[-1]:,.0f} trips/s)")
    feature_rows = {entity: len(pd.read_parquet(path, columns=[EVENT_TIMESTAMP])) for entity, path in tables.items()}
    return {"trips": count, "feature_rows": feature_rows, "seconds": summary(seconds),
            "trips_per_second": summary([count / s for s in seconds])}, tables


def materialized_window(tables: dict[str, Path], problem: Problem, end: pd.Timestamp,
                        start: pd.Timestamp | None = None) -> dict[str, dict]:
    """Per entity: the feature rows a materialization of [start, end] reads, and the keys it writes (the
    latest row of each); `start` defaults to end - ttl, the first window of `materialize`."""
    start = end - pd.Timedelta(problem.feature_store.ttl) if start is None else start
    window = {}
    for entity, path in tables.items():
        table = pd.read_parquet(path, columns=[entity, EVENT_TIMESTAMP])
        inside = table[(table[EVENT_TIMESTAMP] >= start) & (table[EVENT_TIMESTAMP] <= end)]
        window[entity] = {"rows": len(inside), "keys": int(inside[entity].nunique())}
    return window


def lookup_requests(trips: pd.DataFrame, problem: Problem, start: pd.Timestamp, calls: int, rows: int,
                    seed: int) -> tuple[list[dict[str, list]], list[list[bool]]]:
    """`calls` requests of `rows` entity rows each, from real trips at or after `start` (so materialized);
    with 100 rows, UNKNOWN_PER_100 per 100 are unknown keys. Also, per request, which rows are known."""
    times = trips[problem.timestamp.column]
    times = times.dt.tz_convert("UTC") if times.dt.tz is not None else times.dt.tz_localize("UTC")
    recent = trips[(times >= start).to_numpy()]
    columns = {entity: [None if pd.isna(v) else (int(v) if problem.columns[entity] == "integer" else str(v))
                        for v in recent[entity].tolist()] for entity in problem.entities}
    unknown = round(rows * UNKNOWN_PER_100 / 100) if rows >= 100 else 0
    rng = np.random.default_rng(seed)
    requests, known = [], []
    for call in range(calls):
        picks = rng.integers(0, len(recent), rows - unknown).tolist()
        request = {entity: [values[i] for i in picks] for entity, values in columns.items()}
        for u in range(unknown):
            for entity in problem.entities:
                missing = 1_000_000 + call * rows + u if problem.columns[entity] == "integer" else f"no-such-{call}-{u}"
                request[entity].append(missing)
        order = rng.permutation(rows).tolist()
        requests.append({entity: [keys[i] for i in order] for entity, keys in request.items()})
        known.append([i < rows - unknown for i in order])
    return requests, known


def check_answer(answer: dict, known: list[bool], store: str, rows: int) -> None:
    """Known keys are found in every view, unknown ones in none: otherwise the timing would be of misses."""
    for view in (name for name in answer if name.endswith("__found")):
        if answer[view] != known:
            raise RuntimeError(f"{store}, {rows} entity row(s): {view} is {answer[view][:10]}..., expected "
                               f"{known[:10]}... (a known key not found, or an unknown one found)")


def measure_lookups(store: Any, problem: Problem, store_name: str, requests: list[dict], known: list[list[bool]],
                    warmup: int) -> dict:
    from slipway.components.feature_store import online_features

    rows = len(known[0])
    check_answer(online_features(store, problem, requests[0]), known[0], store_name, rows)
    for i in range(warmup):
        online_features(store, problem, requests[i % len(requests)])
    latencies = np.empty(len(requests))
    for i, request in enumerate(requests):
        started = time.perf_counter()
        online_features(store, problem, request)
        latencies[i] = time.perf_counter() - started
    ms = latencies * 1000
    return {"calls": len(requests), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def store_config(store_name: str, repo_dir: Path, redis: RedisServer | None) -> Any:
    from slipway.components.feature_store import StoreConfig

    if store_name == "redis":
        redis.flush()
        return StoreConfig(repo_dir=repo_dir, online="redis", redis_url=redis.address)
    return StoreConfig(repo_dir=repo_dir)


def measure_historical(tables: dict[str, Path], problem: Problem, train: pd.DataFrame, rows: int | None,
                       repeats: int, directory: Path) -> dict:
    from slipway.components.feature_store import StoreConfig, apply, open_store, training_set

    entity_rows = train.sort_values(problem.timestamp.column, kind="stable")
    if rows is not None:
        entity_rows = entity_rows.head(rows)
    store = open_store(StoreConfig(repo_dir=directory / "historical-repo"), problem)
    apply(store, problem, tables)
    seconds, returned = [], 0
    for repeat in range(1, repeats + 1):
        started = time.perf_counter()
        result = training_set(store, problem, entity_rows)
        seconds.append(time.perf_counter() - started)
        returned = len(result)
        log(f"repeat {repeat}/{repeats} historical retrieval: {len(entity_rows):,} entity rows -> {returned:,} "
            f"rows in {seconds[-1]:.2f} s ({len(entity_rows) / seconds[-1]:,.0f} rows/s)")
    return {"entity_rows": len(entity_rows), "train_rows": len(train), "rows_returned": returned,
            "first_rows_only": rows is not None and rows < len(train),
            "features": len(result.columns) - len(train.columns),
            "seconds": summary(seconds), "rows_per_second": summary([len(entity_rows) / s for s in seconds])}


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"repeats of aggregates, materialization and lookups (default {FULL['repeats']}; "
                             f"--quick {QUICK['repeats']})")
    parser.add_argument("--lookups", type=int, default=None,
                        help=f"timed 1-entity calls per store and repeat; the 100-entity case makes a fifth as many "
                             f"(default {FULL['lookups']}; --quick {QUICK['lookups']})")
    parser.add_argument("--historical-repeats", type=int, default=None,
                        help="repeats of the historical retrieval, about 30 s each on two cores; 0 skips it "
                             f"(default {FULL['historical_repeats']})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['repeats']} repeat, {QUICK['lookups']} lookups, historical retrieval "
                             f"of the first {QUICK['historical_rows']:,} train trips only; explicit flags still win")
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.lookups < 5 or args.historical_repeats < 0:
        parser.error("--repeats must be >= 1, --lookups >= 5 and --historical-repeats >= 0")
    return args


def versions(redis: RedisServer) -> dict:
    found = {}
    for package in ("feast", "redis", "pandas", "pyarrow", "dask"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    found["redis-server"] = redis.version().split(" sha=")[0].removeprefix("Redis server ")
    return found


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops redis-server
    logs.configure(logging.WARNING)
    from slipway.components.feature_store import apply, materialize, open_store

    problem = load_problem()
    calls = {1: args.lookups, 100: max(1, args.lookups // 5)}
    results: dict[str, Any] = {
        "machine": machine(), "quick": args.quick, "repeats": args.repeats,
        "historical_repeats": args.historical_repeats, "lookups": calls, "warmup_calls": args.warmup,
        "setup": ("one process: Feast 0.67 embedded (file registry, Parquet offline store read in process), SQLite "
                  "online store in the repo dir or a local redis-server on 127.0.0.1; sequential calls"),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slipway-bench-features-") as tmp, \
            RedisServer(Path(tmp) / "redis") as redis:
        workdir = Path(tmp)
        results["versions"] = versions(redis)
        log("ingesting the taxi sample")
        train, trips_path, _ = sample_trips(problem, workdir)
        trips = pd.read_parquet(trips_path)
        results["aggregates"], tables = measure_aggregates(trips_path, problem, workdir, args.repeats)

        # As the pipeline's materialize step: up to the tables' newest rows, the snapshot rows after the last trip.
        end = max(pd.read_parquet(path, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP].max() for path in tables.values())
        window = materialized_window(tables, problem, end)
        start = end - pd.Timedelta(problem.feature_store.ttl)
        requests = {rows: lookup_requests(trips, problem, start, calls[rows], rows, seed=rows) for rows in ENTITY_ROWS}
        materialized: dict[str, list[float]] = {name: [] for name in STORES}
        materialized_full: dict[str, list[float]] = {name: [] for name in STORES}
        first = pd.concat([pd.read_parquet(path, columns=[EVENT_TIMESTAMP]) for path in tables.values()])[
            EVENT_TIMESTAMP].min()
        full_window = materialized_window(tables, problem, end, first)
        full_rows = sum(w["rows"] for w in full_window.values())
        rows_read = sum(w["rows"] for w in window.values())
        lookups: dict[tuple[str, int], list[dict]] = {(name, rows): [] for name in STORES for rows in ENTITY_ROWS}
        for repeat in range(1, args.repeats + 1):
            for name in STORES:
                store = open_store(store_config(name, workdir / f"full-{name}-{repeat}", redis), problem)
                apply(store, problem, tables)
                began = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a banner per view
                    store.materialize(start_date=first.to_pydatetime(), end_date=end.to_pydatetime())
                materialized_full[name].append(time.perf_counter() - began)
                log(f"repeat {repeat}/{args.repeats} materialize the whole history into {name}: {full_rows:,} "
                    f"feature rows in {materialized_full[name][-1]:.2f} s "
                    f"({full_rows / materialized_full[name][-1]:,.0f} rows/s)")
                store = open_store(store_config(name, workdir / f"repo-{name}-{repeat}", redis), problem)
                apply(store, problem, tables)
                began = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    materialize(store, end.to_pydatetime())
                materialized[name].append(time.perf_counter() - began)
                log(f"repeat {repeat}/{args.repeats} materialize into {name}: {rows_read:,} feature rows in "
                    f"{materialized[name][-1]:.2f} s ({rows_read / materialized[name][-1]:,.0f} rows/s)")
                for rows in ENTITY_ROWS:
                    run = measure_lookups(store, problem, name, *requests[rows], args.warmup)
                    lookups[name, rows].append(run)
                    log(f"repeat {repeat}/{args.repeats} online {name}, {rows} entity row(s): {run['calls']} calls, "
                        f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, max {run['max_ms']:.1f} ms")
        results["materialization"] = {
            "end": end.isoformat(), "ttl": problem.feature_store.ttl, "window": window,
            "runs": [{"store": name, "seconds": summary(seconds),
                      "rows_per_second": summary([rows_read / s for s in seconds])}
                     for name, seconds in materialized.items()],
            "whole_history": {
                "start": first.isoformat(), "window": full_window,
                "runs": [{"store": name, "seconds": summary(seconds),
                          "rows_per_second": summary([full_rows / s for s in seconds])}
                         for name, seconds in materialized_full.items()],
            },
        }
        results["online"] = [{
            "store": name, "entity_rows": rows, "calls": runs[0]["calls"],
            "unknown_keys": round(rows * UNKNOWN_PER_100 / 100) if rows >= 100 else 0,
            "p50_ms": summary([r["p50_ms"] for r in runs]), "p99_ms": summary([r["p99_ms"] for r in runs]),
            "max_ms": max(r["max_ms"] for r in runs),
            "goal": f"p99 <= {P99_GOAL_MS:g} ms" if rows == 1 else None,
            "goal_met": statistics.median([r["p99_ms"] for r in runs]) <= P99_GOAL_MS if rows == 1 else None,
        } for (name, rows), runs in lookups.items()]
        results["reference"] = REFERENCE
        if args.historical_repeats:
            which = f"the first {args.historical_rows:,}" if args.historical_rows else "all"
            log(f"historical retrieval of {which} train trips ({args.historical_repeats} repeat(s))")
            results["historical"] = measure_historical(tables, problem, train, args.historical_rows,
                                                       args.historical_repeats, workdir)
    results["wall_s"] = time.monotonic() - started
    write_results("features", results, markdown(results))


# --- report --------------------------------------------------------------------------------


def spread(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def markdown(results: dict) -> str:
    m, v = results["machine"], results["versions"]
    lines = ["# Feature path: aggregates, materialization, retrieval, online lookups", ""]
    if results["quick"]:
        lines += ["**Quick smoke run (`--quick`): 1 repeat, few lookups, historical retrieval of the first train "
                  "trips only; not a measurement.**", ""]
    a = results["aggregates"]
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Setup: {results['setup']}. Data: the taxi sample (data.csv) ingested, train + eval. "
        f"{results['repeats']} repeat(s); median (min–max) over the repeats.",
        "",
        "## Aggregates (`write_feature_tables`: read trips, compute, write Parquet)",
        "",
        "| trips | feature rows per entity | ms | trips/s |",
        "|---|---|---|---|",
        f"| {a['trips']:,} | " + ", ".join(f"{e} {n:,}" for e, n in a["feature_rows"].items())
        + f" | {spread({k: a['seconds'][k] * 1000 for k in ('median', 'min', 'max')}, 1)} | "
        f"{spread(a['trips_per_second'])} |",
    ]
    mat = results["materialization"]
    rows_read = sum(w["rows"] for w in mat["window"].values())
    keys = sum(w["keys"] for w in mat["window"].values())
    lines += [
        "",
        f"## Materialization (`materialize`, first window [end - {mat['ttl']}, end], end {mat['end']}; fresh repo "
        "each repeat)",
        "",
        f"Feature rows read: {rows_read:,} (" + ", ".join(f"{e} {w['rows']:,}" for e, w in mat["window"].items())
        + f"); online rows written (latest per key): {keys:,}.",
        "",
        "| online store | seconds | feature rows read/s |",
        "|---|---|---|",
    ]
    for r in mat["runs"]:
        lines.append(f"| {r['store']} | {spread(r['seconds'], 2)} | {spread(r['rows_per_second'])} |")
    whole = mat["whole_history"]
    lines += [
        "",
        f"The first window holds few rows of this sample, so Feast's own `store.materialize` over the whole history "
        f"[{whole['start']}, end] (fresh repo) shows the rate on more: "
        f"{sum(w['rows'] for w in whole['window'].values()):,} feature rows read, "
        f"{sum(w['keys'] for w in whole['window'].values()):,} online rows written.",
        "",
        "| online store | seconds | feature rows read/s |",
        "|---|---|---|",
    ]
    for r in whole["runs"]:
        lines.append(f"| {r['store']} | {spread(r['seconds'], 2)} | {spread(r['rows_per_second'])} |")
    h = results.get("historical")
    lines += ["", "## Historical retrieval (`training_set`, point in time, Feast's file offline store)", ""]
    if h is None:
        lines.append("Skipped (`--historical-repeats 0`).")
    else:
        which = (f"the first {h['entity_rows']:,} of {h['train_rows']:,} train trips by time (`--quick`)"
                 if h["first_rows_only"] else f"the train split, {h['entity_rows']:,} trips")
        lines += [f"Entity rows: {which}; {results['historical_repeats']} repeat(s).", "",
                  "| entity rows | rows returned | features | seconds | rows/s |", "|---|---|---|---|---|",
                  f"| {h['entity_rows']:,} | {h['rows_returned']:,} | {h['features']} | {spread(h['seconds'], 2)} | "
                  f"{spread(h['rows_per_second'])} |"]
    lines += [
        "",
        f"## Online lookups (`online_features`, every feature of both views; {results['warmup_calls']} warm-up "
        "calls, then sequential timed calls)",
        "",
        f"Reference: {results['reference']}. Keys: real trips' keys from the materialized window; 100-row calls "
        "include unknown keys.",
        "",
        "| online store | entity rows per call | unknown keys | calls | p50 ms | p99 ms | max ms | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["online"]:
        goal = f"{r['goal']}: {'met' if r['goal_met'] else 'missed'}" if r["goal"] else ""
        lines.append(f"| {r['store']} | {r['entity_rows']} | {r['unknown_keys']} | {r['calls']:,} | "
                     f"{spread(r['p50_ms'], 2)} | {spread(r['p99_ms'], 2)} | {r['max_ms']:.1f} | {goal} |")
    lines += ["", f"Wall time: {results['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as error:
        sys.exit(f"bench/features.py failed: {error}")

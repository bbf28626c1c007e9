"""Benchmark: how much traffic one online drift monitor keeps up with.

Real taxi rows (data.csv resampled) are logged as one-row V1 requests with their responses by the real
prediction logger, as `slipway serve --prediction-log` writes them. Then, timed separately:

1. reading the log back into CloudEvents (`read_events`: what following a log costs per event);
2. `DriftMonitor.observe` on those events, windows of 1,000 rows against data.csv's training split,
   each window measured on close (PSI of the 14 features and the noise guard).

    python bench/drift_monitor.py [--requests 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import machine, summary, write_results

from slipway import logs
from slipway.components.ingestion import ingest_source
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample
from slipway.serving.deploy import json_instances
from slipway.serving.drift_monitor import DriftMonitor, MonitorConfig
from slipway.serving.prediction_log import PredictionLogConfig, PredictionLogger, read_events

WINDOW_ROWS = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logs.configure()
    problem = load_problem()
    with tempfile.TemporaryDirectory(prefix="slipway-bench-monitor-") as tmp:
        workdir = Path(tmp)
        ingest_source(str(fetch_sample()["data.csv"]), problem, workdir / "train.parquet", workdir / "eval.parquet")
        rows = pd.read_parquet(workdir / "train.parquet").sample(args.requests, replace=True, random_state=0)
        instances = json_instances(rows[list(problem.features.all)])
        log = workdir / "predictions.jsonl"
        # A queue as long as the run: the logger drops pairs when its writer falls behind, which a burst this fast does.
        settings = PredictionLogConfig(path=log, inference_service="taxi", max_bytes=2**30, queue_size=args.requests)
        with PredictionLogger(settings) as logger:
            for index, instance in enumerate(instances):
                logger.log(f"r{index}", "chicago_taxi", {"instances": [instance]}, {"predictions": [0.3]})
        reads, observes, windows = [], [], 0
        for _ in range(args.repeats):
            started = time.perf_counter()
            events = list(read_events(log))
            if len(events) != 2 * args.requests:
                raise RuntimeError(f"{len(events)} events logged for {args.requests} requests: some were dropped")
            reads.append(time.perf_counter() - started)
            monitor = DriftMonitor(MonitorConfig(reference=str(workdir / "train.parquet"), window_rows=WINDOW_ROWS))
            started = time.perf_counter()
            windows = sum(monitor.observe(event) is not None for event in events)
            observes.append(time.perf_counter() - started)
    results = {"machine": machine(), "requests": args.requests, "events": 2 * args.requests, "windows": windows,
               "read_seconds": summary(reads), "observe_seconds": summary(observes)}
    write_results("drift_monitor", results, markdown(results))


def markdown(results: dict) -> str:
    m, requests = results["machine"], results["requests"]

    def rate(stat: dict) -> str:
        runs = sorted(requests / s for s in stat["runs"])
        return f"**{requests / stat['median']:,.0f} requests/s** ({runs[0]:,.0f}–{runs[-1]:,.0f})"

    return "\n".join([
        "# The online drift monitor: requests per second, one process", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. {requests:,} one-row V1 requests of "
        f"resampled real trips and their responses ({results['events']:,} CloudEvents, written by the real "
        f"prediction logger); median and range of {len(results['read_seconds']['runs'])} runs.", "",
        f"- Reading the log back into CloudEvents: {rate(results['read_seconds'])}.",
        f"- `DriftMonitor.observe` on them, windows of {WINDOW_ROWS:,} rows each measured on close "
        f"({results['windows']} windows, 14 features): {rate(results['observe_seconds'])}.",
        "", "Following a log costs both; the HTTP service (KServe's logger) parses each POST instead of a line.",
    ]) + "\n"


if __name__ == "__main__":
    main()

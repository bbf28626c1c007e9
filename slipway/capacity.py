"""Capacity estimate: how many model-server replicas a target load needs, with and without batching.

CLI help: Estimates how many model-server replicas (on a GPU profile: GPUs) serve `--qps` requests
per second within `--p99-ms`, from measured latency per batch size, with and without KServe's
request batcher, and prints the arithmetic (QPS × latency ÷ utilisation) with the numbers filled in.

This is the back-of-envelope method of ML system design, not a queueing model. A replica that takes
s seconds per request serves 1/s requests a second; to keep queues short it should run at a target
utilisation u (0.6 by default) rather than flat out, so a load of Q requests a second needs
ceil(Q × s ÷ u) replicas. Batching trades latency for throughput: a batch of b rows taking t_b serves
b / t_b rows a second, but the first request of a batch waits for the other b − 1 to arrive. KServe's
batcher flushes a batch when it reaches `maxBatchSize` or when its first request has waited
`maxLatency`. When the deadline comes first, batches leave part-full and the full-batch throughput
no longer holds, so the estimate checks that the replicas still keep up with the smaller batches
(bounding their cost by the next measured batch size up) before it counts the option.

The input is a latency profile: the measured latency of one predict call per batch size, on one
device. `measure_profile` measures it in process (preprocessing and the forward pass; no HTTP, no
JSON, no batcher), which is a lower bound on what a served request costs; the serving benchmark (the
serving issue) is to write the same file from requests against a running endpoint. The file is JSON:

    {
      "format_version": 1,
      "device": "cpu (2 threads)",
      "source": "in-process predict_proba of runs/model (preprocessing included; no HTTP)",
      "batches": [
        {"batch_size": 1, "p50_ms": 0.61, "p99_ms": 0.93},
        {"batch_size": 32, "p50_ms": 1.35, "p99_ms": 1.80}
      ]
    }

`device` says what one replica is (a CPU process with its threads, or one GPU); `source` says what
was timed; `batches` holds one entry per measured batch size, batch size 1 required (the estimate
without batching needs it), with the median and 99th-percentile latency in milliseconds of one
call on a whole batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from slipway.atomic import atomic_output
from slipway.components.model_artifact import load_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_BATCH_SIZES = (1, 8, 32, 128)
WARMUP_CALLS = 5  # first calls pay for lazy allocation and cold caches, which a serving replica pays once


@dataclasses.dataclass(frozen=True)
class BatchLatency:
    """Latency of one predict call on a whole batch of `batch_size` rows, in milliseconds."""

    batch_size: int
    p50_ms: float
    p99_ms: float


@dataclasses.dataclass(frozen=True)
class LatencyProfile:
    """Measured latency per batch size on one device; the input of `estimate` (format: module docstring)."""

    device: str
    source: str
    batches: tuple[BatchLatency, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "batches", tuple(sorted(self.batches, key=lambda b: b.batch_size)))
        _check_batch_sizes([b.batch_size for b in self.batches])
        for batch in self.batches:
            if not (math.isfinite(batch.p50_ms) and batch.p50_ms > 0):
                raise ValueError(f"batch {batch.batch_size}: p50_ms must be > 0, got {batch.p50_ms}")
            if not (math.isfinite(batch.p99_ms) and batch.p99_ms >= batch.p50_ms):
                raise ValueError(f"batch {batch.batch_size}: p99_ms must be >= p50_ms, got {batch.p99_ms}")

    @property
    def unbatched(self) -> BatchLatency:
        """The batch-size-1 entry: one request per call."""
        return self.batches[0]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> LatencyProfile:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')!r}, this Slipway reads {FORMAT_VERSION}")
        batches = tuple(
            BatchLatency(int(b["batch_size"]), float(b["p50_ms"]), float(b["p99_ms"])) for b in data["batches"]
        )
        return cls(device=str(data["device"]), source=str(data["source"]), batches=batches)


def _check_batch_sizes(sizes: Sequence[int]) -> None:
    """Batch sizes are distinct positive integers including 1 (the estimate without batching needs it)."""
    if any(size < 1 for size in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"batch sizes must be distinct integers >= 1, got {list(sizes)}")
    if 1 not in sizes:
        raise ValueError(f"batch sizes must include 1 (the estimate without batching needs it), got {list(sizes)}")


def save_profile(profile: LatencyProfile, path: Path) -> None:
    """Writes the profile as JSON, atomically, so a reader never sees half a profile."""
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(profile.to_dict(), indent=2) + "\n")


def load_profile(path: Path) -> LatencyProfile:
    """Reads a profile written by `save_profile` (or any tool writing the same format); errors name the file."""
    try:
        return LatencyProfile.from_dict(json.loads(Path(path).read_text()))
    except (KeyError, TypeError, ValueError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{path}: not a latency profile: {detail}") from error


def measure_profile(
    model_dir: Path,
    frame: pd.DataFrame,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = 100,
) -> LatencyProfile:
    """Times `predict_proba` (preprocessing included) in this process for each batch size.

    Rows are drawn from `frame` in order, cycled when it has fewer rows than a batch. Each batch
    size gets `WARMUP_CALLS` untimed calls, then `repeats` timed ones. The batch sizes take turns,
    call by call, so that a burst of other work on the machine slows them all alike instead of
    skewing one. With the default 100 calls, the p99 is about the second-slowest call.
    """
    _check_batch_sizes(batch_sizes)
    if frame.empty:
        raise ValueError("measure_profile needs at least one row to time")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    predict = load_model(Path(model_dir)).predict_proba
    batches = {size: frame.iloc[np.arange(size) % len(frame)] for size in sorted(batch_sizes)}
    log.info("timing predict_proba on batches of %s rows, %d calls each", list(batches), repeats)
    for batch in batches.values():
        for _ in range(WARMUP_CALLS):
            predict(batch)
    samples_ms: dict[int, list[float]] = {size: [] for size in batches}
    for _ in range(repeats):
        for size, batch in batches.items():
            samples_ms[size].append(_time_call_ms(predict, batch))
    latencies = tuple(_summarise(size, samples) for size, samples in samples_ms.items())
    device = f"cpu ({torch.get_num_threads()} threads)"
    source = f"in-process predict_proba of {model_dir} (preprocessing included; no HTTP)"
    return LatencyProfile(device=device, source=source, batches=latencies)


def _time_call_ms(predict: Callable[[pd.DataFrame], np.ndarray], batch: pd.DataFrame) -> float:
    start = time.perf_counter()
    predict(batch)
    return (time.perf_counter() - start) * 1000


def _summarise(size: int, samples_ms: list[float]) -> BatchLatency:
    p50, p99 = np.percentile(samples_ms, [50, 99])
    log.info("batch %d: p50 %.3f ms, p99 %.3f ms (%.4f ms a row)", size, p50, p99, p50 / size)
    return BatchLatency(size, float(p50), float(p99))


@dataclasses.dataclass(frozen=True)
class CapacityOption:
    """One way to serve the load: a batch size, the replicas it needs, and the arithmetic behind them."""

    batch_size: int  # 1 means no batching
    replicas: int
    per_replica_qps: float  # requests a second one replica serves flat out
    predicted_p99_ms: float
    feasible: bool  # meets the p99 target and, when batching, keeps up with part-full batches
    arithmetic: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CapacityEstimate:
    """Both answers for one target: without batching, and the best batch size (None if none works)."""

    profile: LatencyProfile
    qps: float
    p99_ms: float
    utilisation: float
    max_batch_wait_ms: float
    without_batching: CapacityOption
    batching_options: tuple[CapacityOption, ...]  # every measured batch size > 1, feasible or not
    with_batching: CapacityOption | None  # the feasible batching option with fewest replicas

    @property
    def recommended(self) -> CapacityOption | None:
        """The feasible answer with fewer replicas (a tie goes to no batching: lower latency, less to run)."""
        feasible = [o for o in (self.without_batching, self.with_batching) if o is not None and o.feasible]
        return min(feasible, key=lambda o: (o.replicas, o.batch_size), default=None)

    def explain(self) -> str:
        """The estimate step by step, numbers substituted, ending in a recommendation."""
        lines = [
            f"Capacity for {_num(self.qps)} qps at p99 <= {_num(self.p99_ms)} ms, "
            f"planning for {self.utilisation:.0%} utilisation per replica",
            f"Profile: {self.profile.device}; {self.profile.source}",
            f"A replica is one model-server process on {self.profile.device}; on a GPU profile, replicas = GPUs.",
            "",
            "Without batching (one request per predict call):",
            *(f"  {line}" for line in self.without_batching.arithmetic),
        ]
        if self.batching_options:
            lines += ["", f"With KServe's batcher (flushes at maxBatchSize, or after maxLatency "
                          f"{_num(self.max_batch_wait_ms)} ms, --max-batch-wait-ms):"]
            for option in self.batching_options:
                lines += [f"  maxBatchSize {option.batch_size}:", *(f"    {line}" for line in option.arithmetic)]
        return "\n".join([*lines, "", *self._conclusion()])

    def _conclusion(self) -> list[str]:
        best, plain, batched = self.recommended, self.without_batching, self.with_batching
        if best is None:
            return [
                f"No option meets p99 <= {_num(self.p99_ms)} ms on {self.profile.device}: one request alone takes "
                f"{_ms(plain.predicted_p99_ms)} ms at p99, and more replicas do not make a request faster.",
                "Relax the target, profile a faster device, or make the model cheaper.",
            ]
        if best is plain:
            why = ("batching saves nothing at this load" if batched is not None
                   else "no batch size meets the target at this load")
            return [f"Recommended: {_replicas(plain.replicas)} without batching ({why})."]
        saving = (f"{plain.replicas - best.replicas} fewer than the {plain.replicas} without batching "
                  f"({1 - best.replicas / plain.replicas:.0%} saved)" if plain.feasible
                  else "without batching the target cannot be met")
        return [
            f"Recommended: {_replicas(best.replicas)} with batching: {saving}.",
            f"  KServe batcher: maxBatchSize {best.batch_size}, maxLatency {_num(self.max_batch_wait_ms)} ms.",
        ]


def estimate(
    profile: LatencyProfile,
    qps: float,
    p99_ms: float,
    utilisation: float = 0.6,
    max_batch_wait_ms: float = 10.0,
) -> CapacityEstimate:
    """Replicas needed for `qps` at `p99_ms`, without batching and for each measured batch size.

    `max_batch_wait_ms` is the batcher's `maxLatency`: how long a batch's first request may wait
    for the batch to fill. Errors name the CLI flag, since that is where the values come from.
    """
    _check_inputs(qps, p99_ms, utilisation, max_batch_wait_ms)
    plain = _without_batching(profile.unbatched, qps, p99_ms, utilisation)
    options = tuple(
        _with_batching(profile, batch, qps, p99_ms, utilisation, max_batch_wait_ms)
        for batch in profile.batches if batch.batch_size > 1
    )
    best = min((o for o in options if o.feasible), key=lambda o: (o.replicas, o.batch_size), default=None)
    return CapacityEstimate(profile, qps, p99_ms, utilisation, max_batch_wait_ms, plain, options, best)


def _check_inputs(qps: float, p99_ms: float, utilisation: float, max_batch_wait_ms: float) -> None:
    if not (math.isfinite(qps) and qps > 0):
        raise ValueError(f"--qps must be > 0, got {qps}")
    if not (math.isfinite(p99_ms) and p99_ms > 0):
        raise ValueError(f"--p99-ms must be > 0, got {p99_ms}")
    if not 0 < utilisation <= 1:
        raise ValueError(f"--utilisation must be in (0, 1], got {utilisation}")
    if not (math.isfinite(max_batch_wait_ms) and max_batch_wait_ms >= 0):
        raise ValueError(f"--max-batch-wait-ms must be >= 0, got {max_batch_wait_ms}")


def _without_batching(batch: BatchLatency, qps: float, target_ms: float, utilisation: float) -> CapacityOption:
    """Replicas = ceil(QPS × service time ÷ utilisation), service time = batch-1 p50."""
    s = batch.p50_ms
    load = qps * s / 1000 / utilisation
    replicas = _ceil(load)
    feasible = batch.p99_ms <= target_ms
    arithmetic = (
        f"service time s = batch-1 p50 = {_ms(s)} ms, so one replica serves 1 ÷ {_ms(s)} ms = "
        f"{_rate(1000 / s)} qps",
        f"replicas = ceil({_num(qps)} qps × {_ms(s)} ms ÷ {utilisation:.2f}) = ceil({load:.2f}) = {replicas}",
        f"p99 ≈ batch-1 p99 = {_ms(batch.p99_ms)} ms {_verdict(batch.p99_ms, target_ms)}",
    )
    return CapacityOption(1, replicas, 1000 / s, batch.p99_ms, feasible, arithmetic)


def _with_batching(
    profile: LatencyProfile, batch: BatchLatency, qps: float, target_ms: float, utilisation: float, max_wait_ms: float
) -> CapacityOption:
    """Replicas from full-batch throughput; latency = the first request's wait for the batch + the batch's p99.

    The wait is min((b − 1) ÷ λ, maxLatency); when the deadline comes first, `_part_full` checks
    that the replica count, sized for full batches, still keeps up.
    """
    b, t = batch.batch_size, batch.p50_ms
    throughput = b * 1000 / t
    load = qps / (throughput * utilisation)
    replicas = _ceil(load)
    arrivals = qps / replicas
    fill_ms = (b - 1) / arrivals * 1000
    arithmetic = [
        f"throughput = {b} rows ÷ {_ms(t)} ms (batch-{b} p50) = {_rate(throughput)} qps per replica",
        f"replicas = ceil({_num(qps)} qps ÷ ({_rate(throughput)} qps × {utilisation:.2f})) = "
        f"ceil({load:.2f}) = {replicas}",
        f"arrivals per replica λ = {_num(qps)} qps ÷ {replicas} = {_rate(arrivals)}/s; "
        f"fill wait = ({b} − 1) ÷ {_rate(arrivals)}/s = {_ms(fill_ms)} ms",
    ]
    keeps_up, served = True, batch
    if fill_ms <= max_wait_ms:
        wait_ms = fill_ms
        arithmetic.append(f"  <= maxLatency {_num(max_wait_ms)} ms: batches fill before the batcher's deadline")
    else:
        wait_ms = max_wait_ms
        keeps_up, served, lines = _part_full(profile, arrivals, utilisation, max_wait_ms)
        arithmetic += lines
    predicted = wait_ms + served.p99_ms
    arithmetic.append(
        f"p99 ≈ {_ms(wait_ms)} ms wait + {_ms(served.p99_ms)} ms batch-{served.batch_size} p99 = {_ms(predicted)} ms "
        f"{_verdict(predicted, target_ms)}"
    )
    feasible = keeps_up and predicted <= target_ms
    return CapacityOption(b, replicas, throughput, predicted, feasible, tuple(arithmetic))


def _part_full(
    profile: LatencyProfile, arrivals: float, utilisation: float, max_wait_ms: float
) -> tuple[bool, BatchLatency, list[str]]:
    """Whether a replica keeps up when the batcher flushes at its deadline, before the batch is full.

    Such a batch holds about 1 + λ × maxLatency rows. Latency grows with batch size, so the
    smallest measured batch at least that large bounds its time from above; the replica is then
    busy at most λ × that p50 ÷ rows of the time, which must stay under the target utilisation.
    Returns the verdict, the bounding batch (whose p99 the latency uses) and the arithmetic.
    """
    rows = 1 + arrivals * max_wait_ms / 1000
    bound = next(b for b in profile.batches if b.batch_size >= rows)
    busy = arrivals * bound.p50_ms / 1000 / rows
    keeps_up = busy <= utilisation
    return keeps_up, bound, [
        f"  > maxLatency {_num(max_wait_ms)} ms: batches leave part-full, with about "
        f"1 + {_rate(arrivals)}/s × {_num(max_wait_ms)} ms = {rows:.1f} rows, "
        f"costing at most the batch-{bound.batch_size} latency",
        f"  busy = {_rate(arrivals)}/s × {_ms(bound.p50_ms)} ms (batch-{bound.batch_size} p50) ÷ {rows:.1f} rows "
        f"= {busy:.2f} {'<=' if keeps_up else '>'} {utilisation:.2f}: "
        f"{'keeps up' if keeps_up else 'falls behind, ruled out'}",
    ]


def _ceil(value: float) -> int:
    """ceil that ignores floating-point dust, so 100 × 10 ms ÷ 0.5 is 2 replicas and not 3."""
    return math.ceil(round(value, 9))


def _replicas(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"


def _verdict(latency_ms: float, target_ms: float) -> str:
    if latency_ms <= target_ms:
        return f"<= {_num(target_ms)} ms target: meets it"
    return f"> {_num(target_ms)} ms target: misses it"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _rate(value: float) -> str:
    return f"{value:,.1f}"


def _num(value: float) -> str:
    return f"{value:g}"

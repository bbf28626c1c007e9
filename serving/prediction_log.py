"""Prediction log: each request/response pair the model server answers, kept for drift and feedback.

On a Kubeflow cluster KServe's own logger (InferenceService `spec.predictor.logger`) sends every
request and response as a CloudEvent to the drift service. Locally there is no logger sidecar, so
our `kserve.Model` writes the same CloudEvents to a JSONL file, one structured-mode event a line,
and the same consumer reads both:

    prediction_log = PredictionLogger(PredictionLogConfig(path=Path("runs/predictions.jsonl"),
                                                          inference_service="taxi-fare"))
    ...
    prediction_log.log(request_id, self.name, payload, response)   # in predict(); returns at once
    ...
    prediction_log.close()                                          # at shutdown: flushes

    for event in read_events("runs/predictions.jsonl"):            # oldest first, rotated files too
        event["type"], event["id"], event["modelname"], event.data

The events are what KServe's logger emits (kserve/kserve pkg/logger/worker.go, `sendHttpCloudEvent`,
and handler.go): types `org.kubeflow.serving.inference.request` / `.response`, the request id as
the CloudEvent id of both, a `source` URI, and the extension attributes `inferenceservicename`,
`namespace`, `component`, `endpoint` and `metadata` (the JSON of the forwarded headers; we forward
none, so "{}"). KServe has no attribute for the model name or for a degraded answer, so we add two
of our own, lowercase alphanumeric as the CloudEvents spec requires: `modelname` on every event and
`degraded` (the reason) only when the answer was degraded. A consumer reads both with `.get()`.

Guarantees that callers rely on:

- `log` never waits for the disk: it enqueues the pair and returns; one background thread writes.
  When the bounded queue is full the pair is dropped and counted, never queued without limit.
- Sampling is decided by a hash of the request id (`in_sample`), the same in every process and
  replica, so a request is logged whole (request and response) or not at all, and a feedback label
  joined later by request id finds its pair whenever the pair was kept.
- Lines are JSON: a number that is not finite (NaN, which a gRPC or binary request can carry for a
  missing value, or an infinity) is written as null, never as the bare `NaN` that JSON parsers refuse.
- Lines are whole: a pair is written with one `write` call, never split across two files by
  rotation, and a failed write is cut back to the last whole line. `read_events` treats an
  unterminated last line as a write in progress, and a logger that finds a file ending in a torn
  line (a process that died mid-write) cuts it off before appending.
- Rotation works like `logging.handlers.RotatingFileHandler`: when the next pair would take the
  file past `max_bytes`, path -> path.1 -> ... -> path.N (`backups`), the oldest deleted. A pair
  larger than `max_bytes` gets a file of its own rather than being cut.
- One logger per file: a second logger on the same path, in this process or another (KServe's
  `--workers 2` forks one server per worker), fails at construction instead of rotating the file
  under the first. Give each worker its own path.

Counts of written, dropped and sampled-out events are Prometheus counters in the default registry,
which the KServe server already exposes on /metrics (see `EVENTS_WRITTEN`).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import hashlib
import logging
import math
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from cloudevents.conversion import to_json
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_json
from prometheus_client import Counter

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# The event types and extension attributes of KServe's logger (pkg/logger/worker.go).
REQUEST_EVENT_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT_TYPE = "org.kubeflow.serving.inference.response"
INFERENCE_SERVICE_ATTR = "inferenceservicename"
NAMESPACE_ATTR = "namespace"
COMPONENT_ATTR = "component"
ENDPOINT_ATTR = "endpoint"
METADATA_ATTR = "metadata"
# Ours: KServe's logger knows neither the model nor whether the answer was degraded.
MODEL_NAME_ATTR = "modelname"
DEGRADED_ATTR = "degraded"

# prometheus_client refuses a second metric of the same name in one registry ("Duplicated
# timeseries"), so counters made per logger would break the second logger in a process (a test
# suite, a multi-model server). The counters are therefore made once, here, in the default registry
# that the KServe server serves on /metrics, and each logger writes the series of its model.
# Units are events, two per pair, so written + dropped + sampled out == 2 x calls to `log`.
EVENTS_WRITTEN = Counter(
    "slipway_prediction_log_events_written", "Prediction log events written to the JSONL file.", ["model"]
)
EVENTS_DROPPED = Counter(
    "slipway_prediction_log_events_dropped",
    "Prediction log events lost: queue_full (the writer fell behind), closed (logged after close), "
    "write_failed (not JSON-serializable, or the disk refused them).",
    ["model", "reason"],
)
EVENTS_SAMPLED_OUT = Counter(
    "slipway_prediction_log_events_sampled_out", "Prediction log events skipped by sampling.", ["model"]
)

# How far back the torn-tail check reads at a time; events are far smaller than this.
_SCAN_CHUNK = 64 * 1024


class PredictionLogError(Exception):
    """The prediction log cannot be opened or read; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class PredictionLogConfig:
    """Where the log goes, how much of it to keep, and the identity KServe's logger stamps on events.

    `inference_service`, `namespace`, `component` and `endpoint` are what KServe's agent passes as
    `--inference-service`, `--namespace`, `--component` (predictor, transformer, explainer) and
    `--endpoint` (default or canary); locally there is no namespace, hence "". `source` is the
    CloudEvents source; KServe's agent uses its own address, `http://localhost:9081/`, and ours is
    the model server's default HTTP address.
    """

    path: Path
    inference_service: str
    namespace: str = ""
    component: str = "predictor"
    endpoint: str = "default"
    source: str = "http://localhost:8080/"
    sample_rate: float = 1.0
    max_bytes: int = 64 * MiB
    backups: int = 5
    queue_size: int = 10_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample_rate must be a number from 0 to 1, got {rate!r}")
        for name in ("max_bytes", "backups", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not self.source:
            raise ValueError("source must be a non-empty URI (CloudEvents requires one)")


def in_sample(request_id: str, sample_rate: float) -> bool:
    """Whether the pair of `request_id` is logged at `sample_rate`.

    A sha256 of the id, not `hash()`, which Python salts per process: every replica, restart and
    offline consumer must reach the same decision for the same id.
    """
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < sample_rate * 2**64


@dataclasses.dataclass(frozen=True)
class _Pair:
    request_id: str
    model_name: str
    request: dict[str, Any]
    response: dict[str, Any]
    degraded: str | None
    time: str


class PredictionLogger:
    """Writes request/response pairs as KServe logger CloudEvents to a rotating JSONL file.

    The file is opened (and created, with its folder) here, so a path that cannot be written fails
    at construction, naming the path, not silently on the first request. Usable as a context manager.
    """

    def __init__(self, config: PredictionLogConfig) -> None:
        self.config = config
        self._lock_fd = _lock(config.path)
        try:
            self._fd, self._size = _open_whole(config.path)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._queue: queue.Queue[_Pair | None] = queue.Queue(maxsize=config.queue_size)
        # Makes "not closed, so enqueue" one step, so no pair slips in behind close()'s stop marker.
        self._state = threading.Lock()
        self._closed = False
        # A daemon, so a server killed without close() still exits; close() is what flushes.
        self._writer = threading.Thread(target=self._run, name=f"prediction-log {config.path}", daemon=True)
        self._writer.start()

    def log(
        self,
        request_id: str,
        model_name: str,
        request: dict[str, Any],
        response: dict[str, Any],
        *,
        degraded: str | None = None,
    ) -> None:
        """Queues the request and response events of one answered request, and returns at once.

        `request` and `response` are the JSON-serializable bodies; they are serialized later, on
        the writer thread, so the caller must not change them after this call. `degraded` says why
        the answer was degraded (e.g. features missing from the online store), None if it was not.
        """
        if not in_sample(request_id, self.config.sample_rate):
            EVENTS_SAMPLED_OUT.labels(model=model_name).inc(2)
            return
        time = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        pair = _Pair(request_id, model_name, request, response, degraded, time)
        with self._state:
            if self._closed:
                reason = "closed"
            else:
                try:
                    self._queue.put_nowait(pair)
                    return
                except queue.Full:
                    reason = "queue_full"
        EVENTS_DROPPED.labels(model=model_name, reason=reason).inc(2)

    def close(self) -> None:
        """Writes everything queued, then stops the writer and closes the file. A second call does nothing."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)  # waits only while the writer empties a full queue
        self._writer.join()
        os.fsync(self._fd)
        os.close(self._fd)
        os.close(self._lock_fd)

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        while (pair := self._queue.get()) is not None:
            try:
                self._write(pair)
            except Exception:  # the writer must outlive one bad pair, or logging would stop unnoticed
                log.exception(
                    "prediction log %s: could not write request %s of model %s",
                    self.config.path,
                    pair.request_id,
                    pair.model_name,
                )
                EVENTS_DROPPED.labels(model=pair.model_name, reason="write_failed").inc(2)

    def _write(self, pair: _Pair) -> None:
        lines = b"".join(to_json(event) + b"\n" for event in self._events(pair))
        if self._size and self._size + len(lines) > self.config.max_bytes:
            self._rotate()
        written = 0
        try:
            while written < len(lines):
                written += os.write(self._fd, memoryview(lines)[written:])
        except OSError:
            if written:  # e.g. the disk filled mid-pair: cut back to the last whole line
                os.ftruncate(self._fd, self._size)
            raise
        self._size += written
        EVENTS_WRITTEN.labels(model=pair.model_name).inc(2)

    def _events(self, pair: _Pair) -> tuple[CloudEvent, CloudEvent]:
        config = self.config
        attributes = {
            "id": pair.request_id,
            "source": config.source,
            "time": pair.time,
            "datacontenttype": "application/json",
            INFERENCE_SERVICE_ATTR: config.inference_service,
            NAMESPACE_ATTR: config.namespace,
            COMPONENT_ATTR: config.component,
            ENDPOINT_ATTR: config.endpoint,
            METADATA_ATTR: "{}",
            MODEL_NAME_ATTR: pair.model_name,
        }
        if pair.degraded is not None:
            attributes[DEGRADED_ATTR] = pair.degraded
        return (
            CloudEvent({**attributes, "type": REQUEST_EVENT_TYPE}, _finite(pair.request)),
            CloudEvent({**attributes, "type": RESPONSE_EVENT_TYPE}, _finite(pair.response)),
        )

    def _rotate(self) -> None:
        """path -> path.1 -> ... -> path.N; the old descriptor stays valid until the new file is open."""
        path = self.config.path
        for index in range(self.config.backups - 1, 0, -1):
            if _backup(path, index).exists():
                os.replace(_backup(path, index), _backup(path, index + 1))
        os.replace(path, _backup(path, 1))
        fd = _open_append(path)
        os.close(self._fd)
        self._fd, self._size = fd, 0


def _finite(value: Any) -> Any:
    """`value` with every non-finite float as None: JSON has no NaN or infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def log_files(path: Path | str) -> list[Path]:
    """The files of the log at `path`, oldest first: path.N, ..., path.1, then path itself if present.

    Backups are ordered by their number, not by name, so path.10 comes before path.9.
    """
    path = Path(path)
    numbered = [
        (int(suffix), sibling)
        for sibling in path.parent.glob(f"{path.name}.*")
        if (suffix := sibling.name[len(path.name) + 1 :]).isdigit()
    ]
    files = [sibling for _, sibling in sorted(numbered, reverse=True)]
    return files + [path] if path.exists() else files


def read_events(path: Path | str) -> Iterator[CloudEvent]:
    """Every event of the log at `path`, in the order written, across rotated files.

    An unterminated last line is a write in progress and is not yet an event. Any other line that
    is not a CloudEvent raises `PredictionLogError` naming the file and line number. Reading while
    the logger rotates can miss or repeat a file's events: read a live log for monitoring, and a
    closed one when every event must count.
    """
    for file in log_files(path):
        yield from read_events_of(file)


def follow_events(path: Path | str, stop: threading.Event, poll_seconds: float = 1.0) -> Iterator[CloudEvent]:
    """The events written to the log at `path` from now on, as they come, until `stop` is set.

    What the drift monitor reads locally in place of KServe's logger. It starts at the end of the file (the
    monitor watches what comes, not the past; `read_events` replays the past), or at the start of a file
    that does not exist yet. It follows rotation file by file: when `path` names another file than the one
    being read, that one is read to its end, then the file rotated right after it, found by its inode
    wherever renames have moved it since (the log may rotate several times between two polls). No event
    is lost unless the log rotates more than `backups` times while one file is being read.
    """
    path = Path(path)
    handle = None
    source = path  # the name the file being read had when it was opened, for errors
    pending = b""
    number = 0
    while not stop.is_set():
        if handle is None:
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                handle = _wait_for_new(path, stop, poll_seconds)  # the file the logger creates holds only new events
                continue
            source = path
            number, pending = _skip_written(handle)
        replaced = _replaced(path, handle.fileno())  # before reading: what a rotated file holds then is all it gets
        chunk = handle.read()
        if chunk:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                number += 1
                yield _parse(line + b"\n", source, number)
        if replaced:
            successor = _successor(path, os.fstat(handle.fileno()).st_ino, stop)
            handle.close()
            if successor is None:
                if stop.is_set():
                    return
                log.warning("prediction log %s: rotated more than `backups` times while %s was read; following the "
                            "newest file, the events in between are missed", path, source)
                successor = (_wait_for_new(path, stop, 0.0), path)
            handle, source = successor
            pending, number = b"", 0
        elif not chunk:
            stop.wait(poll_seconds)
    if handle is not None:
        handle.close()


def _wait_for_new(path: Path, stop: threading.Event, poll_seconds: float) -> Any:
    """`path` opened at its start as soon as the logger has created it, or None when `stop` is set first."""
    while not stop.is_set():
        try:
            return path.open("rb")
        except FileNotFoundError:
            stop.wait(poll_seconds or 0.001)
    return None


def _successor(path: Path, inode: int, stop: threading.Event) -> tuple[Any, Path] | None:
    """The file of the log rotated right after the one with `inode`, opened, with its name: a backup or `path`
    itself. None when `inode` is no longer among the log's files (deleted by rotation), or `stop` is set. Renames
    can happen between listing the files and opening one, so the opened file's inode is checked, and the listing
    retried."""
    while not stop.is_set():
        files = log_files(path)
        try:
            inodes = [file.stat().st_ino for file in files]
        except FileNotFoundError:
            continue  # renamed while listed
        if inode not in inodes:
            return None
        index = inodes.index(inode) + 1
        if index == len(files):
            stop.wait(0.001)  # `path` is between its rename and its re-creation
            continue
        try:
            handle = files[index].open("rb")
        except FileNotFoundError:
            continue
        if os.fstat(handle.fileno()).st_ino == inodes[index]:
            return handle, files[index]
        handle.close()
    return None


def read_events_of(file: Path) -> Iterator[CloudEvent]:
    """The events of one file of the log, its unterminated last line (a write in progress) left out."""
    with file.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.endswith(b"\n"):
                break
            yield _parse(line, file, number)


def _skip_written(handle: Any) -> tuple[int, bytes]:
    """Reads past what `handle`'s file holds: returns its whole lines' count (for line numbers in errors) and an
    unterminated last line, a write in progress whose rest is still to come."""
    lines = 0
    tail = b""
    while chunk := handle.read(_SCAN_CHUNK):
        lines += chunk.count(b"\n")
        tail = (tail + chunk)[(tail + chunk).rfind(b"\n") + 1:]
    return lines, tail


def _replaced(path: Path, fd: int) -> bool:
    """Whether `path` now names another file than the open `fd` (the logger rotated it)."""
    try:
        return path.stat().st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _parse(line: bytes, file: Path, number: int) -> CloudEvent:
    try:
        return from_json(line)
    except (GenericException, ValueError) as error:
        raise PredictionLogError(f"{file}:{number}: not a CloudEvent: {error}") from error


def _backup(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _lock(path: Path) -> int:
    """Takes the lock file beside `path`, so that only one logger appends to and rotates `path`."""
    lock_path = path.with_name(f"{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise PredictionLogError(f"cannot write the prediction log {path}: {error}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PredictionLogError(
            f"the prediction log {path} is in use by another logger (lock {lock_path}); "
            "give each server process its own path"
        ) from None
    return fd


def _open_append(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _open_whole(path: Path) -> tuple[int, int]:
    """Opens `path` for appending and cuts off a torn last line; returns the descriptor and the size."""
    try:
        fd = _open_append(path)
    except OSError as error:
        raise PredictionLogError(f"cannot write the prediction log {path}: {error}") from error
    size = os.fstat(fd).st_size
    whole = _whole_lines_length(fd, size)
    if whole < size:
        log.warning(
            "prediction log %s ended in a torn line (%d bytes, from a process stopped mid-write); removed it",
            path,
            size - whole,
        )
        os.ftruncate(fd, whole)
    return fd, whole


def _whole_lines_length(fd: int, size: int) -> int:
    """The length of the file up to and including its last newline."""
    end = size
    while end > 0:
        start = max(0, end - _SCAN_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0

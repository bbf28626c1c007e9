"""The prediction log writes KServe logger CloudEvents whole, in order, sampled by pair, without blocking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from cloudevents.conversion import to_json
from cloudevents.http import CloudEvent
from prometheus_client import REGISTRY

from slipway.serving import prediction_log
from slipway.serving.prediction_log import (
    REQUEST_EVENT_TYPE,
    RESPONSE_EVENT_TYPE,
    PredictionLogConfig,
    PredictionLogError,
    PredictionLogger,
    in_sample,
    log_files,
    read_events,
)


@pytest.fixture
def model() -> str:
    """A model name of this test's own, so counters shared by the process read this test's events only."""
    return f"model-{uuid.uuid4().hex[:8]}"


def events_counted(outcome: str, model: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(f"slipway_prediction_log_events_{outcome}_total", {"model": model, **labels})
    return value or 0.0


def config(tmp_path: Path, **overrides: object) -> PredictionLogConfig:
    return PredictionLogConfig(path=tmp_path / "predictions.jsonl", inference_service="taxi-fare", **overrides)


def assert_whole_pairs(events: list[CloudEvent]) -> list[str]:
    """Every request is followed by its response; returns the request ids in order."""
    ids = [event["id"] for event in events[::2]]
    assert [event["type"] for event in events] == [REQUEST_EVENT_TYPE, RESPONSE_EVENT_TYPE] * len(ids)
    assert [event["id"] for event in events[1::2]] == ids
    return ids


def test_a_pair_round_trips_with_kserve_types_id_extensions_and_bodies(tmp_path: Path, model: str) -> None:
    request = {"instances": [{"trip_miles": 3.2, "company": "Flash Cab\n"}]}
    response = {"predictions": [14.75]}
    cfg = config(tmp_path, namespace="kubeflow-user", endpoint="canary", source="http://taxi-fare.local/")
    with PredictionLogger(cfg) as logger:
        logger.log("req-1", model, request, response, degraded="online features missing")
        logger.log("req-2", model, request, response)

    events = list(read_events(cfg.path))
    assert assert_whole_pairs(events) == ["req-1", "req-2"]
    first_request, first_response = events[0], events[1]
    for event in (first_request, first_response):
        assert event["source"] == "http://taxi-fare.local/"
        assert event["inferenceservicename"] == "taxi-fare"
        assert event["namespace"] == "kubeflow-user"
        assert event["component"] == "predictor"
        assert event["endpoint"] == "canary"
        assert event["metadata"] == "{}"
        assert event["modelname"] == model
        assert event["degraded"] == "online features missing"
        assert event["time"] == first_request["time"] and event["time"].endswith("Z")
    assert (first_request.data, first_response.data) == (request, response)
    assert "degraded" not in events[2].get_attributes(), "an answer that was not degraded carries no flag"

    # The wire shape a consumer of KServe's logger parses: one structured-mode JSON object a line.
    raw = json.loads(cfg.path.read_bytes().splitlines()[0])
    assert raw["specversion"] == "1.0" and raw["datacontenttype"] == "application/json"
    assert raw["type"] == "org.kubeflow.serving.inference.request" and raw["data"] == request
    assert events_counted("written", model) == 4


def test_sampling_keeps_whole_pairs_of_about_the_requested_fraction(tmp_path: Path, model: str) -> None:
    ids = [f"req-{i}" for i in range(2000)]
    cfg = config(tmp_path, sample_rate=0.25)
    with PredictionLogger(cfg) as logger:
        for request_id in ids:
            logger.log(request_id, model, {"id": request_id}, {"prediction": 1.0})

    kept = assert_whole_pairs(list(read_events(cfg.path)))
    assert 400 <= len(kept) <= 600, "2000 x 0.25 = 500, one standard deviation is 19"
    assert kept == [request_id for request_id in ids if in_sample(request_id, 0.25)]
    assert events_counted("sampled_out", model) == 2 * (len(ids) - len(kept))
    assert events_counted("written", model) == 2 * len(kept)


def test_the_sampling_decision_is_the_same_in_another_process(tmp_path: Path) -> None:
    ids = [f"req-{i}" for i in range(200)]
    here = [request_id for request_id in ids if in_sample(request_id, 0.5)]
    code = (
        "from slipway.serving.prediction_log import in_sample\n"
        f"print(','.join(i for i in {ids!r} if in_sample(i, 0.5)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different salt for str hashes than this process
    there = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert there.stdout.strip().split(",") == here


def test_sample_rates_zero_and_one_log_nothing_and_everything(tmp_path: Path, model: str) -> None:
    with PredictionLogger(config(tmp_path / "none", sample_rate=0.0)) as nothing:
        with PredictionLogger(config(tmp_path / "all", sample_rate=1)) as everything:
            for i in range(100):
                nothing.log(f"req-{i}", model, {}, {})
                everything.log(f"req-{i}", model, {}, {})
    assert list(read_events(tmp_path / "none" / "predictions.jsonl")) == []
    assert len(list(read_events(tmp_path / "all" / "predictions.jsonl"))) == 200
    assert events_counted("sampled_out", model) == 200


def test_rotation_keeps_the_newest_backups_whole_and_in_order(tmp_path: Path, model: str) -> None:
    pairs, max_bytes = 300, 8 * 1024
    cfg = config(tmp_path, max_bytes=max_bytes, backups=3)
    with PredictionLogger(cfg) as logger:
        for i in range(pairs):
            logger.log(f"req-{i:05d}", model, {"instances": [[i, 1.5, "x" * 40]]}, {"predictions": [i]})

    files = log_files(cfg.path)
    assert [file.name for file in files] == [f"predictions.jsonl.{n}" for n in (3, 2, 1)] + ["predictions.jsonl"]
    for file in files:
        assert file.stat().st_size <= max_bytes
        assert file.read_bytes().endswith(b"\n"), f"{file.name} ends in a torn line"
    for older, newer in zip(files, files[1:], strict=False):
        first_pair = b"".join(newer.read_bytes().splitlines(keepends=True)[:2])
        assert older.stat().st_size + len(first_pair) > max_bytes, f"{older.name} was rotated before it was full"

    # What survives is exactly the newest pairs, none missing, in the order logged; everything older
    # went with the deleted backups, and every pair was written (the counter says so).
    ids = assert_whole_pairs(list(read_events(cfg.path)))
    first = int(ids[0].removeprefix("req-"))
    assert first > 0, "the test must rotate past its backups"
    assert ids == [f"req-{i:05d}" for i in range(first, pairs)]
    assert events_counted("written", model) == 2 * pairs


def test_concurrent_callers_across_many_rotations_lose_and_tear_nothing(tmp_path: Path, model: str) -> None:
    callers, pairs_each = 4, 150
    cfg = config(tmp_path, max_bytes=4096, backups=200)

    with PredictionLogger(cfg) as logger:

        def call(caller: int) -> None:
            for i in range(pairs_each):
                logger.log(f"c{caller}-{i}", model, {"instances": [[caller, i]]}, {"predictions": [i]})

        threads = [threading.Thread(target=call, args=(caller,)) for caller in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert 10 < len(log_files(cfg.path)) <= cfg.backups, "no backup was deleted: every event must be there"
    ids = assert_whole_pairs(list(read_events(cfg.path)))
    assert sorted(ids) == sorted(f"c{caller}-{i}" for caller in range(callers) for i in range(pairs_each))
    assert events_counted("written", model) == 2 * len(ids)
    for caller in range(callers):
        mine = [request_id for request_id in ids if request_id.startswith(f"c{caller}-")]
        assert mine == [f"c{caller}-{i}" for i in range(pairs_each)], "one caller's pairs stay in its order"


def stall_writer(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Makes the writer thread wait inside serialization; returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def stalled_to_json(event: CloudEvent) -> bytes:
        entered.set()
        release.wait(timeout=10)
        return to_json(event)

    monkeypatch.setattr(prediction_log, "to_json", stalled_to_json)
    return entered, release


def test_a_full_queue_drops_and_counts_pairs_instead_of_blocking(
    tmp_path: Path, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = stall_writer(monkeypatch)
    cfg = config(tmp_path, queue_size=2)
    logger = PredictionLogger(cfg)
    try:
        logger.log("req-0", model, {}, {})
        assert entered.wait(timeout=5), "the writer took the first pair and is now stalled"
        caller = threading.Thread(target=lambda: [logger.log(f"req-{i}", model, {}, {}) for i in range(1, 6)])
        caller.start()
        caller.join(timeout=5)
        assert not caller.is_alive(), "log() blocked on a full queue"
        assert events_counted("dropped", model, reason="queue_full") == 6, "pairs 3, 4 and 5 did not fit"
    finally:
        release.set()
        logger.close()
    assert assert_whole_pairs(list(read_events(cfg.path))) == ["req-0", "req-1", "req-2"]
    assert events_counted("written", model) == 6


def test_close_writes_everything_queued_then_later_pairs_are_dropped(
    tmp_path: Path, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = stall_writer(monkeypatch)
    cfg = config(tmp_path)
    logger = PredictionLogger(cfg)
    for i in range(200):
        logger.log(f"req-{i}", model, {"i": i}, {"p": i})
    assert entered.wait(timeout=5)
    threading.Timer(0.1, release.set).start()  # close() starts while ~199 pairs are still queued
    logger.close()

    assert assert_whole_pairs(list(read_events(cfg.path))) == [f"req-{i}" for i in range(200)]
    assert events_counted("written", model) == 400
    logger.log("late", model, {}, {})
    logger.close()
    assert events_counted("dropped", model, reason="closed") == 2
    assert len(list(read_events(cfg.path))) == 400


def test_an_unserializable_body_is_dropped_and_counted_and_the_writer_goes_on(tmp_path: Path, model: str) -> None:
    cfg = config(tmp_path)
    with PredictionLogger(cfg) as logger:
        logger.log("req-bad", model, {"instances": [object()]}, {})
        logger.log("req-good", model, {}, {})
    assert assert_whole_pairs(list(read_events(cfg.path))) == ["req-good"]
    assert events_counted("dropped", model, reason="write_failed") == 2


def test_read_events_goes_oldest_backup_first_by_number_not_by_name(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    for age in range(11):  # path.10 holds the oldest event, "0"; path itself the newest, "10"
        file = path if age == 10 else path.with_name(f"predictions.jsonl.{10 - age}")
        event = CloudEvent({"type": REQUEST_EVENT_TYPE, "source": "test", "id": str(age)}, {})
        file.write_bytes(to_json(event) + b"\n")
    (tmp_path / "predictions.jsonl.lock").touch()
    (tmp_path / "predictions.jsonl.1.gz").write_bytes(b"\x1f\x8b")
    assert [event["id"] for event in read_events(path)] == [str(age) for age in range(11)]


def test_a_malformed_line_is_reported_with_its_file_and_line_number(tmp_path: Path, model: str) -> None:
    cfg = config(tmp_path)
    with PredictionLogger(cfg) as logger:
        logger.log("req-1", model, {}, {})
    backup = cfg.path.with_name("predictions.jsonl.1")
    backup.write_bytes(cfg.path.read_bytes().splitlines(keepends=True)[0] + b'{"instances": [1, 2]}\n')
    with pytest.raises(PredictionLogError, match=f"^{backup}:2: not a CloudEvent"):
        list(read_events(cfg.path))


def test_a_torn_last_line_is_not_read_and_is_cut_off_before_appending(tmp_path: Path, model: str) -> None:
    cfg = config(tmp_path)
    with PredictionLogger(cfg) as logger:
        logger.log("req-1", model, {}, {})
    with cfg.path.open("ab") as file:
        file.write(b'{"specversion": "1.0", "id": "req-ha')  # a write in progress, or a process that died
    assert assert_whole_pairs(list(read_events(cfg.path))) == ["req-1"]

    with PredictionLogger(cfg) as logger:
        logger.log("req-2", model, {}, {})
    assert assert_whole_pairs(list(read_events(cfg.path))) == ["req-1", "req-2"]


def test_bad_configuration_fails_at_construction_naming_the_field_or_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^sample_rate must be a number from 0 to 1, got 1\.5$"):
        config(tmp_path, sample_rate=1.5)
    with pytest.raises(ValueError, match=r"^sample_rate must be a number from 0 to 1, got '0\.5'$"):
        config(tmp_path, sample_rate="0.5")
    with pytest.raises(ValueError, match=r"^max_bytes must be a whole number of at least 1, got 0$"):
        config(tmp_path, max_bytes=0)

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    blocked = PredictionLogConfig(path=not_a_folder / "predictions.jsonl", inference_service="taxi-fare")
    with pytest.raises(PredictionLogError, match=f"^cannot write the prediction log {blocked.path}: "):
        PredictionLogger(blocked)

    with PredictionLogger(config(tmp_path)):
        with pytest.raises(PredictionLogError, match="predictions.jsonl is in use by another logger"):
            PredictionLogger(config(tmp_path))


def test_a_number_that_is_not_finite_is_written_as_null_so_every_line_is_json(tmp_path: Path, model: str) -> None:
    """A gRPC or binary V2 request carries a missing value as NaN; a bare NaN in a line is not JSON."""
    request = {"inputs": {"fare": [12.5, float("nan")], "trip_miles": (float("inf"), 1.0)}}
    with PredictionLogger(config(tmp_path)) as logger:
        logger.log("req-nan", model, request, {"predictions": [0.5, float("-inf")]})

    def refuse(constant: str) -> None:
        raise AssertionError(f"a bare {constant} in the log")

    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    data = [json.loads(line, parse_constant=refuse)["data"] for line in lines]
    assert data == [{"inputs": {"fare": [12.5, None], "trip_miles": [None, 1.0]}}, {"predictions": [0.5, None]}]

"""The online drift monitor: windows of logged traffic against the training data, levels as Prometheus metrics."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from conftest import free_port, wait_until_answers
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from slipway.components.ingestion import enforce_types, read_table
from slipway.components.model_artifact import load_model
from slipway.problem import load_problem
from slipway.serving.deploy import json_instances
from slipway.serving.drift_monitor import DriftMonitor, MonitorConfig, MonitorConfigError, request_columns
from slipway.serving.drift_service import drift_app, feed
from slipway.serving.prediction_log import (
    REQUEST_EVENT_TYPE,
    PredictionLogConfig,
    PredictionLogger,
    follow_events,
    read_events,
)

PROBLEM = load_problem("chicago_taxi")
FEATURES = list(PROBLEM.features.all)


@pytest.fixture(scope="module")
def train(taxi_splits: tuple[Path, Path]) -> pd.DataFrame:
    return pd.read_parquet(taxi_splits[0])


@pytest.fixture(scope="module")
def config(taxi_splits: tuple[Path, Path]) -> MonitorConfig:
    return MonitorConfig(reference=str(taxi_splits[0]))


def write_log(path: Path, frame: pd.DataFrame, rows_per_request: int = 1, **settings) -> list[str]:
    """`frame`'s rows as requests through the real prediction logger (as `slipway serve` logs them); the ids."""
    ids = []
    with PredictionLogger(PredictionLogConfig(path=path, inference_service="taxi", **settings)) as logger:
        for start in range(0, len(frame), rows_per_request):
            chunk = frame.iloc[start:start + rows_per_request]
            ids.append(uuid.uuid4().hex)
            logger.log(ids[-1], "chicago_taxi", {"instances": json_instances(chunk[FEATURES])},
                       {"predictions": [0.3] * len(chunk)})
    return ids


def metric(registry_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(registry_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name}{labels} in the metrics")


def test_traffic_like_the_training_data_stays_none_window_after_window(config, train, tmp_path) -> None:
    # A resample of the reference itself: any level but none would be a false alarm. Requests of 4 rows, so a
    # window is whole requests (1,000 rows exactly here).
    write_log(tmp_path / "log.jsonl", train.sample(5000, replace=True, random_state=7), rows_per_request=4)
    monitor = DriftMonitor(config)
    windows = feed(monitor, read_events(tmp_path / "log.jsonl"))
    assert [w.rows for w in windows] == [1000] * 5
    assert {w.level for w in windows} == {"none"}
    # Without the noise guard, sampling noise alone would put the many-category `company` near the warning band.
    company = next(f for f in windows[0].features if f.feature == "company")
    assert company.psi < company.noise_psi and company.noise_psi > 0.1


def test_shifted_fares_are_critical_and_raise_the_alert_in_the_metrics(config, train, tmp_path) -> None:
    shifted = train.sample(1000, random_state=3).assign(fare=lambda f: f.fare * 1.5)
    write_log(tmp_path / "log.jsonl", shifted)
    monitor = DriftMonitor(config)
    [window] = feed(monitor, read_events(tmp_path / "log.jsonl"))
    moved = {f.feature: f.level for f in window.features if f.level != "none"}
    assert moved == {"fare": "critical"}
    assert window.alert and "fare" in window.line() and "ALERT" in window.line()
    text = TestClient(drift_app(monitor)).get("/metrics").text
    assert metric(text, "slipway_drift_level") == 2
    assert metric(text, "slipway_drift_alert") == 1
    assert metric(text, "slipway_drift_feature_level", feature="fare") == 2
    assert metric(text, "slipway_drift_feature_level", feature="company") == 0
    assert metric(text, "slipway_drift_psi", feature="fare") == pytest.approx(window.features[0].psi)


def test_data2_moves_the_pickup_location_as_the_batch_drift_step_found(config, taxi_csv, tmp_path) -> None:
    raw = read_table(taxi_csv.with_name("data2.csv"), "data2.csv")
    columns = [c for c in PROBLEM.columns if c in raw.columns]
    batch = enforce_types(raw[columns], dataclasses.replace(PROBLEM, columns={c: PROBLEM.columns[c] for c in columns}),
                          "data2.csv")
    write_log(tmp_path / "log.jsonl", batch.head(2000))
    windows = feed(DriftMonitor(config), read_events(tmp_path / "log.jsonl"))
    assert [w.level for w in windows] == ["critical", "critical"]
    for window in windows:
        critical = {f.feature for f in window.features if f.level == "critical"}
        assert {"pickup_latitude", "pickup_longitude", "pickup_community_area"} <= critical


def test_a_window_of_all_null_values_is_insufficient_data_not_a_crash(config, train, tmp_path) -> None:
    blank = train.sample(1000, random_state=1).assign(trip_miles=np.nan)
    write_log(tmp_path / "log.jsonl", blank)
    monitor = DriftMonitor(config)
    [window] = feed(monitor, read_events(tmp_path / "log.jsonl"))
    miles = next(f for f in window.features if f.feature == "trip_miles")
    assert miles.level == "insufficient data" and "missing in the current data" in miles.reason
    assert window.level == "none"
    text = TestClient(drift_app(monitor)).get("/metrics").text
    assert metric(text, "slipway_drift_feature_level", feature="trip_miles") == -1


def test_the_service_takes_kserve_logger_events_and_refuses_what_is_not_one(config, train) -> None:
    monitor = DriftMonitor(MonitorConfig(reference=config.reference, window_rows=200, min_rows=100,
                                         model_name="chicago_taxi"))
    client = TestClient(drift_app(monitor))
    assert client.get("/drift").status_code == 404
    rows = json_instances(train.sample(200, random_state=5)[FEATURES].assign(fare=lambda f: f.fare * 3))
    for index in range(0, 200, 50):
        event = CloudEvent({"type": REQUEST_EVENT_TYPE, "source": "http://localhost:9081/", "id": f"r{index}",
                            "inferenceservicename": "taxi", "modelname": "chicago_taxi"},
                           {"instances": rows[index:index + 50]})
        headers, body = to_binary(event) if index % 100 else to_structured(event)  # KServe's logger: binary
        assert client.post("/", headers=headers, content=body).status_code == 202
    other = CloudEvent({"type": REQUEST_EVENT_TYPE, "source": "x", "modelname": "another"}, {"instances": rows})
    assert client.post("/", headers=to_binary(other)[0], content=to_binary(other)[1]).status_code == 202
    drift = client.get("/drift").json()
    assert drift["window"] == 1 and drift["rows"] == 200 and drift["level"] == "critical"
    bad = client.post("/", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not a CloudEvent" in bad.json()["detail"]
    text = client.get("/metrics").text
    assert metric(text, "slipway_drift_events_skipped_total", reason="other_model") == 1
    assert metric(text, "slipway_drift_rows_total") == 200


@pytest.mark.parametrize(("body", "expected"), [
    ({"instances": [{"fare": 3.5, "company": "Flash Cab"}, {"fare": None}]},
     {"fare": [3.5, None], "company": ["Flash Cab", None]}),
    ({"inputs": [{"name": "fare", "datatype": "FP64", "shape": [2], "data": [3.5, 4.0]}]}, {"fare": [3.5, 4.0]}),
    ({"inputs": {"fare": [1.0], "company": ["A"]}}, {"fare": [1.0], "company": ["A"]}),
])
def test_v1_and_v2_request_bodies_give_columns_of_the_monitored_features(body, expected) -> None:
    columns = request_columns(body, FEATURES)
    assert {k: v for k, v in columns.items() if k in expected} == expected
    assert all(v == [None] * len(expected["fare"]) for k, v in columns.items() if k not in expected)


@pytest.mark.parametrize(("body", "message"), [
    (["a list"], "not a V1 or V2 JSON object"),
    ({"rows": []}, "neither `instances` (V1) nor `inputs` (V2)"),
    ({"instances": [1, 2]}, "not a list of objects"),
    ({"inputs": {"fare": [1.0, 2.0], "trip_miles": [1.0]}}, "different lengths [1, 2]"),
])
def test_a_request_body_of_another_shape_is_refused_with_what_it_lacks(body, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        request_columns(body, FEATURES)


def test_a_request_of_entity_ids_only_is_not_windowed() -> None:
    assert request_columns({"instances": [{"trip_id": 1}]}, FEATURES) is None


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("window_rows: 10\n", "reference: required"),
    ("reference: x.parquet\nwindow: 10\n", "unknown setting(s) ['window']"),
    ("reference: x.parquet\nalert_level: none\n", "alert_level: expected one of ['warning', 'critical']"),
    ("reference: x.parquet\nlabels: labels.csv\n", "baseline_auc: required with labels"),
    ("reference: x.parquet\nwindow_rows: 50\n", "min_rows (100) is larger than window_rows (50)"),
    ("reference: x.parquet\nmax_drop_percent: 150\n", "max_drop_percent"),
    ("- a\n- list\n", "expected a mapping of settings"),
])
def test_a_bad_config_names_the_file_and_the_setting(tmp_path, yaml_text, message) -> None:
    (tmp_path / "monitor.yaml").write_text(yaml_text)
    with pytest.raises(MonitorConfigError, match=r"monitor\.yaml") as error:
        MonitorConfig.load(tmp_path / "monitor.yaml")
    assert message in str(error.value)


def test_a_reference_without_the_problems_features_is_named(tmp_path) -> None:
    pd.DataFrame({"fare": [1.0, 2.0]}).to_parquet(tmp_path / "ref.parquet")
    with pytest.raises(MonitorConfigError, match=r"ref\.parquet: no column\(s\) \['trip_miles'"):
        DriftMonitor(MonitorConfig(reference=str(tmp_path / "ref.parquet")))


def test_following_the_log_sees_every_new_event_once_across_rotations(train, tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    past = write_log(log, train.head(3))  # written before the follower starts: not followed
    stop = threading.Event()
    seen: list[str] = []
    follower = threading.Thread(target=lambda: seen.extend(e["id"] for e in follow_events(log, stop, 0.01)))
    follower.start()
    while not seen:  # until the follower is at the end of the file: a request logged now is one it sees
        write_log(log, train.head(1))
        time.sleep(0.2)
    time.sleep(0.2)
    assert seen and not set(past) & set(seen)
    seen.clear()
    ids = write_log(log, train.head(60), max_bytes=20_000, backups=20)  # rotates every few requests
    deadline = time.monotonic() + 10
    while len(seen) < 2 * len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    follower.join()
    assert len(list(tmp_path.glob("log.jsonl.*[0-9]"))) > 2, "the log must have rotated for this test to mean much"
    assert seen == [i for i in ids for _ in range(2)]


@pytest.fixture
def monitor_process(config, tmp_path) -> Iterator[dict]:
    (tmp_path / "monitor.yaml").write_text(f"reference: {config.reference}\nwindow_rows: 500\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "slipway", "monitor", "--config", str(tmp_path / "monitor.yaml"),
                                "--prediction-log", str(tmp_path / "log.jsonl"), "--port", str(port),
                                "--host", "127.0.0.1"])
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", timeout_s=60)
        yield {"url": f"http://127.0.0.1:{port}", "log": tmp_path / "log.jsonl"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_slipway_monitor_follows_a_servers_log_and_alerts_on_prometheus(monitor_process, train) -> None:
    write_log(monitor_process["log"], train.sample(500, random_state=9).assign(fare=lambda f: f.fare * 1.5))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = httpx.get(f"{monitor_process['url']}/drift")
        if answer.status_code == 200:
            break
        time.sleep(0.2)
    assert answer.json()["level"] == "critical"
    text = httpx.get(f"{monitor_process['url']}/metrics").text
    assert metric(text, "slipway_drift_alert") == 1


def test_slipway_monitor_replay_prints_every_window_and_exits_with_the_worst(config, train, tmp_path) -> None:
    write_log(tmp_path / "log.jsonl", pd.concat([train.sample(500, random_state=1),
                                                 train.sample(500, random_state=2).assign(fare=lambda f: f.fare * 2),
                                                 train.sample(150, random_state=3)]))
    (tmp_path / "monitor.yaml").write_text(f"reference: {config.reference}\nwindow_rows: 500\n")
    done = subprocess.run([sys.executable, "-m", "slipway", "monitor", "--config", str(tmp_path / "monitor.yaml"),
                           "--prediction-log", str(tmp_path / "log.jsonl"), "--replay"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("window 1: 500 rows") and lines[0].endswith(": none")
    assert lines[1].startswith("window 2: 500 rows") and "fare" in lines[1] and "critical ALERT" in lines[1]
    assert lines[2].startswith("window 3: 150 rows")  # the rest of the log, enough rows to measure
    assert lines[-1] == "3 window(s) of 500 rows; worst: critical"


def test_slipway_monitor_replay_of_too_short_a_log_says_there_is_no_window(config, train, tmp_path) -> None:
    write_log(tmp_path / "log.jsonl", train.head(20))
    (tmp_path / "monitor.yaml").write_text(f"reference: {config.reference}\n")
    done = subprocess.run([sys.executable, "-m", "slipway", "monitor", "--config", str(tmp_path / "monitor.yaml"),
                           "--prediction-log", str(tmp_path / "log.jsonl"), "--replay"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "fewer than min_rows (100) request rows" in done.stderr


def test_the_models_live_scores_are_a_prediction_row_against_its_scores_on_the_reference(
    taxi_model: Path, taxi_training_sets: tuple[Path, Path], tmp_path: Path
) -> None:
    # The reference is the training set the pipeline registers: it holds the Feast features the model reads.
    config = MonitorConfig(reference=str(taxi_training_sets[0]), model=str(taxi_model), window_rows=1000)
    rows = pd.read_parquet(taxi_training_sets[0]).sample(2000, random_state=4)
    scores = load_model(taxi_model).predict_proba(rows)
    # Window 1: the model's own answers. Window 2: the same requests answered as if the serving path had lost a
    # feature (every score pulled to the middle): the inputs did not move, the answers did.
    log = tmp_path / "log.jsonl"
    with PredictionLogger(PredictionLogConfig(path=log, inference_service="taxi")) as logger:
        for index, (row, score) in enumerate(zip(json_instances(rows[FEATURES]), scores, strict=True)):
            answered = score if index < 1000 else 0.5 + (score - 0.5) * 0.3
            logger.log(f"r{index}", "chicago_taxi", {"instances": [row]}, {"predictions": [float(answered)]})
            logger.log(f"degraded{index}", "chicago_taxi", {"instances": []}, {"predictions": [0.99]},
                       degraded="model-error")  # the fallback's answers are not the model's: left out
    monitor = DriftMonitor(config)
    first, second = feed(monitor, read_events(log))
    assert first.features[-1].feature == "prediction" and first.level == "none"
    prediction = second.features[-1]
    assert prediction.level == "critical" and second.level == "critical"
    assert {f.feature for f in second.features if f.level != "none"} == {"prediction"}


def test_a_model_that_reads_columns_the_reference_lacks_is_named(taxi_model: Path, taxi_splits, tmp_path) -> None:
    with pytest.raises(MonitorConfigError, match=r"reads column\(s\) \['pickup_community_area_stats__"):
        DriftMonitor(MonitorConfig(reference=str(taxi_splits[0]), model=str(taxi_model)))

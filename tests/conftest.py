"""Shared fixtures: real servers on 127.0.0.1 that the storage and ingest tests read from and write to.

The servers are stand-ins that speak the real protocols (REFERENCE.md, "Storage and cluster
stand-ins"): moto for the S3 API (what the minio client talks to in KFP's artifact store),
gcp-storage-emulator for GCS (reached through `STORAGE_EMULATOR_HOST`), and `http.server` for
http(s) URIs. Each starts once per test session on a free port, only when a test asks for it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import requests

from slipway import logs
from slipway.sample_data import fetch_sample
from slipway.serving.process import free_ports
from slipway.storage import StorageConfig

logs.disable_telemetry()  # before any test imports mlflow: no calls home from the suite

S3_BUCKET = "slipway-artifacts"
GS_BUCKET = "slipway-models"
MiB = 1024 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes, so that no layer can shortcut them."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(folder: Path) -> list[str]:
    """Every name in `folder`, hidden ones included, to catch a leftover temporary file."""
    return sorted(path.name for path in folder.iterdir())


# --- servers -------------------------------------------------------------------------------


def wait_until_answers(url: str, timeout_s: float = 10.0) -> None:
    """Poll `url` until any HTTP answer comes back; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s} s") from None
            time.sleep(0.02)


def free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="session")
def s3_config() -> Iterator[StorageConfig]:
    """An S3 API (moto, in memory) with bucket S3_BUCKET, and the config that reaches it."""
    from minio import Minio
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        wait_until_answers(endpoint)
        config = StorageConfig(
            s3_endpoint=endpoint,
            s3_access_key="slipway",
            s3_secret_key="slipway-secret",
            s3_region="us-east-1",
        )
        Minio(f"{host}:{port}", "slipway", "slipway-secret", secure=False).make_bucket(S3_BUCKET)
        yield config
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A GCS emulator (in memory) with bucket GS_BUCKET, and STORAGE_EMULATOR_HOST pointing at it.

    Nothing else is configured: google-cloud-storage itself uses anonymous credentials and
    no project when STORAGE_EMULATOR_HOST is set, which is what these tests rely on.
    """
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=GS_BUCKET)
    server.start()
    try:
        host = f"http://127.0.0.1:{port}"
        wait_until_answers(host)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", host)
            yield host
    finally:
        server.stop()


class _FileServer(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, plus two broken paths: a server error and a body cut short."""

    def do_GET(self) -> None:
        if self.path == "/broken":
            self.send_error(500)
        elif self.path == "/cut-short":
            self.send_response(200)
            self.send_header("Content-Length", str(4 * MiB))
            self.end_headers()
            self.wfile.write(payload(64 * 1024))
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTP server on a folder: yields its base URL and the folder it serves."""
    root = tmp_path_factory.mktemp("http-root")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_FileServer, directory=str(root))
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        wait_until_answers(base)
        yield base, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)



@contextlib.contextmanager
def running_redis(root: Path, options: Sequence[str] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `redis-server` on 127.0.0.1, nothing persisted, with more `options` (e.g. `--requirepass`):
    yields ("127.0.0.1:<port>", its process).

    The cluster's online feature store is Redis, so its tests run against the real server and fail,
    not skip, when it is absent: `make test` installs Debian's redis-server first. The probe is a
    raw PING, so the fixture does not depend on the Python client the code under test uses. A
    test may stop the process itself (the store going away); it is reaped here either way.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    port = free_port()
    command = [binary, *options, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with (root / "server.log").open("wb") as log:
        server = subprocess.Popen(command + ["--dir", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(port):
            if server.poll() is not None:
                log_tail = (root / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"redis-server exited with status {server.returncode}:\n{log_tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not answer PING within 10 s")
            time.sleep(0.02)
        yield f"127.0.0.1:{port}", server
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for the session (see `running_redis`): yields its address."""
    with running_redis(tmp_path_factory.mktemp("redis-server")) as (address, _):
        yield address


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # up, with a password or without
    except OSError:
        return False



@pytest.fixture(scope="session")
def taxi_csv() -> Path:
    """The real sample: 10,000 Chicago taxi trips (fetched once from the tfx wheel, sha256-verified)."""
    return fetch_sample()["data.csv"]


@pytest.fixture(scope="session")
def taxi_splits(taxi_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample ingested once: (train.parquet, eval.parquet)."""
    from slipway.components.ingestion import ingest_source
    from slipway.problem import load_problem

    out = tmp_path_factory.mktemp("ingested")
    ingest_source(str(taxi_csv), load_problem("chicago_taxi"), out / "train.parquet", out / "eval.parquet")
    return out / "train.parquet", out / "eval.parquet"


@pytest.fixture(scope="session")
def taxi_training_sets(taxi_splits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The splits as the training pipeline feeds them to the model: each trip joined point in time with its
    Feast features (the aggregate tables of train + eval, a local store, `training_set`), once per session
    (about half a minute: Feast's file offline store). (train.parquet, eval.parquet)."""
    from slipway.components.feature_store import local_store, write_training_sets
    from slipway.problem import load_problem

    problem = load_problem("chicago_taxi")
    out = tmp_path_factory.mktemp("training-sets")
    train, evaluation = write_training_sets(local_store(taxi_splits, problem, out / "feature_repo"), problem,
                                            taxi_splits, out)
    return train, evaluation


@pytest.fixture(scope="session")
def taxi_model(taxi_training_sets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLP trained once on the sample's training sets in this process (a few epochs): the model directory."""
    from slipway.components.train_config import TrainConfig
    from slipway.components.trainer import train
    from slipway.problem import load_problem

    out = tmp_path_factory.mktemp("model")
    # A few epochs of small batches: enough steps for confident scores (eval AUC 0.93, some above 0.8), in a second.
    train(*taxi_training_sets, load_problem("chicago_taxi"), TrainConfig(epochs=3, batch_size=64), out / "model",
          out / "checkpoints")
    return out / "model"


@contextlib.contextmanager
def running_mlflow_server(root: Path, artifacts_destination: str, env: dict[str, str]) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend in `root`, artifacts proxied to `artifacts_destination`), run
    with exactly `env`: yields its URL once it answers, stops it (and every process it started) after.

    Job execution is turned off: it would start seven huey worker processes that tracking never
    uses and double the start-up (about 6 s without it, 12 s with). The server runs in its own
    process group because it is a tree (the CLI, then uvicorn): stopping only the CLI can leave
    the rest running after the tests.
    """
    import os
    import signal
    import sys

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination",
               artifacts_destination]
    with (root / "server.log").open("wb") as log:
        server = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                  env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                log_tail = (root / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server exited with status {server.returncode}:\n{log_tail}")
            try:
                wait_until_answers(f"{url}/health", timeout_s=0.5)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server at {url} did not answer within 90 s") from None
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # whatever of the tree outlived the CLI, or a CLI that hung
        server.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server`, artifacts served through it into a local folder: yields its URL."""
    import os

    root = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(root, str(root / "artifacts"), dict(os.environ)) as url:
        yield url

"""MLflow tracking: a training run's params, curves, lineage and model, read back through the MLflow client."""

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
import torch
from conftest import files_in
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from slipway.components.model_artifact import METADATA_FILE, WEIGHTS_FILE
from slipway.components.tracking import TrackingConfig, TrainingRun, lineage_tags

DATA_SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
PARAMS = {"epochs": 3, "batch_size": 512, "optimizer": {"name": "adamw", "lr": 0.01}}
TRAIN_LOSS = [0.69, 0.52, 0.47]


def model_dir(folder: Path) -> Path:
    """A small model artifact with real files: safetensors weights and the JSON beside them."""
    folder.mkdir()
    save_file({"linear.weight": torch.randn(1, 4), "linear.bias": torch.zeros(1)}, str(folder / WEIGHTS_FILE))
    (folder / METADATA_FILE).write_text(json.dumps({"architecture": {"name": "logistic_regression"}}))
    return folder


def record_training(config: TrackingConfig, model: Path) -> str:
    """What the trainer does on rank 0: one run with per-epoch metrics, a summary and the model."""
    tags = lineage_tags(DATA_SHA256, "training-20260101-120000")
    with TrainingRun.start(config, "train", PARAMS, tags) as run:
        for epoch, loss in enumerate(TRAIN_LOSS):
            run.log_epoch(epoch, {"train_loss": loss, "eval_auc": 0.8 + epoch / 100})
        run.log_summary({"final_eval_auc": 0.82})
        run.log_model_dir(model)
    return run.run_id


def assert_recorded(client: MlflowClient, run_id: str) -> None:
    recorded = client.get_run(run_id)
    assert recorded.info.status == "FINISHED" and recorded.info.run_name == "train"
    assert recorded.data.params == {
        "epochs": "3",
        "batch_size": "512",
        "optimizer.name": "adamw",
        "optimizer.lr": "0.01",
    }
    history = sorted((point.step, point.value) for point in client.get_metric_history(run_id, "train_loss"))
    assert history == list(enumerate(TRAIN_LOSS))
    assert recorded.data.metrics["final_eval_auc"] == 0.82
    tags = recorded.data.tags
    assert tags["slipway.data_sha256"] == DATA_SHA256
    assert tags["slipway.pipeline_run_id"] == "training-20260101-120000"
    assert tags["slipway.version.mlflow"] == mlflow.__version__
    assert tags["slipway.version.torch"] == torch.__version__
    assert "slipway.git_commit" in tags
    assert sorted(item.path for item in client.list_artifacts(run_id, "model")) == [
        f"model/{METADATA_FILE}",
        f"model/{WEIGHTS_FILE}",
    ]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    """One embedded store for the module: a new SQLite store runs MLflow's migrations (about 2 s)."""
    return TrackingConfig.embedded(tmp_path_factory.mktemp("pipeline-root") / "mlflow")


def test_a_run_in_the_embedded_store_keeps_params_curves_lineage_and_the_model(
    embedded: TrackingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a SQLite store without an artifact location would write ./mlruns
    model = model_dir(tmp_path / "model")
    run_id = record_training(embedded, model)

    client = MlflowClient(embedded.tracking_uri)
    assert_recorded(client, run_id)
    artifacts = Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path))
    store = Path(unquote(urlparse(embedded.artifact_location).path))
    assert artifacts.is_relative_to(store) and store.name == "artifacts" and store.parent.name == "mlflow"
    assert (artifacts / "model" / WEIGHTS_FILE).read_bytes() == (model / WEIGHTS_FILE).read_bytes()
    assert not (tmp_path / "mlruns").exists()


def test_a_failing_training_body_marks_the_run_failed_and_keeps_what_it_logged(embedded: TrackingConfig) -> None:
    with pytest.raises(RuntimeError, match="loss diverged"):
        with TrainingRun.start(embedded, "diverges", {"lr": 10.0}, {}) as run:
            run.log_epoch(0, {"train_loss": 0.7})
            run.log_epoch(1, {"train_loss": 4.2e6})
            raise RuntimeError("loss diverged")

    client = MlflowClient(embedded.tracking_uri)
    recorded = client.get_run(run.run_id)
    assert recorded.info.status == "FAILED" and recorded.info.end_time is not None
    assert [point.value for point in client.get_metric_history(run.run_id, "train_loss")] == [0.7, 4.2e6]


def test_a_restarted_job_resumes_its_run_instead_of_starting_another(embedded: TrackingConfig) -> None:
    with pytest.raises(RuntimeError, match="preempted"):
        with TrainingRun.start(embedded, "preempted", {"epochs": 2}, {}) as first:
            first.log_epoch(0, {"train_loss": 0.7})
            raise RuntimeError("preempted")

    with TrainingRun.resume(embedded, first.run_id) as resumed:
        assert MlflowClient(embedded.tracking_uri).get_run(first.run_id).info.status == "RUNNING"
        resumed.log_epoch(1, {"train_loss": 0.5})

    client = MlflowClient(embedded.tracking_uri)
    recorded = client.get_run(first.run_id)
    assert resumed.run_id == first.run_id and recorded.info.status == "FINISHED"
    assert recorded.data.params == {"epochs": "2"}
    assert [(point.step, point.value) for point in client.get_metric_history(first.run_id, "train_loss")] == [
        (0, 0.7),
        (1, 0.5),
    ]


def test_logging_a_missing_model_directory_fails_rather_than_record_an_empty_folder(
    embedded: TrackingConfig, tmp_path: Path
) -> None:
    # MLflow itself accepts a missing directory and lists an empty "model" folder on the run.
    with TrainingRun.start(embedded, "no-model", {}, {}) as run:
        with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'}: no such model directory to log to MLflow"):
            run.log_model_dir(tmp_path / "absent")
    assert MlflowClient(embedded.tracking_uri).list_artifacts(run.run_id) == []


def test_the_uri_given_wins_then_the_environment_then_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert TrackingConfig.resolve("http://given:5000", tmp_path).tracking_uri == "http://given:5000"
    assert TrackingConfig.resolve("", tmp_path, "taxi") == TrackingConfig("http://from-env:5000", "taxi")
    assert TrackingConfig.resolve("", "gs://bucket/root").tracking_uri == "http://from-env:5000"
    assert TrackingConfig("http://from-env:5000").artifact_location is None  # the server decides

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    embedded = TrackingConfig.resolve("", tmp_path)
    assert embedded == TrackingConfig(f"sqlite:///{tmp_path}/mlflow/mlflow.db", "slipway")
    assert embedded.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()


def test_a_relative_pipeline_root_gives_an_absolute_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kfp.local's tasks run in other directories than the one the pipeline root was given in.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert TrackingConfig.resolve("", "runs").tracking_uri == f"sqlite:///{tmp_path}/runs/mlflow/mlflow.db"


@pytest.mark.parametrize("root", ["gs://slipway-runs/root", "s3://slipway-runs/root", "minio://slipway-runs/root"])
def test_a_remote_pipeline_root_without_a_tracking_uri_is_refused(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError) as refused:
        TrackingConfig.resolve("", root)
    assert str(refused.value) == (
        f"pipeline root {root} is not a local path, so MLflow cannot keep its embedded store under it: "
        "set tracking_uri (or the MLFLOW_TRACKING_URI environment variable) to an MLflow server"
    )


def test_the_commit_comes_from_the_environment_else_is_unknown_without_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPWAY_GIT_COMMIT", "0123abcd")
    tags = lineage_tags(None, None)
    assert tags["slipway.git_commit"] == tags["mlflow.source.git.commit"] == "0123abcd"
    assert "slipway.data_sha256" not in tags and "slipway.pipeline_run_id" not in tags

    monkeypatch.delenv("SLIPWAY_GIT_COMMIT")
    monkeypatch.setenv("PATH", "")  # no git to run, as in an image
    tags = lineage_tags(DATA_SHA256, None)
    assert tags["slipway.git_commit"] == "unknown" and "mlflow.source.git.commit" not in tags
    assert tags["slipway.data_sha256"] == DATA_SHA256


def test_importing_the_module_touches_neither_network_nor_disk(tmp_path: Path) -> None:
    """Components import this module in every task; only starting a run may reach a store.

    MLflow's own usage telemetry is switched off here, as our runtimes must: left on, `import mlflow`
    writes ~/.config/mlflow/telemetry.json and the first run calls config.mlflow-telemetry.io.
    """
    guard = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise AssertionError(f'network at import: {args}')\n"
        "socket.getaddrinfo = socket.socket.connect = socket.socket.connect_ex = refuse\n"
        "import slipway.components.tracking\n"
    )
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    environment = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"}
    subprocess.run([sys.executable, "-c", guard], cwd=tmp_path / "work", env=environment, check=True)
    assert files_in(tmp_path / "home") == [] and files_in(tmp_path / "work") == []


@pytest.mark.servers
def test_a_run_on_a_real_mlflow_server_reads_back_through_the_client(mlflow_server: str, tmp_path: Path) -> None:
    config = TrackingConfig(mlflow_server, experiment="slipway-server-test")
    model = model_dir(tmp_path / "model")
    run_id = record_training(config, model)

    client = MlflowClient(mlflow_server)
    assert_recorded(client, run_id)
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/")  # uploaded through the server
    downloaded = Path(client.download_artifacts(run_id, f"model/{WEIGHTS_FILE}", str(tmp_path)))
    assert downloaded.read_bytes() == (model / WEIGHTS_FILE).read_bytes()

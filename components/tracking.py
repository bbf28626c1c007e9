"""MLflow tracking for training: where runs go, what lineage they carry, and one started run.

Locally the store is embedded (DESIGN.md §4): a SQLite database and an artifact folder under the
pipeline root, so that a `make run` needs no server and its runs sit beside its artifacts. On a
cluster the tracking URI names an MLflow server. Either way the trainer, on rank 0 only, does:

    config = TrackingConfig.resolve(tracking_uri, pipeline_root)
    with TrainingRun.start(config, "train", params, lineage_tags(data_sha256, run_id)) as run:
        run.log_epoch(epoch, {"train_loss": 0.41, "eval_auc": 0.88})
        run.log_summary({"final_eval_auc": 0.88})
        run.log_model_dir(model_dir)

Everything goes through an explicit `MlflowClient`: no fluent active-run state, so nothing here
depends on, or leaks into, process-wide MLflow globals. Registry stages are deprecated; the
registry (aliases) is a separate module.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import slipway
from slipway.storage import boto3_environment

EMBEDDED_DIR_NAME = "mlflow"
# The pipeline root of local runs (`slipway run`, `make run`): where the CLI and a model server find the embedded
# MLflow store (and the Feast repo) by default. Here, not beside kfp.local in pipelines/local.py, because a running
# KFP task that resolves a models:/ URI must not import kfp's compiler.
DEFAULT_PIPELINE_ROOT = Path("runs")
DEFAULT_EXPERIMENT = "slipway"
VERSIONED_PACKAGES = ("torch", "kfp", "mlflow", "numpy", "pandas", "slipway")
_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs are recorded: a tracking URI (SQLite file or server) and the experiment name."""

    tracking_uri: str
    experiment: str = DEFAULT_EXPERIMENT

    @classmethod
    def embedded(cls, directory: Path, experiment: str = DEFAULT_EXPERIMENT) -> TrackingConfig:
        """`<directory>/mlflow.db`, with artifacts in `<directory>/artifacts`. Nothing is created yet."""
        return cls(f"{_SQLITE}{Path(directory).absolute() / 'mlflow.db'}", experiment)

    @classmethod
    def resolve(
        cls, tracking_uri: str, pipeline_root: str | Path, experiment: str = DEFAULT_EXPERIMENT
    ) -> TrackingConfig:
        """The URI given, else `MLFLOW_TRACKING_URI`, else the embedded store under a local pipeline root.

        A remote pipeline root cannot hold a SQLite file, and silently tracking into the task's
        throwaway container would lose every run, so that case is an error, not a fallback.
        """
        uri = tracking_uri.strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if uri:
            return cls(uri, experiment)
        root = urlparse(str(pipeline_root))
        if root.scheme not in ("", "file"):
            raise ValueError(
                f"pipeline root {pipeline_root} is not a local path, so MLflow cannot keep its embedded store "
                "under it: set tracking_uri (or the MLFLOW_TRACKING_URI environment variable) to an MLflow server"
            )
        local = Path(root.path) if root.scheme == "file" else Path(pipeline_root)
        return cls.embedded(local / EMBEDDED_DIR_NAME, experiment)

    @property
    def artifact_location(self) -> str | None:
        """Beside a SQLite database, its `artifacts` folder; a server decides for itself (None).

        Without this a SQLite store would put artifacts in `./mlruns` of whatever directory the
        task happened to run in.
        """
        if not self.tracking_uri.startswith(_SQLITE):
            return None
        database = Path(self.tracking_uri.removeprefix(_SQLITE)).absolute()
        return (database.parent / "artifacts").as_uri()


def lineage_tags(data_sha256: str | None, pipeline_run_id: str | None) -> dict[str, str]:
    """Tags that let a run be traced back to its data, its code, its pipeline run and its environment."""
    tags = {"slipway.git_commit": _git_commit()}
    if tags["slipway.git_commit"] != "unknown":
        tags["mlflow.source.git.commit"] = tags["slipway.git_commit"]
    if data_sha256:
        tags["slipway.data_sha256"] = data_sha256
    if pipeline_run_id:
        tags["slipway.pipeline_run_id"] = pipeline_run_id
    for dist in VERSIONED_PACKAGES:
        try:
            tags[f"slipway.version.{dist}"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return tags


def _git_commit() -> str:
    """SLIPWAY_GIT_COMMIT (set in images, which hold no .git), else the checkout slipway runs from.

    Lineage is worth having but never worth failing a training run for: any trouble is "unknown".
    """
    if commit := os.environ.get("SLIPWAY_GIT_COMMIT", "").strip():
        return commit
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(slipway.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else "unknown"


def _flatten(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """`{"optimizer": {"lr": 0.1}}` as `("optimizer.lr", "0.1")`: MLflow params are flat strings."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(value)


class TrainingRun:
    """One started MLflow run; as a context manager it ends FINISHED, or FAILED if the body raises."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self._client = client
        self._run_id = run_id
        self._ended = False

    @classmethod
    def start(cls, config: TrackingConfig, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> TrainingRun:
        """Start a run in the config's experiment (created on first use) with its params and tags."""
        client = MlflowClient(tracking_uri=config.tracking_uri)
        experiment_id = _experiment_id(client, config)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        started = cls(client, run.info.run_id)
        try:
            client.log_batch(started.run_id, params=[Param(key, value) for key, value in _flatten(params)])
        except BaseException:
            started.end("FAILED")
            raise
        return started

    @classmethod
    def resume(cls, config: TrackingConfig, run_id: str) -> TrainingRun:
        """The run a checkpoint was logging to, RUNNING again: a restarted job continues its run.

        The interrupted attempt may have ended it FAILED; its params, tags and curves stay as logged.
        """
        client = MlflowClient(tracking_uri=config.tracking_uri)
        client.update_run(run_id, status="RUNNING")
        return cls(client, run_id)

    @property
    def run_id(self) -> str:
        return self._run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One point per metric at step `epoch`, so MLflow draws each metric's curve over epochs."""
        self._log_metrics(metrics, step=epoch)

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Final metrics, at MLflow's default step 0: name them apart from the per-epoch curves."""
        self._log_metrics(metrics, step=0)

    def log_model_dir(self, model_dir: Path, artifact_path: str = "model") -> None:
        """The model artifact's files as they are (safetensors + JSON): never a pickled model."""
        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"{model_dir}: no such model directory to log to MLflow")
        if self._client.get_run(self._run_id).info.artifact_uri.startswith("s3://"):
            # MLflow writes s3:// artifacts itself with boto3, which knows neither KServe's S3_ENDPOINT
            # nor the mounted Secret of SLIPWAY_STORAGE_SECRET_DIR: hand it our storage layer's config.
            with boto3_environment():
                self._client.log_artifacts(self._run_id, str(model_dir), artifact_path)
        else:
            self._client.log_artifacts(self._run_id, str(model_dir), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ended with `status`; a second call changes nothing."""
        if not self._ended:
            self._client.set_terminated(self._run_id, status)
            self._ended = True

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.end("FINISHED" if kind is None else "FAILED")

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)


def _experiment_id(client: MlflowClient, config: TrackingConfig) -> str:
    """The experiment's id, creating it if missing; a concurrent pipeline run may create it first."""
    if (experiment := client.get_experiment_by_name(config.experiment)) is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(config.experiment, artifact_location=config.artifact_location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(config.experiment).experiment_id

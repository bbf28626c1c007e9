"""A cluster training job end to end, minus the cluster: the submitted TrainJob's own command really runs.

No Kubernetes API server can run here. The fake one from test_training_jobs validates the TrainJob
against the real CRD; then, playing the Trainer's part, the test runs the job's container command
(`torchrun` + the trainer's argv, with the job's env) on this machine, against a real S3 API (moto).
What is verified: the argv the `train` component submits trains from object storage, writes the model
and the result where the launcher reads them back. Not verified: scheduling, images, the Trainer
controller itself.
"""

import os
import subprocess
import sys
from typing import Any

from conftest import S3_BUCKET
from fake_apiserver import FakeApiServer
from test_training_jobs import job_apiserver

from slipway import runtimes
from slipway.components.launcher import cluster_trainer_command, run_cluster_training
from slipway.components.model_artifact import METADATA_FILE, WEIGHTS_FILE, load_model
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import trainer_arguments
from slipway.components.training_jobs import DistributedJobSpec, JobKind
from slipway.storage import download, upload


class TrainerPlaysThePod:
    """A FakeApiServer status script that runs the stored TrainJob's container command on first look."""

    def __init__(self) -> None:
        self.server: FakeApiServer | None = None
        self.pod: subprocess.Popen | None = None

    def __len__(self) -> int:
        return 1

    def __getitem__(self, step: int) -> dict[str, Any]:
        if self.pod is None:
            [job] = self.server.objects.values()
            trainer = job["spec"]["trainer"]
            env = {**os.environ, **{e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e}}
            assert trainer["command"] == ["torchrun"]
            self.pod = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         f"--nproc-per-node={trainer['numProcPerNode']}", *trainer["args"]], env=env)
        if self.pod.poll() is None:
            return {"conditions": [{"type": "Created", "status": "True", "reason": "JobsCreated"}]}
        if self.pod.returncode == 0:
            return {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}
        return {"conditions": [{"type": "Failed", "status": "True", "reason": "TrainingFailed",
                                "message": f"node-0 exited with code {self.pod.returncode}"}]}


def test_a_trainjob_trains_from_object_storage_and_reports_back(s3_config, taxi_training_sets, tmp_path, monkeypatch):
    store = {"AWS_ENDPOINT_URL": s3_config.s3_endpoint, "AWS_REGION": s3_config.s3_region}
    secrets = {"AWS_ACCESS_KEY_ID": s3_config.s3_access_key, "AWS_SECRET_ACCESS_KEY": s3_config.s3_secret_key}
    for name, value in {**store, **secrets}.items():
        monkeypatch.setenv(name, value)  # the launcher reads the result; the job's pods get them from a Secret
    run = f"s3://{S3_BUCKET}/pipeline/run-1"
    upload(taxi_training_sets[0], f"{run}/ingest/train_data", s3_config)
    upload(taxi_training_sets[1], f"{run}/ingest/eval_data", s3_config)
    args = trainer_arguments(f"{run}/ingest/train_data", f"{run}/ingest/eval_data", f"{run}/train/model",
                             str(tmp_path / "checkpoints"), "chicago_taxi", TrainConfig(epochs=2))
    result_uri = f"{run}/train/model.result.json"
    spec = DistributedJobSpec(name="slipway-train-1", namespace="kubeflow-user", image=runtimes.CORE_IMAGE,
                              command=cluster_trainer_command(args, result_uri), nproc_per_node=2, env=store,
                              credentials_secret="slipway-object-store")
    pod = TrainerPlaysThePod()

    with job_apiserver((JobKind.TRAINJOB, JobKind.PYTORCHJOB), pod) as apiserver:
        pod.server = apiserver
        result = run_cluster_training("auto", spec, result_uri, api=apiserver.api(), poll_s=0.2)

    assert (result.world_size, result.epochs_run) == (2, 2)
    model_dir = tmp_path / "model"
    for name in (WEIGHTS_FILE, METADATA_FILE):
        download(f"{run}/train/model/{name}", model_dir / name, s3_config)
    assert load_model(model_dir).metadata["lineage"]["train_data"] == f"{run}/ingest/train_data"

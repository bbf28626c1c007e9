"""Launch training on this machine: `torchrun` with N processes, from the running environment.

The `train` component and `slipway train` call `run_local_training`; it starts the trainer
(`python -m slipway.components.trainer`) under `torchrun --standalone` with N processes (one
plain process when N is 1, which skips torchrun's rendezvous), streams the children's output
line by line into our log as it comes, and reads the result back from a JSON file that rank 0
writes. A failed child becomes a `TrainingLaunchError` carrying its exit code and the last error
line it printed (the exception a worker raised, not torchrun's wrapper around it).

REFERENCE.md: the Kubeflow SDK's local-process backend would build a fresh venv per job; we
start torchrun from our own environment instead.

`run_cluster_training` is the other way to launch the same trainer: as a Kubeflow Trainer
`TrainJob` or a Training Operator `PyTorchJob` (objects built and checked in `training_jobs`),
whose pods read the data from and write the model to object storage by URI. Verified here
against a fake API server that validates every object against the real CRDs; no cluster runs
in the tests.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

from slipway import cluster, runtimes
from slipway.child_process import last_error_line, stream
from slipway.components import custom_objects, training_jobs
from slipway.components.trainer import TrainResult
from slipway.storage import download

log = logging.getLogger(__name__)

TRAINER_MODULE = "slipway.components.trainer"
# torchrun's own exceptions around a worker's: the worker's is the one that says why.
_TORCHRUN_WRAPPERS = ("ChildFailedError", "SignalException")


LAUNCHERS = ("torchrun", "trainjob", "pytorchjob", "auto")  # auto: TrainJob where served, else PyTorchJob


class TrainingLaunchError(RuntimeError):
    """The training processes failed; the message holds the exit code and the child's own error."""


def trainer_command(trainer_args: list[str], processes: int) -> list[str]:
    """The command line that runs the trainer with `processes` local processes."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        return [sys.executable, "-m", TRAINER_MODULE, *trainer_args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "--max-restarts=0", "-m", TRAINER_MODULE, *trainer_args]


def run_local_training(trainer_args: list[str], processes: int) -> TrainResult:
    """Runs the trainer to completion, streaming its log; returns rank 0's result."""
    with tempfile.TemporaryDirectory(prefix="slipway-launch-") as scratch:
        result_file = Path(scratch) / "result.json"
        command = trainer_command([*trainer_args, "--result-file", str(result_file)], processes)
        log.info("launching %d training process(es): %s", processes, " ".join(command[1:]))
        exit_code, tail = stream(command)
        if exit_code != 0:
            raise TrainingLaunchError(f"training failed (exit code {exit_code}, {processes} process(es)): "
                                      f"{last_error_line(tail, ignore=_TORCHRUN_WRAPPERS)}")
        if not result_file.is_file():
            raise TrainingLaunchError(f"training exited 0 but rank 0 wrote no result to {result_file}")
        return TrainResult(**json.loads(result_file.read_text()))


def cluster_trainer_command(trainer_args: list[str], result_uri: str) -> list[str]:
    """A cluster job's argv after `torchrun`: the trainer, reporting its result to `result_uri`."""
    return ["-m", TRAINER_MODULE, *trainer_args, "--result-file", result_uri]


def cluster_job_spec(
    name: str,
    trainer_args: list[str],
    result_uri: str,
    *,
    num_nodes: int,
    processes: int,
    task_config: object,
    tracking_uri: str,
    credentials_secret: str = "",
) -> training_jobs.DistributedJobSpec:
    """The job the `train` component submits on Kubeflow, from what its KFP task carries.

    The GPUs, CPU, memory, tolerations and node selector set on the task (its `dsl.TaskConfig`) go to
    every node, which runs the train-gpu image when it has GPUs; the cluster's settings (`slipway-config`,
    as this pod has them), the task's own env, MLflow's credentials (`slipway-auth`) and the storage
    Secret (`credentials_secret`, default `slipway-storage`) go to every node's env.
    """
    resources = training_jobs.resources_from_task_config(task_config)
    return training_jobs.DistributedJobSpec(
        name=name, namespace=custom_objects.pod_namespace(), image=runtimes.training_image(resources.gpus),
        command=cluster_trainer_command(trainer_args, result_uri), num_nodes=num_nodes, nproc_per_node=processes,
        resources=resources, env=training_jobs.cluster_env(tracking_uri),
        task_env=(*training_jobs.env_from_task_config(task_config), *training_jobs.mlflow_credentials_env()),
        credentials_secret=credentials_secret or cluster.STORAGE_SECRET)


def run_cluster_training(
    launcher: str,
    spec: training_jobs.DistributedJobSpec,
    result_uri: str,
    api: object | None = None,
    poll_s: float = 15.0,
) -> TrainResult:
    """Submits `spec` as a cluster job, follows it to the end, and reads rank 0's result from storage.

    `spec.command` comes from `cluster_trainer_command`; `result_uri` is object storage that the
    job's pods can write (the pipeline's artifact store).
    """
    if launcher not in LAUNCHERS[1:]:
        raise ValueError(f"launcher {launcher!r} is not a cluster launcher; one of {list(LAUNCHERS[1:])}")
    api = api or custom_objects.kube_client()
    kind = training_jobs.available_job_kind(api) if launcher == "auto" else training_jobs.JobKind[launcher.upper()]
    job = training_jobs.submit(training_jobs.build_manifest(spec, kind), api, adopt_existing=True)
    training_jobs.wait(job, api, poll_s=poll_s)
    with tempfile.TemporaryDirectory(prefix="slipway-launch-") as scratch:
        local = Path(scratch) / "result.json"
        download(result_uri, local)
        return TrainResult(**json.loads(local.read_text()))

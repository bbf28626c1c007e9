"""The compiled pipelines on Kubeflow: the right image per step, the cluster's settings in every task, and
the training task's GPUs and env handed on to every node of its TrainJob or PyTorchJob.

What is verified how. The IR is compiled by KFP's own compiler (with kfp-kubernetes' platform spec); what
the KFP backend does with it (the driver filling `dsl.TaskConfig`, the launcher pulling images) cannot run
here, so the hand-over is tested from both ends: the IR carries the settings, and the train step's
library code turns a `dsl.TaskConfig` of the shape the driver fills into job manifests that validate
against the real CRDs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import dsl

from slipway import cluster, runtimes
from slipway.components import launcher, training_jobs
from slipway.pipelines.compile import compile_pipelines
from tests.crd_schema import crd_errors, crd_path

# The steps that run elsewhere than on the core image.
STEP_RUNTIMES = {"exec-statistics": "tfdv", "exec-schema": "tfdv", "exec-validate": "tfdv", "exec-drift": "drift"}


def documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compiled pipeline's IR and its Kubernetes platform spec (kfp-kubernetes' second document)."""
    ir, platform = yaml.safe_load_all(path.read_text())
    return ir, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def containers(ir: dict[str, Any]) -> dict[str, Any]:
    """The executors that run a container, by name."""
    return {name: executor for name, executor in ir["deploymentSpec"]["executors"].items() if "container" in executor}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return compile_pipelines(tmp_path_factory.mktemp("dist"))


def test_every_task_of_every_pipeline_reads_the_cluster_config_and_the_storage_secret(compiled: list[Path]) -> None:
    assert sorted(path.stem for path in compiled) == ["batch_scoring", "continuous_training", "training"]
    for path in compiled:
        ir, platform = documents(path)
        # Every executor that runs a container, those inside dsl.If branches included (an importer runs none: KFP's
        # driver records the artifact).
        assert set(platform) == set(containers(ir)), path.name
        for name, executor in platform.items():
            [config] = executor["configMapAsEnv"]
            assert config["configMapName"] == cluster.CONFIG_MAP and config["optional"] is True, name
            assert [(k["configMapKey"], k["envVar"]) for k in config["keyToEnv"]] == [
                (key, key) for key in cluster.CONFIG_KEYS]
            secrets = {secret["secretName"]: secret for secret in executor["secretAsEnv"]}
            assert set(secrets) == {cluster.STORAGE_SECRET, cluster.AUTH_SECRET}, name
            for secret_name, keys in ((cluster.STORAGE_SECRET, cluster.STORAGE_KEYS),
                                      (cluster.AUTH_SECRET, cluster.AUTH_KEYS)):
                assert secrets[secret_name]["optional"] is True, name
                assert [(k["secretKey"], k["envVar"]) for k in secrets[secret_name]["keyToEnv"]] == [
                    (key, key) for key in keys]


def test_compiling_for_another_registry_and_tag_names_them_in_every_step(tmp_path: Path) -> None:
    # `make images IMAGE_REGISTRY=... IMAGE_TAG=...` builds what `make compile` with the same values references.
    env = {**os.environ, runtimes.IMAGE_REGISTRY_ENV: "localhost:5001", runtimes.IMAGE_TAG_ENV: "e2e"}
    result = subprocess.run([sys.executable, "-m", "slipway", "compile", "--output-dir", str(tmp_path)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in sorted(tmp_path.glob("*.yaml")):
        for name, executor in containers(documents(path)[0]).items():
            runtime = STEP_RUNTIMES.get(name, "core")
            assert executor["container"]["image"] == f"localhost:5001/slipway-{runtime}:e2e", (path.name, name)
    assert {name for name in STEP_RUNTIMES} <= {name for path in tmp_path.glob("*.yaml")
                                                 for name in documents(path)[0]["deploymentSpec"]["executors"]}


def test_every_runtime_has_an_image_built_from_a_lock() -> None:
    root = Path(__file__).resolve().parent.parent
    makefile = (root / "Makefile").read_text()
    for runtime in runtimes.RUNTIMES:
        assert (root / "images" / f"{runtime}.Dockerfile").is_file(), runtime
        assert runtime in makefile.split("IMAGES ?=")[1].splitlines()[0], f"make images does not build {runtime}"
    with pytest.raises(ValueError, match="unknown runtime 'gpu'"):
        runtimes.image("gpu")


def gpu_task_config() -> dsl.TaskConfig:
    """What KFP's driver hands the train step for `.set_accelerator_limit(2)` and `.set_env_variable(...)`."""
    return dsl.TaskConfig(
        resources={"limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
                   "requests": {"cpu": "8", "memory": "32Gi"}},
        tolerations=[{"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}],
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
        env=[{"name": "NCCL_DEBUG", "value": "INFO"},
             {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
             # The task's own copy of a cluster setting: the job keeps the one the step resolved.
             {"name": "MLFLOW_TRACKING_URI", "value": "http://stale:5000"}])


def job_spec(task_config: dsl.TaskConfig | None, monkeypatch: pytest.MonkeyPatch) -> training_jobs.DistributedJobSpec:
    # The settings the task's pod has from the slipway-config ConfigMap.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio-service.kubeflow:9000")
    monkeypatch.setenv("SLIPWAY_FEAST_REDIS", "feast-redis.kubeflow:6379")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return launcher.cluster_job_spec(
        "slipway-train-abc", ["--train", "s3://mlpipeline/train", "--eval", "s3://mlpipeline/eval"],
        "s3://mlpipeline/model.result.json", num_nodes=2, processes=1, task_config=task_config,
        tracking_uri="http://mlflow.kubeflow.svc.cluster.local:5000")


@pytest.mark.parametrize("kind", list(training_jobs.JobKind), ids=lambda kind: kind.kind)
def test_a_gpu_task_trains_every_node_on_the_gpu_image_with_its_gpus_env_and_the_storage_secret(
        kind: training_jobs.JobKind, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = training_jobs.build_manifest(job_spec(gpu_task_config(), monkeypatch), kind)
    crd = {"TrainJob": "trainer.kubeflow.org_trainjobs.yaml", "PyTorchJob": "kubeflow.org_pytorchjobs.yaml"}
    assert crd_errors(manifest, crd_path(crd[kind.kind])) == []
    text = yaml.safe_dump(manifest)
    assert runtimes.TRAIN_GPU_IMAGE in text and runtimes.CORE_IMAGE not in text
    replicas = manifest["spec"].get("pytorchReplicaSpecs", {}).values()
    containers = ([manifest["spec"]["trainer"]] if kind is training_jobs.JobKind.TRAINJOB else
                  [replica["template"]["spec"]["containers"][0] for replica in replicas])
    for container in containers:
        resources = container.get("resourcesPerNode") or container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "2" and resources["limits"]["memory"] == "32Gi"
        env = {variable["name"]: variable for variable in container["env"]}
        assert len(env) == len(container["env"]), "a variable set twice"
        assert env["NCCL_DEBUG"]["value"] == "INFO"
        assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.kubeflow.svc.cluster.local:5000"
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio-service.kubeflow:9000"
        for key in cluster.STORAGE_KEYS:
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": cluster.STORAGE_SECRET, "key": key,
                                                             "optional": True}
    assert "nvidia-tesla-a100" in text and "a100" in text  # node selector and toleration reach the pods


def test_a_task_without_gpus_trains_on_the_core_image(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = job_spec(dsl.TaskConfig(resources={"limits": {"cpu": "4", "memory": "8Gi"}}), monkeypatch)
    assert spec.image == runtimes.CORE_IMAGE and spec.resources.gpus == 0
    # Under kfp.local the TaskConfig is empty: the defaults, on core.
    assert job_spec(None, monkeypatch).image == runtimes.CORE_IMAGE

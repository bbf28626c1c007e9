"""Cluster training jobs: built with the official models, valid against the real CRDs, submitted and awaited.

The CRD validator itself is tested here too (it must catch a typo, a wrong type, a missing field, a
broken CEL rule), and submit/wait talk HTTP to a small stand-in API server that validates what it is
sent against the same CRDs and reports scripted job conditions.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crd_schema import (
    CRDS_DIR,
    ROOT,
    CRDValidationError,
    cel_rules,
    compile_cel,
    crd_errors,
    crd_path,
    validate_against_crd,
)
from fake_apiserver import FakeApiServer
from kfp import dsl
from kubernetes import client

from slipway.components.custom_objects import CustomObjectError, ObjectFailedError, SubmitError, WaitTimeoutError
from slipway.components.training_jobs import (
    PATCH_MANAGER,
    TRAINER_NODE,
    TRAINER_RUNTIME,
    DistributedJobSpec,
    JobKind,
    JobResources,
    JobSpecError,
    available_job_kind,
    build_manifest,
    build_pytorchjob,
    build_trainjob,
    job_name,
    resources_from_task_config,
    submit,
    to_manifest,
    wait,
)

TRAINJOBS = "trainer.kubeflow.org_trainjobs.yaml"
RUNTIMES = "trainer.kubeflow.org_clustertrainingruntimes.yaml"
PYTORCHJOBS = "kubeflow.org_pytorchjobs.yaml"
CRD_OF = {JobKind.TRAINJOB: TRAINJOBS, JobKind.PYTORCHJOB: PYTORCHJOBS}
TRAINER_ARGV = ("-m", "slipway.components.trainer", "--train", "s3://slipway-artifacts/train.parquet",
                "--eval", "s3://slipway-artifacts/eval.parquet", "--model-dir", "s3://slipway-artifacts/model",
                "--checkpoint-dir", "/tmp/checkpoints")

# The `torch-distributed` runtime as the Trainer project ships it (manifests/base/runtimes/
# torch_distributed.yaml), in the shape of the CRD version in ../shared/crds: that version's torch
# policy has no numProcPerNode (the TrainJob sets it), see test_the_older_upstream_runtime_...
TORCH_DISTRIBUTED_RUNTIME: dict[str, Any] = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed"},
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {}},
        "template": {"spec": {"replicatedJobs": [{
            "name": "node",
            "template": {
                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                "spec": {"template": {"spec": {"containers": [{
                    "name": "node",
                    "image": "pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime",
                    "command": ["/bin/bash", "-c", "echo 'Torch Distributed Runtime'; env | grep PET_"],
                }]}}},
            },
        }]}},
    },
}


def job_spec(num_nodes: int = 1, gpus: int = 0, **overrides: Any) -> DistributedJobSpec:
    fields: dict[str, Any] = {
        "name": "train-3f2a9c",
        "namespace": "kubeflow-user",
        "image": "ghcr.io/slipway/slipway-core:0.1.0",
        "command": TRAINER_ARGV,
        "num_nodes": num_nodes,
        "resources": JobResources(cpu="4", memory="16Gi", gpus=gpus),
        "env": {"MLFLOW_TRACKING_URI": "http://mlflow.kubeflow:5000", "AWS_ENDPOINT_URL": "http://minio:9000"},
        "credentials_secret": "slipway-object-store",
        "service_account": "pipeline-runner",
        "labels": {"app.kubernetes.io/part-of": "slipway"},
    }
    return DistributedJobSpec(**{**fields, **overrides})


def pod_specs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs a manifest carries itself (a TrainJob's runtime patch, a PyTorchJob's templates)."""
    if manifest["kind"] == "PyTorchJob":
        return [role["template"]["spec"] for role in manifest["spec"]["pytorchReplicaSpecs"].values()]
    patches = manifest["spec"].get("runtimePatches", [])
    return [job["template"]["spec"]["template"]["spec"]
            for patch in patches for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]


def trainer_container(manifest: dict[str, Any]) -> dict[str, Any]:
    """What runs the trainer: a TrainJob's `spec.trainer`, a PyTorchJob Master's container."""
    if manifest["kind"] == "PyTorchJob":
        return manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    return manifest["spec"]["trainer"]


def resources_of(manifest: dict[str, Any]) -> dict[str, Any]:
    container = trainer_container(manifest)
    return container["resourcesPerNode"] if manifest["kind"] == "TrainJob" else container["resources"]


# --- the objects are valid against the CRDs ---------------------------------------------------------------

SHAPES = [pytest.param(1, 0, id="cpu-1-node"), pytest.param(3, 0, id="cpu-3-nodes"),
          pytest.param(1, 1, id="gpu-1-node"), pytest.param(4, 8, id="gpu-4-nodes-8-each")]


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda kind: kind.kind)
@pytest.mark.parametrize(("num_nodes", "gpus"), SHAPES)
def test_built_jobs_validate_against_their_crd(kind: JobKind, num_nodes: int, gpus: int) -> None:
    manifest = build_manifest(job_spec(num_nodes, gpus), kind)
    validate_against_crd(manifest, crd_path(CRD_OF[kind]))
    assert json.loads(json.dumps(manifest)) == manifest  # plain JSON types only


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda kind: kind.kind)
def test_a_minimal_job_validates_too(kind: JobKind) -> None:
    spec = DistributedJobSpec(name="t", namespace="default", image="img", command=["train.py"])
    validate_against_crd(build_manifest(spec, kind), crd_path(CRD_OF[kind]))


def test_to_manifest_is_camel_case_as_kubectl_wants() -> None:
    keys: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            keys.update(k for k in value if not re.search(r"[./]", k))  # skip label and resource names
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    for kind in JobKind:
        collect(build_manifest(job_spec(2, 1), kind))
    assert not [key for key in keys if "_" in key]
    assert {"runtimeRef", "numProcPerNode", "resourcesPerNode", "secretKeyRef", "serviceAccountName",
            "pytorchReplicaSpecs", "restartPolicy", "containerPort", "nprocPerNode"} <= keys


def test_the_trainjob_is_built_with_the_kubeflow_trainer_models() -> None:
    from kubeflow_trainer_api import models

    job = build_trainjob(job_spec(2, 1))
    assert isinstance(job, models.TrainerV1alpha1TrainJob)
    assert to_manifest(job) == build_manifest(job_spec(2, 1), JobKind.TRAINJOB)
    template = build_pytorchjob(job_spec(2, 1))["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert isinstance(template, client.V1PodTemplateSpec)


# --- the TrainJob's runtime ---------------------------------------------------------------------------------


def test_the_trainjob_references_a_runtime_that_the_runtime_crd_accepts() -> None:
    validate_against_crd(TORCH_DISTRIBUTED_RUNTIME, crd_path(RUNTIMES))
    trainjob = build_manifest(job_spec(2, 1), JobKind.TRAINJOB)
    ref = trainjob["spec"]["runtimeRef"]
    group = TORCH_DISTRIBUTED_RUNTIME["apiVersion"].split("/")[0]
    assert (ref["name"], ref["kind"], ref["apiGroup"]) == (
        TORCH_DISTRIBUTED_RUNTIME["metadata"]["name"], TORCH_DISTRIBUTED_RUNTIME["kind"], group)
    assert ref["name"] == TRAINER_RUNTIME


def test_the_runtime_patch_targets_the_runtimes_trainer_job_and_container() -> None:
    runtime_jobs = {job["name"]: job for job in TORCH_DISTRIBUTED_RUNTIME["spec"]["template"]["spec"]["replicatedJobs"]}
    node = runtime_jobs[TRAINER_NODE]
    # the TrainJob's trainer overrides the job labelled as the trainer step, in its container named `node`
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    assert [c["name"] for c in node["template"]["spec"]["template"]["spec"]["containers"]] == [TRAINER_NODE]
    [patch] = build_manifest(job_spec(2, 1), JobKind.TRAINJOB)["spec"]["runtimePatches"]
    assert patch["manager"] == PATCH_MANAGER
    patched = [job["name"] for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]
    assert patched == [TRAINER_NODE] and set(patched) <= set(runtime_jobs)


def test_the_older_upstream_runtime_with_a_torch_nproc_is_caught_as_an_unknown_field() -> None:
    # kubeflow/trainer@0c78efb's torch_distributed.yaml set mlPolicy.torch.numProcPerNode: auto; the CRD in
    # ../shared/crds no longer has that field, so the API server would drop it without a word.
    older = copy.deepcopy(TORCH_DISTRIBUTED_RUNTIME)
    older["spec"]["mlPolicy"]["torch"] = {"numProcPerNode": "auto"}
    assert crd_errors(older, crd_path(RUNTIMES)) == [
        "spec.mlPolicy.torch.numProcPerNode: unknown field 'numProcPerNode' (the API server would drop it)"]


def test_the_runtime_crd_cel_rules_are_enforced() -> None:
    both = copy.deepcopy(TORCH_DISTRIBUTED_RUNTIME)
    both["spec"]["mlPolicy"]["mpi"] = {}
    assert crd_errors(both, crd_path(RUNTIMES)) == ["spec.mlPolicy: Only one of the policy can be configured"]
    injected = copy.deepcopy(TORCH_DISTRIBUTED_RUNTIME)
    injected["spec"]["mlPolicy"]["torch"] = {"envInjection": {"targets": [
        {"jobName": "node", "containerNames": ["sidecar", "node"]}]}}
    [error] = crd_errors(injected, crd_path(RUNTIMES))
    assert error.startswith("spec.mlPolicy.torch.envInjection.targets[0].containerNames: containerNames must not "
                            "include the main node container")


def test_a_namespace_on_the_cluster_scoped_runtime_is_an_error() -> None:
    namespaced = copy.deepcopy(TORCH_DISTRIBUTED_RUNTIME)
    namespaced["metadata"]["namespace"] = "kubeflow"
    assert crd_errors(namespaced, crd_path(RUNTIMES)) == [
        "metadata.namespace: ClusterTrainingRuntime is cluster-scoped and takes no namespace"]


# --- what the jobs contain -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda kind: kind.kind)
def test_gpu_requests_and_the_gpu_toleration_come_only_with_gpus(kind: JobKind) -> None:
    gpu = build_manifest(job_spec(2, gpus=2), kind)
    assert resources_of(gpu) == {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
                                 "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}}
    for pod in pod_specs(gpu):
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

    cpu = build_manifest(job_spec(2, gpus=0), kind)
    assert resources_of(cpu) == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
    assert "gpu" not in json.dumps(cpu)
    assert all("tolerations" not in pod for pod in pod_specs(cpu))


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda kind: kind.kind)
def test_another_accelerator_and_extra_scheduling_constraints(kind: JobKind) -> None:
    pool = {"key": "pool", "operator": "Equal", "value": "mi300", "effect": "NoSchedule"}
    resources = JobResources(cpu="8", memory="64Gi", gpus=1, gpu_resource="amd.com/gpu", tolerations=(pool,),
                             node_selector={"cloud.example.com/accelerator": "mi300"})
    manifest = build_manifest(job_spec(resources=resources), kind)
    validate_against_crd(manifest, crd_path(CRD_OF[kind]))
    assert resources_of(manifest)["limits"]["amd.com/gpu"] == "1"
    [pod] = pod_specs(manifest)
    assert pod["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                  {"key": "pool", "operator": "Equal", "value": "mi300", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"cloud.example.com/accelerator": "mi300"}


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda kind: kind.kind)
def test_env_values_and_credentials_from_the_secret_never_as_values(kind: JobKind) -> None:
    manifest = build_manifest(job_spec(), kind)
    assert trainer_container(manifest)["env"] == [
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.kubeflow:5000"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"},
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": "slipway-object-store", "key": "AWS_ACCESS_KEY_ID", "optional": True}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "slipway-object-store", "key": "AWS_SECRET_ACCESS_KEY",
                                        "optional": True}}},
    ]
    for pod in pod_specs(manifest):
        assert pod["serviceAccountName"] == "pipeline-runner"


def test_credentials_can_come_from_a_secret_with_other_key_names() -> None:
    spec = job_spec(credentials_secret="mlpipeline-minio-artifact",
                    credentials_keys={"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"})
    for kind in JobKind:
        env = trainer_container(build_manifest(spec, kind))["env"]
        assert [e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e] == ["accesskey", "secretkey"]
    without = build_manifest(job_spec(credentials_secret=None), JobKind.PYTORCHJOB)
    assert "secretKeyRef" not in json.dumps(without)


def test_the_trainjob_runs_the_runtimes_torchrun_with_the_trainer_argv() -> None:
    trainer = build_manifest(job_spec(3, 2), JobKind.TRAINJOB)["spec"]["trainer"]
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"] == list(TRAINER_ARGV)
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 2)
    assert trainer["image"] == "ghcr.io/slipway/slipway-core:0.1.0"


def test_the_pytorchjob_has_one_master_and_the_other_nodes_as_workers() -> None:
    replicas = build_manifest(job_spec(4, 1), JobKind.PYTORCHJOB)["spec"]["pytorchReplicaSpecs"]
    assert {role: (spec["replicas"], spec["restartPolicy"]) for role, spec in replicas.items()} == {
        "Master": (1, "OnFailure"), "Worker": (3, "OnFailure")}
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
    assert container["command"] == ["torchrun", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]
    assert container["args"] == list(TRAINER_ARGV)
    single = build_manifest(job_spec(1), JobKind.PYTORCHJOB)["spec"]["pytorchReplicaSpecs"]
    assert list(single) == ["Master"]


@pytest.mark.parametrize(("nproc", "cpu", "gpus", "expected"), [
    ("auto", "4", 0, 4), ("auto", "500m", 0, 1), ("auto", "2.5", 0, 2), ("auto", "4", 8, 8), (3, "4", 8, 3)])
def test_processes_per_node(nproc: int | str, cpu: str, gpus: int, expected: int) -> None:
    spec = job_spec(nproc_per_node=nproc, resources=JobResources(cpu=cpu, gpus=gpus))
    assert build_manifest(spec, JobKind.TRAINJOB)["spec"]["trainer"]["numProcPerNode"] == expected
    assert build_manifest(spec, JobKind.PYTORCHJOB)["spec"]["nprocPerNode"] == str(expected)


# --- invalid specs are refused, naming the field ---------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": "Train_Job"}, "DistributedJobSpec.name: 'Train_Job' is not a valid job name: use at most 63 lowercase "
                            "letters, digits and '-', starting with a letter and ending with a letter or digit"),
    ({"name": "7-train"}, "DistributedJobSpec.name: '7-train' is not a valid job name"),
    ({"name": "t" * 64}, f"DistributedJobSpec.name: '{'t' * 64}' is not a valid job name"),
    ({"namespace": "Kubeflow User"}, "DistributedJobSpec.namespace: 'Kubeflow User' is not a namespace name"),
    ({"image": ""}, "DistributedJobSpec.image: '' is not a container image reference"),
    ({"command": []}, "DistributedJobSpec.command: () must be a non-empty list of strings"),
    ({"command": ["torchrun", "-m", "x"]}, "DistributedJobSpec.command: give the trainer's argv after torchrun"),
    ({"num_nodes": 0}, "DistributedJobSpec.num_nodes: 0 must be a whole number, at least 1"),
    ({"nproc_per_node": "gpu"}, "DistributedJobSpec.nproc_per_node: 'gpu' must be 'auto' or a whole number"),
    ({"env": {"PET_NNODES": "2"}}, "DistributedJobSpec.env['PET_NNODES']: PET_NNODES is set by the training operator"),
    ({"env": {"RANK": "0"}}, "DistributedJobSpec.env['RANK']: RANK is set by the training operator"),
    ({"env": {"A=B": "x"}}, "DistributedJobSpec.env['A=B']: 'A=B' is not an environment variable name"),
    ({"env": {"AWS_ACCESS_KEY_ID": "AKIA..."}},
     "DistributedJobSpec.credentials_keys['AWS_ACCESS_KEY_ID']: also set in env"),
    ({"credentials_secret": "Object_Store"}, "DistributedJobSpec.credentials_secret: 'Object_Store' is not a Secret"),
    ({"service_account": "Runner!"}, "DistributedJobSpec.service_account: 'Runner!' is not a ServiceAccount name"),
    ({"labels": {"team": "ml ops"}}, "DistributedJobSpec.labels['team']: 'ml ops' is not a label value"),
])
def test_invalid_specs_raise_errors_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(JobSpecError) as raised:
        job_spec(**overrides)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(("fields", "message"), [
    ({"cpu": "two"}, "JobResources.cpu: 'two' is not a positive Kubernetes quantity"),
    ({"memory": "0"}, "JobResources.memory: '0' is not a positive Kubernetes quantity"),
    ({"gpus": -1}, "JobResources.gpus: -1 is not a whole number of GPUs"),
    ({"gpus": True}, "JobResources.gpus: True is not a whole number of GPUs"),
    ({"gpu_resource": "gpu"}, "JobResources.gpu_resource: 'gpu' is not an extended resource name"),
    ({"tolerations": ({"key": "a", "effects": "NoSchedule"},)}, "JobResources.tolerations[0]: unknown field(s)"),
])
def test_invalid_resources_raise_errors_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(JobSpecError, match=re.escape(message)):
        JobResources(**fields)


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda kind: kind.kind)
def test_a_name_too_long_for_the_pod_hostnames_is_refused_before_the_cluster_sees_it(kind: JobKind) -> None:
    spec = job_spec(num_nodes=12, name="t" * 55)
    with pytest.raises(JobSpecError, match=r"DistributedJobSpec.name: 't{55}' is too long for 12 node\(s\)"):
        build_manifest(spec, kind)


def test_job_names_are_valid_and_stable_per_run() -> None:
    name = job_name("Slipway Train", "run-5d7c0f0e-2b1a-4f7e-9c1e-0f6b3a1d2e4f")
    assert name == job_name("Slipway Train", "run-5d7c0f0e-2b1a-4f7e-9c1e-0f6b3a1d2e4f")
    assert name != job_name("Slipway Train", "another run")
    assert re.fullmatch(r"slipway-train-[0-9a-f]{10}", name)
    assert re.fullmatch(r"job-9-[0-9a-f]{10}", job_name("9", "x"))
    long = job_name("x" * 80, "run")
    assert len(long) == 40
    for kind in JobKind:  # and the operators' pod names still fit
        validate_against_crd(build_manifest(job_spec(name=long, num_nodes=99), kind), crd_path(CRD_OF[kind]))


# --- the validator catches real mistakes (so that it cannot pass everything) --------------------------------------


def broken(kind: JobKind, change: Any) -> dict[str, Any]:
    manifest = build_manifest(job_spec(2, 1), kind)
    change(manifest)
    return manifest


@pytest.mark.parametrize(("kind", "change", "expected"), [
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"].update(numProcPerNod=2),
     "spec.trainer.numProcPerNod: unknown field 'numProcPerNod' (the API server would drop it)"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"].update(numNodes="2"),
     "spec.trainer.numNodes: '2' is not of type 'integer'"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"].update(numNodes=2.0),
     "spec.trainer.numNodes: 2.0 is not of type 'integer'"),
    (JobKind.TRAINJOB, lambda m: m["spec"].pop("runtimeRef"), "spec.runtimeRef: required field is missing"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"].update(numProcPerNode=0),
     "spec.trainer.numProcPerNode: numProcPerNode must be greater than or equal to 1"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"].update(numNodes=2**31),
     "spec.trainer.numNodes: 2147483648 is not a 'int32'"),
    (JobKind.TRAINJOB, lambda m: m["spec"].update(managedBy="me"),
     "spec.managedBy: ManagedBy must be trainer.kubeflow.org/trainjob-controller or kueue.x-k8s.io/multikueue if set"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"]["env"].append({"name": "AWS_ENDPOINT_URL", "value": "x"}),
     "spec.trainer.env[4]: duplicate entry with name='AWS_ENDPOINT_URL' (also at [1])"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"]["resourcesPerNode"]["limits"].update(cpu="four"),
     "spec.trainer.resourcesPerNode.limits.cpu: 'four' does not match ^(\\+|-)?"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"]["resourcesPerNode"]["limits"].update({"nvidia.com/gpu": 1.5}),
     "spec.trainer.resourcesPerNode.limits['nvidia.com/gpu']: 1.5 must be an integer or a string"),
    (JobKind.TRAINJOB, lambda m: m["spec"]["trainer"]["env"][0].update(value=None),
     "spec.trainer.env[0].value: None is not of type 'string'"),
    (JobKind.PYTORCHJOB, lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
     .update(imagePullPolicyy="Always"),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].imagePullPolicyy: unknown field 'imagePullPolicyy'"),
    (JobKind.PYTORCHJOB, lambda m: m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
     .pop("image") and m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].pop("name"),
     "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].name: required field is missing"),
    (JobKind.PYTORCHJOB, lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas="1"),
     "spec.pytorchReplicaSpecs.Master.replicas: '1' is not of type 'integer'"),
    (JobKind.PYTORCHJOB, lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
     ["ports"].append({"name": "again", "containerPort": 23456}),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].ports[1]: duplicate entry with containerPort=23456, "
     "protocol='TCP'"),  # protocol is defaulted first, as the API server does
    (JobKind.PYTORCHJOB, lambda m: m["spec"].update(nprocPerNode=2), "spec.nprocPerNode: 2 is not of type 'string'"),
    (JobKind.PYTORCHJOB, lambda m: m["metadata"].update(lables={"a": "b"}), "metadata.lables: unknown field 'lables'"),
    (JobKind.PYTORCHJOB, lambda m: m["metadata"]["labels"].update(team="ml ops"),
     "metadata.labels['team']: 'ml ops' is not a valid label value"),
    (JobKind.PYTORCHJOB, lambda m: m.update(kind="PytorchJob"), "kind: 'PytorchJob' is not 'PyTorchJob'"),
    (JobKind.PYTORCHJOB, lambda m: m.update(apiVersion="kubeflow.org/v2"),
     "apiVersion: 'kubeflow.org/v2' is not served by pytorchjobs.kubeflow.org (served: kubeflow.org/v1)"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None)
def test_the_validator_catches_a_real_mistake_and_names_its_path(kind: JobKind, change: Any, expected: str) -> None:
    errors = crd_errors(broken(kind, change), crd_path(CRD_OF[kind]))
    assert errors and errors[0].startswith(expected), errors
    with pytest.raises(CRDValidationError, match=re.escape(expected[:60])):
        validate_against_crd(broken(kind, change), crd_path(CRD_OF[kind]))


def test_the_trainjob_name_rules_come_from_metadata_checks_and_the_crds_cel_rules() -> None:
    errors = crd_errors(broken(JobKind.TRAINJOB, lambda m: m["metadata"].update(name="train.v2")), crd_path(TRAINJOBS))
    assert errors == ["<root>: metadata.name must match RFC 1035 DNS label format"]  # a valid subdomain, not a label
    errors = crd_errors(broken(JobKind.TRAINJOB, lambda m: m["metadata"].update(name="Train")), crd_path(TRAINJOBS))
    assert errors[0].startswith("metadata.name: 'Train' is not a DNS-1123 subdomain")
    errors = crd_errors(broken(JobKind.TRAINJOB, lambda m: m["metadata"].pop("name")), crd_path(TRAINJOBS))
    assert errors[0] == "metadata.name: required value (or generateName)"


def test_every_cel_rule_in_the_training_crds_is_evaluated_except_the_update_only_ones() -> None:
    skipped = []
    for filename in (TRAINJOBS, RUNTIMES, PYTORCHJOBS):
        for rule in cel_rules(crd_path(filename)):
            if rule.transition:
                skipped.append(rule.rule)
            else:
                compile_cel(rule.rule)  # raises CelError on anything the interpreter cannot read
    assert set(skipped) == {"self == oldSelf"}
    assert len(cel_rules(crd_path(TRAINJOBS))) > len(skipped) / 3


@pytest.mark.parametrize(("rule", "value", "expected"), [
    ("self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')", "s3://bucket/data", True),
    ("self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')", "bucket/data", False),
    ("!self.exists(c, c == 'node')", ["sidecar"], True),
    ("self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)",
     {"templates": [{"metadata": {"namespace": "x"}}]}, False),
    ("!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
     "self.replicatedJobs.exists(x, has(x.dependsOn)))",
     {"startupPolicy": {"startupPolicyOrder": "InOrder"}, "replicatedJobs": [{"dependsOn": []}]}, False),
    ("has(self.missing.field) || true", {}, True),  # CEL: true absorbs an error on the other side of ||
    ("self.size() > 1 ? self[1] : 'none'", ["a", "b"], "b"),
])
def test_the_cel_interpreter(rule: str, value: Any, expected: Any) -> None:
    assert compile_cel(rule)({"self": value}) == expected


SYNTHETIC_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: false
    storage: false
    schema: {openAPIV3Schema: {type: object}}
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            properties:
              template: {type: object, x-kubernetes-embedded-resource: true, x-kubernetes-preserve-unknown-fields: true}
              free: {type: object, x-kubernetes-preserve-unknown-fields: true}
              note: {type: string, nullable: true}
              tags: {type: array, items: {type: string}, x-kubernetes-list-type: set}
              port: {x-kubernetes-int-or-string: true}
"""


@pytest.fixture
def widget_crd(tmp_path: Path) -> Path:
    path = tmp_path / "example.com_widgets.yaml"
    path.write_text(SYNTHETIC_CRD)
    return path


def widget(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "a"}, "spec": spec}


def test_the_extensions_our_crds_do_not_use_yet(widget_crd: Path) -> None:
    good = widget(template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"anything": 1}},
                  free={"any": {"thing": [1]}}, note=None, tags=["a", "b"], port="http")
    assert crd_errors(good, widget_crd) == []
    assert crd_errors(widget(port=8080), widget_crd) == []
    assert crd_errors(widget(template={"kind": "Pod", "metadata": {"name": "Bad_Name", "lables": {}}}), widget_crd) == [
        "spec.template.apiVersion: an embedded resource needs a non-empty string",
        "spec.template.metadata.lables: unknown field 'lables'",
        "spec.template.metadata.name: 'Bad_Name' is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
        "starting and ending alphanumeric, at most 253)",
    ]
    assert crd_errors(widget(tags=["a", "a"]), widget_crd) == [
        "spec.tags[1]: duplicate value 'a' in a list of type set"]
    assert crd_errors(widget(port=[80]), widget_crd) == ["spec.port: [80] must be an integer or a string"]
    assert crd_errors(widget(colour="red"), widget_crd) == ["spec.colour: unknown field 'colour' (the API server "
                                                            "would drop it)"]
    unserved = {**widget(), "apiVersion": "example.com/v1beta1"}
    assert crd_errors(unserved, widget_crd) == [
        "apiVersion: 'example.com/v1beta1' is not served by widgets.example.com (served: example.com/v1)"]


def test_a_crd_that_preserves_unknown_fields_accepts_any_spec() -> None:
    experiment = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
                  "metadata": {"name": "tune", "namespace": "kubeflow-user"},
                  "spec": {"objective": {"type": "maximize"}, "anything": [1, {"else": True}]}}
    validate_against_crd(experiment, crd_path("katib_experiment.yaml"))


# --- TaskConfig passthrough ----------------------------------------------------------------------------------------


def test_resources_forwarded_by_a_kfp_task_become_the_nodes_resources() -> None:
    forwarded = dsl.TaskConfig(
        resources={"limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
                   "requests": {"cpu": "4", "memory": "16Gi"}},
        tolerations=[{"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}],
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
    )
    resources = resources_from_task_config(forwarded)
    assert resources == JobResources(
        cpu="8", memory="32Gi", gpus=2, gpu_resource="nvidia.com/gpu",
        tolerations=({"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},),
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"})
    manifest = build_manifest(job_spec(resources=resources), JobKind.TRAINJOB)
    validate_against_crd(manifest, crd_path(TRAINJOBS))


def test_requests_alone_and_no_accelerator() -> None:
    resources = resources_from_task_config(dsl.TaskConfig(resources={"requests": {"cpu": "500m", "memory": "2Gi"}}))
    assert (resources.cpu, resources.memory, resources.gpus) == ("500m", "2Gi", 0)


def test_an_empty_task_config_as_kfp_local_gives_it_keeps_the_defaults() -> None:
    default = JobResources(cpu="1", memory="4Gi")
    assert resources_from_task_config(dsl.TaskConfig(), default) == default
    assert resources_from_task_config(None) == JobResources()


def test_two_accelerators_are_refused() -> None:
    forwarded = dsl.TaskConfig(resources={"limits": {"nvidia.com/gpu": "1", "amd.com/gpu": "1"}})
    with pytest.raises(JobSpecError, match=re.escape("more than one accelerator resource ['amd.com/gpu', 'nvidia")):
        resources_from_task_config(forwarded)


# --- submit and wait, against a stand-in API server -----------------------------------------------------------------


def condition(kind: str, reason: str, message: str = "", status: str = "True") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-23T12:00:00Z"}


TRAINJOB_COMPLETES = [
    {},
    {"conditions": [condition("Created", "JobsCreated")]},
    {"conditions": [condition("Created", "JobsCreated"), condition("Running", "JobsRunning")],
     "trainerStatus": {"progressPercentage": 40, "lastUpdatedTime": "2026-11-23T12:01:00Z"}},
    {"conditions": [condition("Created", "JobsCreated"),
                    condition("Complete", "JobsCompleted", "TrainJob is completed")]},
]
PYTORCHJOB_SUCCEEDS = [
    {"conditions": [condition("Created", "PyTorchJobCreated")]},
    {"conditions": [condition("Created", "PyTorchJobCreated"), condition("Running", "PyTorchJobRunning")]},
    {"conditions": [condition("Created", "PyTorchJobCreated"),
                    condition("Running", "PyTorchJobRunning", status="False"),
                    condition("Succeeded", "PyTorchJobSucceeded",
                              "PyTorchJob train-3f2a9c is successfully completed.")]},
]
TRAINJOB_FAILS = [
    {"conditions": [condition("Created", "JobsCreated")]},
    {"conditions": [condition("Created", "JobsCreated"),
                    condition("Failed", "TrainingFailed", "node-1 exited with code 1: ZeroDivisionError")]},
]


def job_apiserver(kinds: tuple[JobKind, ...], script: Any) -> FakeApiServer:
    """A FakeApiServer serving these job kinds, validating each created job against its real CRD."""
    validators = {kind.resource: functools.partial(crd_errors, crd_path=crd_path(CRD_OF[kind])) for kind in kinds}
    return FakeApiServer(validators, script)


@pytest.fixture
def apiserver(request: pytest.FixtureRequest) -> Iterator[FakeApiServer]:
    served, script = getattr(request, "param", ((JobKind.TRAINJOB, JobKind.PYTORCHJOB), TRAINJOB_COMPLETES))
    with job_apiserver(served, script) as server:
        yield server


def no_sleep(seconds: float) -> None:
    pass


def test_a_trainjob_is_submitted_and_followed_to_complete(apiserver: FakeApiServer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    api = apiserver.api()
    manifest = build_manifest(job_spec(2, 1), JobKind.TRAINJOB)
    with caplog.at_level(logging.INFO, logger="slipway.components"):
        created = submit(manifest, api)
        finished = wait(created, api, poll_s=0.01, sleep=no_sleep)
    assert created["metadata"]["uid"] and created["spec"] == manifest["spec"]
    assert finished["status"]["conditions"][-1]["type"] == "Complete"
    assert apiserver.requests[0] == "POST /apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow-user/trainjobs"
    assert [r.getMessage() for r in caplog.records] == [
        "created TrainJob kubeflow-user/train-3f2a9c (2 nodes)",
        "TrainJob kubeflow-user/train-3f2a9c: no conditions yet",
        "TrainJob kubeflow-user/train-3f2a9c: Created (JobsCreated)",
        "TrainJob kubeflow-user/train-3f2a9c: Created, Running (JobsRunning), 40% done",
        "TrainJob kubeflow-user/train-3f2a9c: Created, Complete (JobsCompleted: TrainJob is completed)",
    ]


@pytest.mark.parametrize("apiserver", [((JobKind.PYTORCHJOB,), PYTORCHJOB_SUCCEEDS)], indirect=True)
def test_a_pytorchjob_on_a_training_operator_cluster(apiserver: FakeApiServer) -> None:
    api = apiserver.api()
    kind = available_job_kind(api)
    assert kind is JobKind.PYTORCHJOB
    finished = wait(submit(build_manifest(job_spec(3), kind), api), api, poll_s=0.01, sleep=no_sleep)
    assert [c["type"] for c in finished["status"]["conditions"] if c["status"] == "True"] == ["Created", "Succeeded"]


def test_the_cluster_prefers_trainjobs_when_it_serves_both(apiserver: FakeApiServer) -> None:
    assert available_job_kind(apiserver.api()) is JobKind.TRAINJOB


@pytest.mark.parametrize("apiserver", [((), TRAINJOB_COMPLETES)], indirect=True)
def test_a_cluster_without_either_operator_is_named_plainly(apiserver: FakeApiServer) -> None:
    with pytest.raises(SubmitError, match="the cluster serves neither trainer.kubeflow.org/v1alpha1 trainjobs "
                                             r"\(Kubeflow Trainer\) nor kubeflow.org/v1 pytorchjobs"):
        available_job_kind(apiserver.api())


@pytest.mark.parametrize("apiserver", [((JobKind.TRAINJOB,), TRAINJOB_FAILS)], indirect=True)
def test_a_failed_job_raises_naming_the_job_and_the_condition(apiserver: FakeApiServer) -> None:
    api = apiserver.api()
    created = submit(build_manifest(job_spec(2), JobKind.TRAINJOB), api)
    with pytest.raises(ObjectFailedError) as raised:
        wait(created, api, poll_s=0.01, sleep=no_sleep)
    assert str(raised.value) == ("TrainJob kubeflow-user/train-3f2a9c failed: TrainingFailed: "
                                 "node-1 exited with code 1: ZeroDivisionError")


@pytest.mark.parametrize("apiserver", [((JobKind.TRAINJOB,), TRAINJOB_COMPLETES[:3])], indirect=True)
def test_a_job_that_never_finishes_times_out_with_what_was_last_seen(apiserver: FakeApiServer) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    api = apiserver.api()
    created = submit(build_manifest(job_spec(), JobKind.TRAINJOB), api)
    with pytest.raises(WaitTimeoutError) as raised:
        wait(created, api, timeout_s=60, poll_s=15, sleep=sleep, clock=lambda: now[0])
    assert isinstance(raised.value, TimeoutError)
    assert str(raised.value) == ("TrainJob kubeflow-user/train-3f2a9c did not finish within 60 s; last seen: "
                                 "Created, Running (JobsRunning), 40% done")


def test_a_transient_api_error_while_waiting_is_polled_again(apiserver: FakeApiServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    api = apiserver.api()
    created = submit(build_manifest(job_spec(), JobKind.TRAINJOB), api)
    apiserver.fail_gets = 2
    with caplog.at_level(logging.WARNING, logger="slipway.components"):
        assert wait(created, api, poll_s=0.01, sleep=no_sleep)["status"]["conditions"][-1]["type"] == "Complete"
    assert "status not readable (HTTP 503); polling again" in caplog.text


def test_a_job_deleted_while_waiting(apiserver: FakeApiServer) -> None:
    api = apiserver.api()
    manifest = build_manifest(job_spec(), JobKind.TRAINJOB)
    with pytest.raises(CustomObjectError, match=r"could not read TrainJob kubeflow-user/train-3f2a9c \(deleted while "
                                                r"we waited\?\): HTTP 404 trainjobs.trainer.kubeflow.org "
                                                r"\"train-3f2a9c\" not found"):
        wait(manifest, api, poll_s=0.01, sleep=no_sleep)


def test_an_invalid_manifest_is_refused_with_the_api_servers_reason(apiserver: FakeApiServer) -> None:
    manifest = build_manifest(job_spec(), JobKind.TRAINJOB)
    manifest["spec"]["trainer"]["numProcPerNod"] = 2
    with pytest.raises(SubmitError) as raised:
        submit(manifest, apiserver.api())
    assert str(raised.value) == (
        'could not create TrainJob kubeflow-user/train-3f2a9c: HTTP 422 TrainJob.trainer.kubeflow.org "train-3f2a9c" '
        "is invalid: spec.trainer.numProcPerNod: unknown field 'numProcPerNod' (the API server would drop it)")


def test_a_second_submit_conflicts_unless_it_adopts_the_existing_job(apiserver: FakeApiServer) -> None:
    api = apiserver.api()
    manifest = build_manifest(job_spec(), JobKind.PYTORCHJOB)
    first = submit(manifest, api)
    with pytest.raises(SubmitError, match='HTTP 409 pytorchjobs.kubeflow.org "train-3f2a9c" already exists'):
        submit(manifest, api)
    adopted = submit(manifest, api, adopt_existing=True)
    assert adopted["metadata"]["uid"] == first["metadata"]["uid"]


def test_an_unknown_manifest_kind_is_refused_before_any_request() -> None:
    with pytest.raises(JobSpecError, match="not a TrainJob .* or PyTorchJob .*: apiVersion 'batch/v1', kind 'Job'"):
        submit({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "namespace": "y"}},
               client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))


def test_the_vendored_crds_are_the_shared_ones() -> None:
    shared = ROOT.parent / "shared" / "crds"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not beside this checkout (a clean clone elsewhere): nothing to compare")
    for vendored in sorted(CRDS_DIR.iterdir()):
        assert vendored.read_bytes() == (shared / vendored.name).read_bytes(), f"{vendored} differs from {shared}"
    assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in CRDS_DIR.iterdir())

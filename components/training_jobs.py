"""Distributed training on the cluster: a Kubeflow Trainer `TrainJob`, or a Training Operator `PyTorchJob`.

Locally, `launcher` runs `torchrun` on this machine. On Kubeflow the `train` component instead asks
the cluster for N training nodes, each running `torchrun <the trainer's argv>`:

- **Kubeflow Trainer v2** (current): a `TrainJob` (trainer.kubeflow.org/v1alpha1) that references the
  `torch-distributed` ClusterTrainingRuntime. The runtime's Torch plugin sets `PET_NNODES`,
  `PET_NPROC_PER_NODE`, `PET_NODE_RANK`, `PET_MASTER_ADDR` and `PET_MASTER_PORT` in the `node`
  container, which `torchrun` reads, so the command is plain `torchrun <argv>`.
- **Training Operator v1** (legacy, still widely deployed): a `PyTorchJob` (kubeflow.org/v1) with one
  Master and N-1 Workers. The operator sets `PET_NNODES`, `PET_NPROC_PER_NODE` and `PET_NODE_RANK`
  but the rendezvous address only as `MASTER_ADDR`/`MASTER_PORT`, so the command passes those to
  `torchrun` explicitly (`$(VAR)` is expanded by the kubelet).

`available_job_kind` asks the cluster's discovery API which of the two it serves.

Both objects are built with official model classes: the TrainJob entirely with `kubeflow_trainer_api`
models (the Kubeflow SDK's own); the PyTorchJob's pod template with the `kubernetes` client's V1
models inside a small envelope dict (apiVersion, kind, metadata, spec.nprocPerNode and
spec.pytorchReplicaSpecs), because the official PyTorchJob models (`kubeflow-training` 1.9.4) install
a second `kubeflow/__init__.py` over the Kubeflow SDK's (see `build_pytorchjob`). The tests validate
both against the real CRDs.

Submission goes through the Kubernetes `CustomObjectsApi`, the same call the Kubeflow SDK's
`TrainerClient.train` makes: `TrainerClient` cannot take a prebuilt TrainJob (it builds its own from a
`CustomTrainer`/`CustomTrainerContainer`, whose env holds literal values only, so object-storage
credentials could not come from a Secret), and its `wait_for_job_status` reports a failure without the
condition's message. `wait` here (`custom_objects.follow`) names the job and the failing condition's reason and message.

GPU nodes: with `gpus > 0` every node requests and is limited to that many `gpu_resource`, and
tolerates the `<gpu_resource>:NoSchedule` taint that GPU node pools carry. A KFP task forwards the
resources set on it (`set_cpu_limit`, `set_accelerator_type`, ...) through `dsl.TaskConfig` to
`resources_from_task_config`, so the launching pod itself stays small.

    spec = DistributedJobSpec(name=job_name("train", run_id), namespace=custom_objects.pod_namespace(), image=IMAGE,
                              command=("-m", "slipway.components.trainer", "--train", train_uri, ...),
                              num_nodes=2, resources=resources_from_task_config(task_config))
    api = custom_objects.kube_client()
    manifest = build_manifest(spec, available_job_kind(api))
    finished = wait(submit(manifest, api), api)
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubeflow_trainer_api import models
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import BaseModel

from slipway import cluster, pod_security
from slipway.components import custom_objects
from slipway.components.custom_objects import CustomResource
from slipway.quantities import is_positive_quantity, parse_quantity

log = logging.getLogger(__name__)

TORCHRUN = "torchrun"
TRAINER_RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime that Kubeflow Trainer ships for torchrun
TRAINER_NODE = "node"  # the runtime's replicated job, and its container, that run the trainer
PATCH_MANAGER = "slipway.kubeflow.org/train"  # our entry in spec.runtimePatches, keyed by manager
PYTORCH_CONTAINER = "pytorch"  # the Training Operator finds the trainer container, and its port, by these names
PYTORCH_PORT_NAME = "pytorchjob-port"
PYTORCH_PORT = 23456
RESTART_POLICY = "OnFailure"
MAX_HOSTNAME = 63  # a pod hostname (and its headless-service DNS label) is a DNS label

# Environment the training operators set themselves: the Trainer webhook rejects PET_* in a TrainJob,
# and the Training Operator would append a second, conflicting MASTER_ADDR/RANK/WORLD_SIZE.
RESERVED_ENV = re.compile(r"PET_.*|MASTER_ADDR|MASTER_PORT|WORLD_SIZE|RANK")
DEFAULT_CREDENTIALS_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}

_RFC1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_TOLERATION_FIELDS = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
                      "tolerationSeconds": "toleration_seconds"}
# Resource names that are not accelerators, when reading a task's forwarded resources.
_NOT_ACCELERATORS = {"cpu", "memory", "ephemeral-storage", "storage"}


class JobSpecError(ValueError):
    """A job cannot be built as specified; the message names the field and the rule it breaks."""


class JobKind(enum.Enum):
    """The two custom resources that can run distributed PyTorch: where they live and how they finish."""

    TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", "Complete")
    PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", "Succeeded")

    def __init__(self, group: str, version: str, plural: str, kind: str, succeeded: str):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.succeeded = succeeded  # the condition type that means the training finished well

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def resource(self) -> CustomResource:
        return CustomResource(self.group, self.version, self.plural, self.kind, self.succeeded)

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> JobKind:
        """The kind of a manifest, from its apiVersion and kind."""
        for kind in cls:
            if manifest.get("apiVersion") == kind.api_version and manifest.get("kind") == kind.kind:
                return kind
        raise JobSpecError(f"not a TrainJob ({cls.TRAINJOB.api_version}) or PyTorchJob ({cls.PYTORCHJOB.api_version}):"
                           f" apiVersion {manifest.get('apiVersion')!r}, kind {manifest.get('kind')!r}")


# --- what to run -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobResources:
    """What each training node asks the scheduler for; requests equal limits, as the Kubeflow SDK sets them.

    `tolerations` (Kubernetes JSON shape, e.g. `{"key": "pool", "operator": "Equal", "value": "a100",
    "effect": "NoSchedule"}`) and `node_selector` are added to the GPU toleration, which comes by itself
    when `gpus > 0`.
    """

    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tolerations", tuple(dict(t) for t in self.tolerations))
        object.__setattr__(self, "node_selector", dict(self.node_selector))
        for field in ("cpu", "memory"):
            value = getattr(self, field)
            if not is_positive_quantity(value):
                raise JobSpecError(f"JobResources.{field}: {value!r} is not a positive Kubernetes quantity "
                                   "(e.g. '2', '500m', '8Gi')")
        if not _is_int(self.gpus) or self.gpus < 0:
            raise JobSpecError(f"JobResources.gpus: {self.gpus!r} is not a whole number of GPUs (0 or more)")
        prefix, _, name = self.gpu_resource.rpartition("/")
        if not (_is_dns1123_subdomain(prefix) and _is_qualified_name(name)):
            raise JobSpecError(f"JobResources.gpu_resource: {self.gpu_resource!r} is not an extended resource name "
                               "(<domain>/<name>, e.g. 'nvidia.com/gpu')")
        for index, toleration in enumerate(self.tolerations):
            unknown = sorted(set(toleration) - set(_TOLERATION_FIELDS))
            if unknown:
                raise JobSpecError(f"JobResources.tolerations[{index}]: unknown field(s) {unknown}; "
                                   f"a toleration has {sorted(_TOLERATION_FIELDS)}")
        for key, value in self.node_selector.items():
            if not _is_qualified_name(key) or not _is_label_value(value):
                raise JobSpecError(f"JobResources.node_selector[{key!r}]: {value!r} is not a valid label selector")

    def quantities(self) -> dict[str, str]:
        """The per-node resource list, e.g. {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}."""
        found = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus:
            found[self.gpu_resource] = str(self.gpus)
        return found

    def all_tolerations(self) -> list[dict[str, Any]]:
        """The tolerations the pods need: the GPU taint's when there are GPUs, then the extra ones."""
        gpu = {"key": self.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}
        extra = [dict(t) for t in self.tolerations if dict(t) != gpu]
        return ([gpu] if self.gpus else []) + extra


@dataclasses.dataclass(frozen=True)
class DistributedJobSpec:
    """One distributed training job, whichever custom resource runs it.

    `command` is the trainer's argv after `torchrun` (e.g. `("-m", "slipway.components.trainer",
    "--train", "s3://...")`): the job runs `torchrun` itself. `nproc_per_node` "auto" means one process
    per GPU, or per whole CPU core requested when there is no GPU (as the Trainer's Torch plugin does;
    torchrun's own "auto" would count the host's cores, not the container's).

    Object-storage credentials come from the Secret `credentials_secret`, one optional `secretKeyRef` per
    entry of `credentials_keys` (env name -> key in the Secret), never as values in the job: the TrainJob's
    trainer has no `envFrom`, so both kinds use the same explicit list, which also lets a Secret with
    other key names (KFP's `mlpipeline-minio-artifact` has `accesskey`/`secretkey`) serve. Optional, as
    the KFP task's own: on Workload Identity there is no Secret and the pods start without one.

    `task_env` is the env the KFP task forwarded (`env_from_task_config`), Kubernetes EnvVar dicts with a
    `value` or a `valueFrom`; a name that `env` or the credentials also set keeps their value.
    """

    name: str
    namespace: str
    image: str
    command: Sequence[str]
    num_nodes: int = 1
    nproc_per_node: int | str = "auto"
    resources: JobResources = dataclasses.field(default_factory=JobResources)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    credentials_secret: str | None = None
    credentials_keys: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_CREDENTIALS_KEYS))
    task_env: Sequence[Mapping[str, Any]] = ()
    service_account: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for field, kind in (("command", tuple), ("env", dict), ("credentials_keys", dict), ("labels", dict)):
            object.__setattr__(self, field, kind(getattr(self, field)))
        object.__setattr__(self, "task_env", tuple(dict(variable) for variable in self.task_env))
        if not isinstance(self.name, str) or len(self.name) > MAX_HOSTNAME or not _RFC1035_LABEL.fullmatch(self.name):
            raise JobSpecError(f"DistributedJobSpec.name: {self.name!r} is not a valid job name: use at most 63 "
                               "lowercase letters, digits and '-', starting with a letter and ending with a letter "
                               "or digit (an RFC 1035 label, as the TrainJob CRD requires)")
        if not _is_dns1123_label(self.namespace):
            raise JobSpecError(f"DistributedJobSpec.namespace: {self.namespace!r} is not a namespace name "
                               "(a DNS-1123 label)")
        if not isinstance(self.image, str) or not self.image or re.search(r"\s", self.image):
            raise JobSpecError(f"DistributedJobSpec.image: {self.image!r} is not a container image reference")
        if not self.command or not all(isinstance(arg, str) for arg in self.command):
            raise JobSpecError(f"DistributedJobSpec.command: {self.command!r} must be a non-empty list of strings")
        if Path(self.command[0]).name in (TORCHRUN, "torch.distributed.run"):
            raise JobSpecError("DistributedJobSpec.command: give the trainer's argv after torchrun "
                               f"(e.g. ['-m', 'slipway.components.trainer', ...]); the job runs {TORCHRUN} itself")
        if not _is_int(self.num_nodes) or self.num_nodes < 1:
            raise JobSpecError(f"DistributedJobSpec.num_nodes: {self.num_nodes!r} must be a whole number, at least 1")
        if self.nproc_per_node != "auto" and (not _is_int(self.nproc_per_node) or self.nproc_per_node < 1):
            raise JobSpecError(f"DistributedJobSpec.nproc_per_node: {self.nproc_per_node!r} must be 'auto' or a "
                               "whole number, at least 1 (a TrainJob's numProcPerNode is an integer)")
        if not isinstance(self.resources, JobResources):
            raise JobSpecError(f"DistributedJobSpec.resources: expected JobResources, got {type(self.resources)}")
        for name, value in self.env.items():
            _check_env_name(name, f"DistributedJobSpec.env[{name!r}]")
            if not isinstance(value, str):
                raise JobSpecError(f"DistributedJobSpec.env[{name!r}]: the value must be a string, got {value!r}")
        if self.credentials_secret is not None:
            if not _is_dns1123_subdomain(self.credentials_secret):
                raise JobSpecError(f"DistributedJobSpec.credentials_secret: {self.credentials_secret!r} is not a "
                                   "Secret name (a DNS-1123 subdomain)")
            if not self.credentials_keys:
                raise JobSpecError("DistributedJobSpec.credentials_keys: name at least one env var -> Secret key")
            for name, key in self.credentials_keys.items():
                _check_env_name(name, f"DistributedJobSpec.credentials_keys[{name!r}]")
                if name in self.env:
                    raise JobSpecError(f"DistributedJobSpec.credentials_keys[{name!r}]: also set in env; "
                                       "a variable comes from the Secret or from env, not both")
                if not isinstance(key, str) or not _SECRET_KEY.fullmatch(key):
                    raise JobSpecError(f"DistributedJobSpec.credentials_keys[{name!r}]: {key!r} is not a Secret "
                                       "key ([-._a-zA-Z0-9]+)")
        for index, variable in enumerate(self.task_env):
            where = f"DistributedJobSpec.task_env[{index}]"
            _check_env_name(variable.get("name"), where)
            if not isinstance(variable.get("value", ""), str) or not isinstance(variable.get("valueFrom", {}), dict):
                raise JobSpecError(f"{where}: {variable!r} is not a Kubernetes EnvVar (a string value or a valueFrom)")
        if self.service_account is not None and not _is_dns1123_subdomain(self.service_account):
            raise JobSpecError(f"DistributedJobSpec.service_account: {self.service_account!r} is not a "
                               "ServiceAccount name (a DNS-1123 subdomain)")
        for key, value in self.labels.items():
            if not _is_qualified_name(key):
                raise JobSpecError(f"DistributedJobSpec.labels[{key!r}]: the key is not a label key "
                                   "([prefix/]name, name at most 63 characters)")
            if not _is_label_value(value):
                raise JobSpecError(f"DistributedJobSpec.labels[{key!r}]: {value!r} is not a label value "
                                   "(at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric)")

    def processes_per_node(self) -> int:
        """`nproc_per_node` resolved: "auto" is one per GPU, or one per whole CPU core without GPUs."""
        if self.nproc_per_node != "auto":
            return int(self.nproc_per_node)
        if self.resources.gpus:
            return self.resources.gpus
        return max(1, math.floor(parse_quantity(self.resources.cpu)))


# --- building the objects -----------------------------------------------------------------------------------


def build_trainjob(spec: DistributedJobSpec) -> models.TrainerV1alpha1TrainJob:
    """The Kubeflow Trainer v2 TrainJob running `torchrun <spec.command>` on the torch-distributed runtime.

    Image, command, node count, processes, resources and env go in `spec.trainer`; what the Trainer
    API only lets a TrainJob change through a runtime patch (tolerations, node selector, service
    account, pod labels, the pod's and the `node` container's securityContext) goes in one
    `spec.runtimePatches` entry for the runtime's `node` job.
    """
    _check_hostname(spec, f"{spec.name}-{TRAINER_NODE}-{spec.num_nodes - 1}-0", "pod hostname")
    quantities = spec.resources.quantities()
    trainer = models.TrainerV1alpha1Trainer(
        image=spec.image,
        command=[TORCHRUN],
        args=list(spec.command),
        num_nodes=spec.num_nodes,
        num_proc_per_node=spec.processes_per_node(),
        resources_per_node=models.IoK8sApiCoreV1ResourceRequirements(
            requests={k: models.IoK8sApimachineryPkgApiResourceQuantity(v) for k, v in quantities.items()},
            limits={k: models.IoK8sApimachineryPkgApiResourceQuantity(v) for k, v in quantities.items()},
        ),
        env=[models.IoK8sApiCoreV1EnvVar.from_dict(variable) for variable in _env(spec)] or None,
    )
    pod_patch = models.TrainerV1alpha1PodSpecPatch(
        service_account_name=spec.service_account,
        tolerations=[models.IoK8sApiCoreV1Toleration.from_dict(t) for t in spec.resources.all_tolerations()] or None,
        node_selector=dict(spec.resources.node_selector) or None,
        security_context=models.IoK8sApiCoreV1PodSecurityContext.from_dict(
            pod_security.as_json(pod_security.pod_context())),
        containers=[models.TrainerV1alpha1ContainerPatch(
            name=TRAINER_NODE, security_context=models.IoK8sApiCoreV1SecurityContext.from_dict(
                pod_security.as_json(pod_security.container_context())))],
    )
    node_job = models.TrainerV1alpha1ReplicatedJobPatch(
        name=TRAINER_NODE,
        template=models.TrainerV1alpha1JobTemplatePatch(spec=models.TrainerV1alpha1JobSpecPatch(
            template=models.TrainerV1alpha1PodTemplatePatch(
                metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(labels=dict(spec.labels))
                if spec.labels else None,
                spec=pod_patch,
            ))),
    )
    patches = [models.TrainerV1alpha1RuntimePatch(
        manager=PATCH_MANAGER,
        training_runtime_spec=models.TrainerV1alpha1TrainingRuntimeSpecPatch(
            template=models.TrainerV1alpha1JobSetTemplatePatch(
                spec=models.TrainerV1alpha1JobSetSpecPatch(replicated_jobs=[node_job]))),
    )]
    return models.TrainerV1alpha1TrainJob(
        api_version=JobKind.TRAINJOB.api_version,
        kind=JobKind.TRAINJOB.kind,
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=spec.name, namespace=spec.namespace, labels=dict(spec.labels) or None),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtime_ref=models.TrainerV1alpha1RuntimeRef(
                api_group=JobKind.TRAINJOB.group, kind="ClusterTrainingRuntime", name=TRAINER_RUNTIME),
            trainer=trainer,
            runtime_patches=patches,
        ),
    )


def build_pytorchjob(spec: DistributedJobSpec) -> dict[str, Any]:
    """The Training Operator v1 PyTorchJob: one Master and `num_nodes - 1` Workers, restarted on failure.

    The pod template is the `kubernetes` client's V1 models; the envelope is a dict with exactly the
    PyTorchJob fields we set (apiVersion, kind, metadata, spec.nprocPerNode, spec.pytorchReplicaSpecs
    .<Master|Worker>.{replicas, restartPolicy, template}). The official models (`kubeflow-training`
    1.9.4, `kubeflow.training.models.KubeflowOrgV1PyTorchJob`) resolve with our pins and import beside
    the Kubeflow SDK, but both wheels own `kubeflow/__init__.py`: whichever installs last overwrites
    the other's, and uninstalling either deletes it for both. Their ReplicaSpec takes the same V1
    pod template, so switching later changes only this envelope. `to_manifest` serializes it.
    """
    last = f"{spec.name}-worker-{spec.num_nodes - 2}" if spec.num_nodes > 1 else f"{spec.name}-master-0"
    _check_hostname(spec, last, "pod and service name")
    quantities = spec.resources.quantities()
    container = client.V1Container(
        name=PYTORCH_CONTAINER,
        image=spec.image,
        # The operator sets MASTER_ADDR/MASTER_PORT (not PET_MASTER_*): hand them to torchrun.
        command=[TORCHRUN, "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"],
        args=list(spec.command),
        env=[_v1_env_var(variable) for variable in _env(spec)] or None,
        resources=client.V1ResourceRequirements(requests=dict(quantities), limits=dict(quantities)),
        ports=[client.V1ContainerPort(name=PYTORCH_PORT_NAME, container_port=PYTORCH_PORT)],
        security_context=pod_security.container_context(),
    )
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=dict(spec.labels)) if spec.labels else None,
        spec=client.V1PodSpec(
            containers=[container],
            service_account_name=spec.service_account,
            tolerations=[client.V1Toleration(**{_TOLERATION_FIELDS[k]: v for k, v in t.items()})
                         for t in spec.resources.all_tolerations()] or None,
            node_selector=dict(spec.resources.node_selector) or None,
            security_context=pod_security.pod_context(),
        ),
    )
    replicas = {"Master": 1, "Worker": spec.num_nodes - 1}
    return {
        "apiVersion": JobKind.PYTORCHJOB.api_version,
        "kind": JobKind.PYTORCHJOB.kind,
        "metadata": client.V1ObjectMeta(name=spec.name, namespace=spec.namespace, labels=dict(spec.labels) or None),
        "spec": {
            "nprocPerNode": str(spec.processes_per_node()),
            "pytorchReplicaSpecs": {
                role: {"replicas": count, "restartPolicy": RESTART_POLICY, "template": template}
                for role, count in replicas.items() if count
            },
        },
    }


def build_manifest(spec: DistributedJobSpec, kind: JobKind) -> dict[str, Any]:
    """The manifest (plain JSON, camelCase) of `spec` as a TrainJob or a PyTorchJob."""
    return to_manifest(build_trainjob(spec) if kind is JobKind.TRAINJOB else build_pytorchjob(spec))


def to_manifest(job: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON types with the API's camelCase names, as kubectl and the API server want them.

    A Kubeflow Trainer model serializes itself (`to_dict`, which unwraps quantities); a dict holding
    `kubernetes` client models goes through the client's own `sanitize_for_serialization`.
    """
    data = job.to_dict() if isinstance(job, BaseModel) else job
    return _serializer().sanitize_for_serialization(data)


@functools.cache
def _serializer() -> client.ApiClient:
    return client.ApiClient(client.Configuration())


def _env(spec: DistributedJobSpec) -> list[dict[str, Any]]:
    """The trainer container's env (Kubernetes JSON shape): the plain values, the task's, then the Secret's keys."""
    variables: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in spec.env.items()]
    credentials = credential_env(spec.credentials_secret, spec.credentials_keys) if spec.credentials_secret else []
    taken = set(spec.env) | {variable["name"] for variable in credentials}
    variables += [variable for variable in spec.task_env if variable["name"] not in taken]
    return variables + credentials


def credential_env(secret: str, keys: Mapping[str, str] = DEFAULT_CREDENTIALS_KEYS) -> list[dict[str, Any]]:
    """Object-storage credentials as container env read from a Secret (env name -> key), never as values.

    Optional, so that a cluster whose pods reach storage without keys (Workload Identity) needs no Secret.
    """
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for name, key in keys.items()]


def mlflow_credentials_env() -> list[dict[str, Any]]:
    """MLflow's basic-auth user and password from `slipway-auth` (`slipway.cluster`), which MLflow's client
    reads itself; optional like the storage keys, since an MLflow without authentication needs none."""
    return credential_env(cluster.AUTH_SECRET, {key: key for key in cluster.MLFLOW_AUTH_KEYS})


def cluster_env(tracking_uri: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The plain settings a training job needs from the cluster (`slipway.cluster.CONFIG_KEYS`, as this pod has
    them from the `slipway-config` ConfigMap), with the tracking URI the task resolved."""
    environ = os.environ if environ is None else environ
    settings = {key: environ[key] for key in cluster.CONFIG_KEYS if environ.get(key, "").strip()}
    return {**settings, "MLFLOW_TRACKING_URI": tracking_uri}


def env_from_task_config(task_config: Any) -> tuple[dict[str, Any], ...]:
    """The env a KFP task forwarded through `dsl.TaskConfig` (EnvVar dicts), empty under kfp.local."""
    return tuple(dict(variable) for variable in getattr(task_config, "env", None) or ())


# Each EnvVarSource field and the V1 model of its selector.
_ENV_SOURCES = {"secretKeyRef": ("secret_key_ref", client.V1SecretKeySelector),
                "configMapKeyRef": ("config_map_key_ref", client.V1ConfigMapKeySelector),
                "fieldRef": ("field_ref", client.V1ObjectFieldSelector),
                "resourceFieldRef": ("resource_field_ref", client.V1ResourceFieldSelector)}
_SELECTOR_FIELDS = {"fieldPath": "field_path", "apiVersion": "api_version", "containerName": "container_name"}


def _v1_env_var(variable: Mapping[str, Any]) -> client.V1EnvVar:
    """An EnvVar in Kubernetes JSON shape as the `kubernetes` client's V1 model."""
    source = variable.get("valueFrom")
    if not source:
        return client.V1EnvVar(name=variable["name"], value=variable.get("value"))
    unknown = set(source) - set(_ENV_SOURCES)
    if unknown or len(source) != 1:
        raise JobSpecError(f"env {variable['name']}: valueFrom {source!r} is not one of {sorted(_ENV_SOURCES)}")
    [(kind, selector)] = source.items()
    field, model = _ENV_SOURCES[kind]
    selector = model(**{_SELECTOR_FIELDS.get(key, key): value for key, value in selector.items()})
    return client.V1EnvVar(name=variable["name"], value_from=client.V1EnvVarSource(**{field: selector}))


# --- KFP task config -------------------------------------------------------------------------------------


def resources_from_task_config(task_config: Any, default: JobResources | None = None) -> JobResources:
    """The per-node resources a KFP task forwarded through `dsl.TaskConfig`, over `default`.

    `task_config` is the `dsl.TaskConfig` a component receives when declared with
    `task_config_passthroughs=[dsl.TaskConfigField.RESOURCES, ...]`: `resources` is a Kubernetes
    ResourceRequirements dict (`{"limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    "requests": {...}}`), `tolerations` a list of toleration dicts, `node_selector` a dict. A limit wins
    over a request (it is what the task was allowed); the one accelerator resource, if any, becomes the
    GPU request. Under kfp.local every field is None and `default` comes back unchanged.
    """
    default = default or JobResources()
    resources = getattr(task_config, "resources", None) or {}
    limits = dict(resources.get("limits") or {})
    requests = dict(resources.get("requests") or {})

    def forwarded(name: str) -> str | None:
        value = limits.get(name, requests.get(name))
        return None if value is None else str(value)

    accelerators = sorted({name for name in (*limits, *requests)
                           if name not in _NOT_ACCELERATORS and not name.startswith("hugepages-")})
    if len(accelerators) > 1:
        raise JobSpecError(f"TaskConfig.resources: more than one accelerator resource {accelerators}; "
                           "a training node asks for one kind")
    gpus, gpu_resource = default.gpus, default.gpu_resource
    if accelerators:
        gpu_resource = accelerators[0]
        try:
            count = parse_quantity(forwarded(gpu_resource) or "0")
        except ValueError as error:
            raise JobSpecError(f"TaskConfig.resources: {gpu_resource}: {error}") from None
        if count != int(count):
            raise JobSpecError(f"TaskConfig.resources: {gpu_resource} = {forwarded(gpu_resource)!r} is not whole")
        gpus = int(count)
    tolerations = getattr(task_config, "tolerations", None)
    node_selector = getattr(task_config, "node_selector", None)
    return JobResources(
        cpu=forwarded("cpu") or default.cpu,
        memory=forwarded("memory") or default.memory,
        gpus=gpus,
        gpu_resource=gpu_resource,
        tolerations=tuple(tolerations) if tolerations else default.tolerations,
        node_selector=node_selector if node_selector else default.node_selector,
    )


# --- talking to the cluster ---------------------------------------------------------------------------------


def job_name(prefix: str, unique: str, max_length: int = 40) -> str:
    """A job name from a readable prefix and a unique token (a KFP run id): the same token, the same name.

    The result is an RFC 1035 label of at most `max_length` (default 40, leaving room for the pod
    hostnames the operators derive from it). A retried KFP task gets the same name, so `submit` with
    `adopt_existing=True` follows the job its first attempt started instead of starting a second one.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    slug = slug if slug[:1].isalpha() else f"job-{slug}".rstrip("-")
    digest = hashlib.sha256(unique.encode()).hexdigest()[:10]
    return f"{slug[:max_length - len(digest) - 1].rstrip('-')}-{digest}"


def available_job_kind(api: client.ApiClient) -> JobKind:
    """The job kind this cluster serves, preferring Kubeflow Trainer, from the discovery API.

    Discovery (`GET /apis/<group>/<version>`) is open to every authenticated user, so a pipeline's
    service account needs no extra role to ask.
    """
    custom = client.CustomObjectsApi(api)
    for kind in JobKind:
        try:
            served = custom.get_api_resources(kind.group, kind.version, _request_timeout=30)
        except ApiException as error:
            if error.status == 404:
                continue
            raise custom_objects.SubmitError(
                f"could not ask the cluster whether it serves {kind.api_version} {kind.plural}: "
                f"HTTP {error.status} {custom_objects.api_reason(error)}") from None
        if any(resource.name == kind.plural for resource in served.resources or []):
            return kind
    raise custom_objects.SubmitError(f"the cluster serves neither {JobKind.TRAINJOB.api_version} trainjobs "
                                     f"(Kubeflow Trainer) nor {JobKind.PYTORCHJOB.api_version} pytorchjobs "
                                     "(Training Operator)")


def submit(manifest: Mapping[str, Any], api: client.ApiClient, *, adopt_existing: bool = False) -> dict[str, Any]:
    """Creates the job in its namespace (`custom_objects.create`); returns the object as the API server stored it.

    With `adopt_existing`, a job of the same name that already exists is returned instead of an error
    (a retried KFP task following the job its first attempt created).
    """
    kind = JobKind.of(manifest)
    created = custom_objects.create(manifest, kind.resource, api, adopt_existing=adopt_existing)
    log.info("created %s (%s nodes)", custom_objects.describe(kind.resource, manifest), _node_count(manifest))
    return created


def wait(job: Mapping[str, Any], api: client.ApiClient, **follow: Any) -> dict[str, Any]:
    """Follows the job until its success condition (TrainJob `Complete`, PyTorchJob `Succeeded`); returns it.

    `custom_objects.follow` with the Trainer's progress percentage: raises ObjectFailedError with the
    `Failed` condition's reason and message, WaitTimeoutError after `timeout_s`.
    """
    return custom_objects.follow(job, JobKind.of(job).resource, api, progress=_trainer_progress, **follow)


def _node_count(manifest: Mapping[str, Any]) -> int:
    spec = manifest.get("spec") or {}
    if "pytorchReplicaSpecs" in spec:
        return sum(role.get("replicas", 1) for role in spec["pytorchReplicaSpecs"].values())
    return (spec.get("trainer") or {}).get("numNodes", 1)


def _trainer_progress(status: Mapping[str, Any]) -> str:
    progress = (status.get("trainerStatus") or {}).get("progressPercentage")
    return "" if progress is None else f"{progress}% done"


# --- small checks ------------------------------------------------------------------------------------------


def _check_hostname(spec: DistributedJobSpec, longest: str, what: str) -> None:
    if len(longest) > MAX_HOSTNAME:
        raise JobSpecError(f"DistributedJobSpec.name: {spec.name!r} is too long for {spec.num_nodes} node(s): the "
                           f"{what} {longest!r} would exceed {MAX_HOSTNAME} characters")


def _check_env_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        raise JobSpecError(f"{where}: {name!r} is not an environment variable name")
    if RESERVED_ENV.fullmatch(name):
        raise JobSpecError(f"{where}: {name} is set by the training operator for torchrun; it cannot be overridden")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)



def _is_dns1123_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def _is_dns1123_subdomain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def _is_qualified_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    prefix, slash, name = value.rpartition("/")
    if slash and not _is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


def _is_label_value(value: object) -> bool:
    return isinstance(value, str) and (value == "" or (len(value) <= 63 and bool(_QUALIFIED_NAME.fullmatch(value))))

"""The KServe InferenceService that serves a Slipway model, and its canary, promotion and rollback shapes.

One explicit `ServingConfig` says everything about the endpoint; `build_inference_service` turns it
into a `V1beta1InferenceService` built with the kserve SDK's model classes (DESIGN.md §6), `to_dict`
serializes it with the SDK's own `ApiClient.sanitize_for_serialization` (camelCase, as the API server
wants it) and `write_manifest` writes it as YAML, atomically. tests/test_inference_service.py validates
every shape against the real CRD (tests/crds/serving.kserve.io_inferenceservices.yaml).

The predictor is a custom container, `kserve-container`, running our own server:
`slipway serve --model /mnt/models --name <model_name> --http-port 8080 --grpc-port 8081`. Its
`STORAGE_URI` env is what makes KServe inject the storage initializer, which downloads `storage_uri`
(s3://, gs://, pvc://, with the credentials of `service_account`, by default `slipway-serving`, which
manifests/base creates) to /mnt/models before the server starts. The readiness probe asks the server
itself whether the model is loaded (`/v2/models/<m>/ready`). Every container Slipway writes runs under
the Pod Security "restricted" profile's settings (slipway.pod_security), at the container level, the
only one a Knative revision accepts by default.

Deployment modes (the `serving.kserve.io/deploymentMode` annotation; the CRD has no field for it).
KServe 0.16 renamed the values: `Serverless` is now `Knative` and `RawDeployment` is now `Standard`;
the old names are deprecated aliases. On an update the webhook compares the annotation, as written,
with the normalized mode in `status.deploymentMode` (`validateDeploymentMode`), so a legacy name can be
refused: we always write the new names. KServe's default mode is now Standard (`DefaultDeployment` in
pkg/constants), overridable per cluster, so the annotation is always set.

- **Serverless (Knative)**: Knative allows one port per revision ("Only a single port is allowed across
  all containers", knative/serving#8471), so the predictor exposes 8080 (`http1`) alone; the server
  still listens for gRPC on 8081 inside the pod, unrouted.
- **Standard**: Deployment + Service (+ HTTPRoute). Both ports are exposed; the gRPC port is named
  `grpc-port`, the name KServe's raw-mode examples use (`h2c` is the Knative convention).

Canary, promotion and rollback (each function returns the whole object to apply):

- Serverless. `build_canary(config, uri, N)`: the new model in `spec.predictor` with
  `canaryTrafficPercent: N`, and the annotation `serving.kserve.io/enable-tag-routing: "true"`.
  `build_promotion`: `canaryTrafficPercent` removed. `build_rollback`: `canaryTrafficPercent: 0`.
- Standard. `build_canary`: `spec.predictor` (the stable model) unchanged, plus
  `spec.canary: [{trafficPercent: N, predictor: <the new model, with a name>}]`. `build_promotion`: the
  canary's predictor, its name kept, becomes `spec.predictor` and `spec.canary` goes.
  `build_rollback`: `spec.canary` removed.

Where these come from. Serverless: KServe's canary docs and samples (docs/samples/v1beta1/rollout,
the website's rollout-strategies/canary-example): on an update, `canaryTrafficPercent: N` sends N% to
the latest ready revision and the rest to the last fully rolled-out one (tag `prev`); removing the
field promotes, 0 pins all traffic on the previous revision. The spec then still names the rejected
model; re-apply the stable config to make it match what serves. In Standard mode that field is
silently ignored (kserve#5335); KServe 0.20 added `spec.canary[]` (kserve#5672): the CRD requires
`predictor` and `trafficPercent` (0..100) in each entry, the webhook requires `predictor.name` (each
canary runs as Deployment/Service `<isvc>-<name>-predictor`) and no autoscaling fields on it (its
replicas follow `trafficPercent` of the stable's `minReplicas`). KServe's e2e tests
(test/e2e/predictor/test_canary_deployment.py) promote by making the canary's predictor, name and
all, the `spec.predictor` and emptying `spec.canary` (the stable then is the canary's Deployment: no
pod restarts), and roll back by removing the canary entry (its Deployment is deleted). We do the
same; `trafficPercent: 0` would be a dark launch that keeps the canary's pods, not a rollback. After
a Standard promotion the stable predictor is named after the promoted canary: pass that name as
`ServingConfig.predictor_name` (the live object's `spec.predictor.name`) when building later objects,
or applying them renames, and so restarts, the stable predictor.

    config = ServingConfig(name="taxi-tips", namespace="kubeflow-user", model_name="taxi-tips",
                           storage_uri="s3://models/taxi-tips/3", service_account="kserve-s3")
    write_manifest(build_inference_service(config), Path("dist/manifests/taxi-tips.yaml"))
    canary = build_canary(config, "s3://models/taxi-tips/4", percent=10)
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from kserve.api_client import ApiClient
from kserve.models import (
    V1beta1Batcher,
    V1beta1CanarySpec,
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1LoggerSpec,
    V1beta1PredictorSpec,
    V1beta1TransformerSpec,
)
from kubernetes import client

from slipway import cluster, pod_security
from slipway.atomic import atomic_output
from slipway.components.feature_store import ENV_REDIS, ENV_REDIS_PASSWORD, ENV_REGISTRY
from slipway.quantities import is_positive_quantity, parse_quantity
from slipway.runtimes import SERVING_IMAGE
from slipway.serving.inference_cache import CacheSettings
from slipway.serving.protocol import MODEL_URI_ENV, UNINFORMED_SCORE

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
GROUP, VERSION = API_VERSION.split("/")
PLURAL = "inferenceservices"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"

CONTAINER_NAME = "kserve-container"  # the name KServe looks for in a custom predictor or transformer
STORAGE_URI_ENV = "STORAGE_URI"  # on kserve-container, it makes KServe inject the storage initializer
MODEL_DIR = "/mnt/models"  # where the storage initializer puts the model
SERVE_COMMAND = ("slipway", "serve")
TRANSFORM_COMMAND = ("slipway", "transform")
HTTP_PORT = 8080
GRPC_PORT = 8081
STORAGE_SCHEMES = ("s3", "gs", "pvc")
LOGGER_MODES = ("all", "request", "response")

# A canary predictor leaves these out (KServe sizes a canary from its trafficPercent and its webhook
# refuses autoscaling fields on one), so a promotion takes them from the stable predictor.
STABLE_ONLY_PREDICTOR_FIELDS = ("min_replicas", "max_replicas")

_ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # KServe's IsvcNameFmt: an RFC 1035 label
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one URL path segment: /v2/models/<name>/ready
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DNS_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*")
MAX_DNS_LABEL = 63


class ServingConfigError(ValueError):
    """The endpoint cannot be built as configured; the message names the field and the rule it breaks."""


class DeploymentMode(enum.StrEnum):
    """How KServe runs the predictor; the value is what 0.21 expects in the deploymentMode annotation."""

    SERVERLESS = "Knative"
    STANDARD = "Standard"

    @classmethod
    def _missing_(cls, value: object) -> DeploymentMode | None:
        # The names KServe used before 0.16, still in most docs: accept them, write the new ones.
        return {"Serverless": cls.SERVERLESS, "RawDeployment": cls.STANDARD}.get(str(value))


# --- configuration ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServingResources:
    """What one replica asks for (requests) and may use (limits); GPUs are requested and limited alike."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "2Gi"
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"

    def __post_init__(self) -> None:
        for kind in ("cpu", "memory"):
            request, limit = (getattr(self, f"{kind}_{side}") for side in ("request", "limit"))
            for side, value in (("request", request), ("limit", limit)):
                if not is_positive_quantity(value):
                    raise ServingConfigError(f"ServingResources.{kind}_{side}: {value!r} is not a positive "
                                             "Kubernetes quantity (e.g. '500m', '2', '4Gi')")
            if parse_quantity(request) > parse_quantity(limit):
                raise ServingConfigError(f"ServingResources.{kind}_request: {request} is more than the limit {limit}"
                                         " (the API server refuses a request above its limit)")
        if not _is_int(self.gpus) or self.gpus < 0:
            raise ServingConfigError(f"ServingResources.gpus: {self.gpus!r} is not a whole number of GPUs (0 or more)")
        prefix, _, name = self.gpu_resource.rpartition("/")
        if not (_is_dns1123_subdomain(prefix) and _is_dns1123_label(name)):
            raise ServingConfigError(f"ServingResources.gpu_resource: {self.gpu_resource!r} is not an extended "
                                     "resource name (<domain>/<name>, e.g. 'nvidia.com/gpu')")

    def requirements(self) -> client.V1ResourceRequirements:
        gpu = {self.gpu_resource: str(self.gpus)} if self.gpus else {}
        return client.V1ResourceRequirements(
            requests={"cpu": self.cpu_request, "memory": self.memory_request, **gpu},
            limits={"cpu": self.cpu_limit, "memory": self.memory_limit, **gpu},
        )

    def tolerations(self) -> list[client.V1Toleration] | None:
        """GPU node pools carry a `<gpu_resource>:NoSchedule` taint; a GPU replica must tolerate it."""
        if not self.gpus:
            return None
        return [client.V1Toleration(key=self.gpu_resource, operator="Exists", effect="NoSchedule")]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The Feast transformer (`slipway transform`, serving/transformer.py) in front of the predictor.

    KServe appends `--model_name <isvc name>` unless the args name one, then `--predictor_host
    <isvc>-predictor.<namespace>` and `--http_port 8080`: the builder names `ServingConfig.model_name`,
    the model the predictor serves, so the transformer calls `/v2/models/<model_name>/infer`. `env`
    points it at the cluster's feature store: SLIPWAY_FEAST_REDIS and SLIPWAY_FEAST_REGISTRY
    (components/feature_store.py), plus the object-store variables an s3:// registry needs; Redis'
    password comes from the Secret `slipway-auth` (SLIPWAY_FEAST_REDIS_PASSWORD, optional).
    `fallback_score` is answered when the predictor cannot be: the model's training positive rate
    (model.json, lineage.train_positive_rate) is the honest one. The two feature store variables are
    checked as what a pod can reach: Redis as HOST:PORT, the registry as an s3://, gs:// or SQL URL.
    """

    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fallback_score: float = UNINFORMED_SCORE
    image: str = SERVING_IMAGE
    args: Sequence[str] = ()  # more `slipway transform` options
    resources: ServingResources = dataclasses.field(
        default_factory=lambda: ServingResources(cpu_request="500m", cpu_limit="1", memory_request="1Gi",
                                                 memory_limit="1Gi"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", dict(self.env))
        _check_image(self.image, "TransformerConfig.image")
        if not all(isinstance(arg, str) for arg in self.args):
            raise ServingConfigError(f"TransformerConfig.args: {self.args!r} must be strings")
        for name, value in self.env.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name) or not isinstance(value, str):
                raise ServingConfigError(f"TransformerConfig.env: {name!r}={value!r} is not an environment variable "
                                         "(a name of letters, digits and '_', not starting with a digit; a string)")
        if ENV_REDIS in self.env:
            check_host_port(self.env[ENV_REDIS], f"TransformerConfig.env[{ENV_REDIS!r}]")
        if ENV_REGISTRY in self.env:
            check_feast_registry(self.env[ENV_REGISTRY], f"TransformerConfig.env[{ENV_REGISTRY!r}]")
        if isinstance(self.fallback_score, bool) or not isinstance(self.fallback_score, (int, float)) \
                or not 0 <= self.fallback_score <= 1:
            raise ServingConfigError(f"TransformerConfig.fallback_score: {self.fallback_score!r} is not a "
                                     "probability in [0, 1]")
        if self.resources.gpus:
            raise ServingConfigError("TransformerConfig.resources: the transformer fetches features and needs no GPU")


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    """KServe's request logger: sends each request and/or response as a CloudEvent to the drift service."""

    url: str
    mode: str = "all"

    def __post_init__(self) -> None:
        check_http_url(self.url, "LoggerConfig.url")
        if self.mode not in LOGGER_MODES:
            raise ServingConfigError(f"LoggerConfig.mode: {self.mode!r} is not one of {', '.join(LOGGER_MODES)}")


@dataclasses.dataclass(frozen=True)
class BatcherConfig:
    """KServe's batcher sidecar: a batch leaves at `max_batch_size` requests or `max_latency_ms` after its first."""

    max_batch_size: int = 32
    max_latency_ms: int = 5

    def __post_init__(self) -> None:
        for field in ("max_batch_size", "max_latency_ms"):
            value = getattr(self, field)
            if not _is_int(value) or value < 1:
                raise ServingConfigError(f"BatcherConfig.{field}: {value!r} must be a whole number, at least 1")


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Everything about one endpoint. `model_name` is the name the server serves the model under
    (`/v2/models/<model_name>`); `name` is the InferenceService's. `predictor_name` (Standard mode only)
    is the stable predictor's name after a promotion (see the module docstring); None means KServe's
    default, `<name>-predictor`."""

    name: str
    namespace: str
    storage_uri: str
    model_name: str
    image: str = SERVING_IMAGE
    resources: ServingResources = dataclasses.field(default_factory=ServingResources)
    min_replicas: int = 1
    max_replicas: int = 1
    deployment_mode: DeploymentMode = DeploymentMode.SERVERLESS
    transformer: TransformerConfig | None = None
    logger: LoggerConfig | None = None
    batcher: BatcherConfig | None = None
    service_account: str = cluster.SERVING_ACCOUNT  # the account manifests/base creates, with the storage Secret
    predictor_name: str | None = None
    cache: CacheSettings | None = None  # the predictor's inference cache (serving/inference_cache.py); None: off

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "deployment_mode", DeploymentMode(self.deployment_mode))
        except ValueError:
            raise ServingConfigError(f"ServingConfig.deployment_mode: {self.deployment_mode!r} is not "
                                     "'Serverless' (Knative) or 'Standard'") from None
        if not isinstance(self.name, str) or not _ISVC_NAME.fullmatch(self.name):
            raise ServingConfigError(f"ServingConfig.name: {self.name!r} is not a valid InferenceService name: use "
                                     "lowercase letters, digits and '-', starting with a letter and ending with a "
                                     "letter or digit (KServe's rule, a DNS-1035 label)")
        if not _is_dns1123_label(self.namespace):
            raise ServingConfigError(f"ServingConfig.namespace: {self.namespace!r} is not a namespace name "
                                     "(a DNS-1123 label)")
        check_storage_uri(self.storage_uri, "ServingConfig.storage_uri")
        if not isinstance(self.model_name, str) or not _MODEL_NAME.fullmatch(self.model_name):
            raise ServingConfigError(f"ServingConfig.model_name: {self.model_name!r} is not a model name: letters, "
                                     "digits, '.', '_' and '-', starting with a letter or digit (it is a URL path "
                                     "segment of /v2/models/<model_name>)")
        _check_image(self.image, "ServingConfig.image")
        for field, kind in (("resources", ServingResources), ("transformer", TransformerConfig),
                            ("logger", LoggerConfig), ("batcher", BatcherConfig), ("cache", CacheSettings)):
            value = getattr(self, field)
            if not isinstance(value, kind) and not (value is None and field != "resources"):
                raise ServingConfigError(f"ServingConfig.{field}: expected a {kind.__name__}, got {value!r}")
        if not _is_int(self.min_replicas) or not _is_int(self.max_replicas) or not (
                0 <= self.min_replicas <= self.max_replicas and self.max_replicas >= 1):
            raise ServingConfigError(f"ServingConfig.min_replicas/max_replicas: {self.min_replicas!r}/"
                                     f"{self.max_replicas!r} must be whole numbers, 0 <= min <= max, max >= 1")
        if not _is_dns1123_subdomain(self.service_account):
            raise ServingConfigError(f"ServingConfig.service_account: {self.service_account!r} is not a service "
                                     "account name (a DNS-1123 subdomain)")
        if self.predictor_name is not None:
            if self.deployment_mode is not DeploymentMode.STANDARD:
                raise ServingConfigError("ServingConfig.predictor_name: only a Standard-mode predictor is renamed "
                                         "(by a canary promotion); leave it None in Serverless mode")
            _check_predictor_name(self.predictor_name, "ServingConfig.predictor_name")
        names = [predictor_service_name(self.name, self.predictor_name)]
        names += [f"{self.name}-transformer"] if self.transformer else []
        _check_derived_names(names, "ServingConfig.name", self.name)


# --- building ---------------------------------------------------------------------------------------------


def build_inference_service(config: ServingConfig) -> V1beta1InferenceService:
    """The InferenceService serving `config.storage_uri` with all of the traffic."""
    return V1beta1InferenceService(
        api_version=API_VERSION,
        kind=KIND,
        metadata=client.V1ObjectMeta(
            name=config.name,
            namespace=config.namespace,
            annotations={DEPLOYMENT_MODE_ANNOTATION: config.deployment_mode.value},
        ),
        spec=V1beta1InferenceServiceSpec(
            predictor=_predictor(config, name=config.predictor_name, canary=False),
            transformer=_transformer(config) if config.transformer else None,
        ),
    )


def build_canary(config: ServingConfig, storage_uri: str, percent: int,
                 *, canary_name: str | None = None) -> V1beta1InferenceService:
    """The InferenceService that sends `percent`% of the traffic to the model at `storage_uri`.

    `config` describes the stable endpoint as it runs now. Serverless: the new model takes
    `spec.predictor` with `canaryTrafficPercent`, and tag routing is switched on so that the
    `latest-`/`prev-` URLs reach each revision directly. Standard: `spec.predictor` stays the stable
    model and the new one becomes the single `spec.canary` entry, named `canary_name` (by default
    `model_revision_name(storage_uri)`, the same for the same model).
    """
    percent = check_percent(percent)
    check_storage_uri(storage_uri, "storage_uri")
    if storage_uri == config.storage_uri:
        raise ServingConfigError(f"storage_uri: {storage_uri!r} is the model the endpoint serves already; a canary "
                                 "needs another one")
    new = dataclasses.replace(config, storage_uri=storage_uri)
    isvc = build_inference_service(config if config.deployment_mode is DeploymentMode.STANDARD else new)
    if config.deployment_mode is DeploymentMode.SERVERLESS:
        # Knative names a tagged revision's host `<tag>-<route>`: the longest tag KServe sets is `latest`.
        _check_derived_names([f"latest-{predictor_service_name(config.name)}"], "ServingConfig.name", config.name)
        isvc.metadata.annotations[TAG_ROUTING_ANNOTATION] = "true"
        isvc.spec.predictor.canary_traffic_percent = percent
        return isvc
    name = model_revision_name(storage_uri) if canary_name is None else canary_name
    _check_predictor_name(name, "canary_name")
    if name == (config.predictor_name or ""):
        raise ServingConfigError(f"canary_name: {name!r} is the stable predictor's name; a canary needs its own")
    _check_derived_names([predictor_service_name(config.name, name)], "canary_name", name)
    isvc.spec.canary = [V1beta1CanarySpec(predictor=_predictor(new, name=name, canary=True), traffic_percent=percent)]
    return isvc


def build_promotion(canary: V1beta1InferenceService) -> V1beta1InferenceService:
    """The InferenceService after the canary won: all of the traffic on the canary's model.

    Serverless: `canaryTrafficPercent` removed (applied whole, its absence is the removal; as a merge
    patch it must be sent as null, see cluster_rollout). Standard: the canary's predictor, name kept so
    that KServe retargets the stable to the canary's running Deployment, becomes `spec.predictor` with
    the stable's replica bounds, and `spec.canary` goes.
    """
    promoted = copy.deepcopy(canary)
    if deployment_mode_of(canary) is DeploymentMode.SERVERLESS:
        _serverless_canary_percent(canary)
        promoted.spec.predictor.canary_traffic_percent = None
        return promoted
    [entry] = _standard_canaries(canary)
    predictor = copy.deepcopy(entry.predictor)
    for field in STABLE_ONLY_PREDICTOR_FIELDS:
        setattr(predictor, field, getattr(canary.spec.predictor, field))
    promoted.spec.predictor = predictor
    promoted.spec.canary = None
    return promoted


def build_rollback(canary: V1beta1InferenceService) -> V1beta1InferenceService:
    """The InferenceService after the canary lost: all of the traffic back on the stable model at once.

    Serverless: `canaryTrafficPercent: 0` pins the traffic on the previous revision (the spec still
    names the rejected model until the stable config is applied again). Standard: `spec.canary`
    removed, so KServe deletes the canary's Deployment.
    """
    rolled_back = copy.deepcopy(canary)
    if deployment_mode_of(canary) is DeploymentMode.SERVERLESS:
        _serverless_canary_percent(canary)
        rolled_back.spec.predictor.canary_traffic_percent = 0
        return rolled_back
    _standard_canaries(canary)
    rolled_back.spec.canary = None
    return rolled_back


def deployment_mode_of(isvc: V1beta1InferenceService) -> DeploymentMode:
    """The mode an InferenceService we built asks for, from its deploymentMode annotation."""
    value = (isvc.metadata.annotations or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    try:
        return DeploymentMode(value)
    except ValueError:
        raise ServingConfigError(f"InferenceService {isvc.metadata.name}: annotation {DEPLOYMENT_MODE_ANNOTATION} "
                                 f"is {value!r}, not a deployment mode") from None


def to_dict(isvc: V1beta1InferenceService) -> dict[str, Any]:
    """The object as plain JSON types with the API's camelCase names, as kubectl and the API server want it."""
    return ApiClient().sanitize_for_serialization(isvc)


def write_manifest(isvc: V1beta1InferenceService, path: Path | str) -> Path:
    """Writes the object as a YAML manifest; a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    text = yaml.safe_dump(to_dict(isvc), sort_keys=False)
    with atomic_output(path) as temp:
        temp.write_text(text)
    return path


# --- small public rules, shared with cluster_rollout -------------------------------------------------------


def check_percent(percent: object) -> int:
    """A traffic percentage: a whole number from 0 to 100 (the CRD's bounds for spec.canary[].trafficPercent)."""
    if not _is_int(percent) or not 0 <= percent <= 100:
        raise ValueError(f"canary traffic percent: {percent!r} must be a whole number from 0 to 100")
    return percent


def check_storage_uri(uri: object, field: str) -> str:
    """A model location the storage initializer can fetch: s3://bucket/key, gs://bucket/key or pvc://claim/path."""
    parsed = urlparse(uri) if isinstance(uri, str) else None
    if parsed is None or parsed.scheme not in STORAGE_SCHEMES or not parsed.netloc or re.search(r"\s", uri):
        raise ServingConfigError(f"{field}: {uri!r} is not a model location; use "
                                 f"{', '.join(s + '://' for s in STORAGE_SCHEMES)} (bucket or claim, then the path)")
    if parsed.scheme == "pvc" and not _is_dns1123_subdomain(parsed.netloc):
        raise ServingConfigError(f"{field}: {parsed.netloc!r} in {uri!r} is not a PersistentVolumeClaim name")
    return uri


def check_http_url(url: object, field: str) -> str:
    """An http:// or https:// URL with a host (and, if any, a port from 1 to 65535), e.g. the drift service's."""
    parsed = urlparse(url) if isinstance(url, str) and not re.search(r"\s", url) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not _is_host(parsed.hostname) \
            or not _has_valid_port(parsed):
        raise ServingConfigError(f"{field}: {url!r} is not an http(s) URL with a host (and a port from 1 to 65535 if "
                                 "it names one), e.g. http://drift.kubeflow.svc.cluster.local/events")
    return url


def check_host_port(address: object, field: str) -> str:
    """HOST:PORT: a host name or IP address ([...] for IPv6), then a port from 1 to 65535 (e.g. a Redis)."""
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not _is_host(host[1:-1] if host.startswith("[") and host.endswith("]") else host) or not _is_port(port):
        raise ServingConfigError(f"{field}: {address!r} is not HOST:PORT (a host name or IP address, then a port "
                                 "from 1 to 65535), e.g. feast-redis.kubeflow.svc.cluster.local:6379")
    return address


def check_feast_registry(location: object, field: str) -> str:
    """A Feast registry that a pod can read: s3://bucket/key, gs://bucket/key or a SQL URL (postgresql://...)."""
    parsed = urlparse(location) if isinstance(location, str) and not re.search(r"\s", location) else None
    object_store = parsed is not None and parsed.scheme in ("s3", "gs")
    if parsed is None or parsed.scheme in ("", "file") or "://" not in location \
            or (object_store and not (parsed.netloc and parsed.path.strip("/"))):
        raise ServingConfigError(f"{field}: {location!r} is not a registry the transformer's pod can read: an s3:// "
                                 "or gs:// URI of the registry file, or a SQL URL (postgresql://...)")
    return location


def model_revision_name(storage_uri: str) -> str:
    """A short predictor name for a model location, the same for the same location: `v` + 7 hex digits."""
    return "v" + hashlib.sha256(storage_uri.encode()).hexdigest()[:7]


def predictor_service_name(isvc_name: str, predictor_name: str | None = None) -> str:
    """The predictor's Service/Deployment name KServe derives: `<isvc>-predictor` or `<isvc>-<name>-predictor`."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


# --- internals ------------------------------------------------------------------------------------------


def _predictor(config: ServingConfig, *, name: str | None, canary: bool) -> V1beta1PredictorSpec:
    container = client.V1Container(
        name=CONTAINER_NAME,
        image=config.image,
        command=list(SERVE_COMMAND),
        args=["--model", MODEL_DIR, "--name", config.model_name,
              "--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)],
        # STORAGE_URI becomes /mnt/models inside the pod (KServe's storage initializer): the model's own URI goes
        # in MODEL_URI_ENV too, which the server names in every answer's MODEL_HEADER, so that a canary's answers
        # can be told from the stable model's (serving/cluster_deploy.py).
        env=[client.V1EnvVar(name=STORAGE_URI_ENV, value=config.storage_uri),
             client.V1EnvVar(name=MODEL_URI_ENV, value=config.storage_uri),
             *(client.V1EnvVar(name=name, value=value) for name, value in
               (config.cache.environment() if config.cache and config.cache.enabled else {}).items())],
        ports=_ports(config.deployment_mode),
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path=f"/v2/models/{config.model_name}/ready", port=HTTP_PORT),
        ),
        resources=config.resources.requirements(),
        security_context=pod_security.container_context(),
    )
    return V1beta1PredictorSpec(
        name=name,
        containers=[container],
        service_account_name=config.service_account,
        min_replicas=None if canary else config.min_replicas,
        max_replicas=None if canary else config.max_replicas,
        tolerations=config.resources.tolerations(),
        logger=V1beta1LoggerSpec(url=config.logger.url, mode=config.logger.mode) if config.logger else None,
        batcher=V1beta1Batcher(max_batch_size=config.batcher.max_batch_size,
                               max_latency=config.batcher.max_latency_ms) if config.batcher else None,
    )


def _ports(mode: DeploymentMode) -> list[client.V1ContainerPort]:
    http = client.V1ContainerPort(name="http1", container_port=HTTP_PORT, protocol="TCP")
    if mode is DeploymentMode.SERVERLESS:
        return [http]  # Knative routes exactly one port per revision
    return [http, client.V1ContainerPort(name="grpc-port", container_port=GRPC_PORT, protocol="TCP")]


def _transformer(config: ServingConfig) -> V1beta1TransformerSpec:
    transformer = config.transformer
    args = ["--fallback-score", repr(float(transformer.fallback_score)), *transformer.args]
    if "--model_name" not in args:
        args = ["--model_name", config.model_name, *args]
    return V1beta1TransformerSpec(
        containers=[client.V1Container(
            name=CONTAINER_NAME,
            image=transformer.image,
            command=list(TRANSFORM_COMMAND),
            args=args,
            env=[*(client.V1EnvVar(name=name, value=value) for name, value in sorted(transformer.env.items())),
                 *_redis_password(transformer)],
            ports=[client.V1ContainerPort(name="http1", container_port=HTTP_PORT, protocol="TCP")],
            readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/v2/health/ready", port=HTTP_PORT)),
            resources=transformer.resources.requirements(),
            security_context=pod_security.container_context(),
        )],
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
    )


def _redis_password(transformer: TransformerConfig) -> list[client.V1EnvVar]:
    """Redis' password from `slipway-auth`, as every Slipway client reads it; optional, for a Redis without one."""
    if ENV_REDIS_PASSWORD in transformer.env:
        return []
    return [client.V1EnvVar(name=ENV_REDIS_PASSWORD, value_from=client.V1EnvVarSource(
        secret_key_ref=client.V1SecretKeySelector(name=cluster.AUTH_SECRET, key=ENV_REDIS_PASSWORD, optional=True)))]


def _serverless_canary_percent(isvc: V1beta1InferenceService) -> int:
    percent = isvc.spec.predictor.canary_traffic_percent
    if percent is None:
        raise ServingConfigError(f"InferenceService {isvc.metadata.name}: not a Serverless canary "
                                 "(spec.predictor.canaryTrafficPercent is not set)")
    return percent


def _standard_canaries(isvc: V1beta1InferenceService) -> list[V1beta1CanarySpec]:
    canaries = isvc.spec.canary or []
    if len(canaries) != 1:
        raise ServingConfigError(f"InferenceService {isvc.metadata.name}: expected one Standard canary in "
                                 f"spec.canary, found {len(canaries)}")
    return canaries


def _check_predictor_name(name: object, field: str) -> None:
    if not isinstance(name, str) or not _ISVC_NAME.fullmatch(name):
        raise ServingConfigError(f"{field}: {name!r} is not a predictor name: lowercase letters, digits and '-', "
                                 "starting with a letter (it becomes part of the predictor's Service name)")


def _check_derived_names(names: list[str], field: str, value: str) -> None:
    for derived in names:
        if len(derived) > MAX_DNS_LABEL:
            raise ServingConfigError(f"{field}: {value!r} is too long: the name {derived!r} that KServe derives "
                                     f"from it would exceed {MAX_DNS_LABEL} characters (a DNS label)")


def _check_image(image: object, field: str) -> None:
    if not isinstance(image, str) or not image or re.search(r"\s", image):
        raise ServingConfigError(f"{field}: {image!r} is not a container image reference")



def _is_host(host: object) -> bool:
    """A DNS name or an IP address (an IPv6 one without its brackets)."""
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _DNS_NAME.fullmatch(host) is not None


def _is_port(port: str) -> bool:
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def _has_valid_port(parsed: Any) -> bool:
    try:
        return parsed.port is None or parsed.port >= 1
    except ValueError:  # not a number, or above 65535
        return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_dns1123_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_DNS_LABEL and _DNS1123_LABEL.fullmatch(value) is not None


def _is_dns1123_subdomain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None

"""Deployment on a cluster: a KServe InferenceService, a smoke test through it, and the same metric-gated canary.

What serving/deploy.py does with local processes and a local router, `deploy_on_cluster` does with
an InferenceService (serving/inference_service.py builds it, serving/cluster_rollout.py changes it):

1. the registered version's model folder in object storage (`storage_uri_of`) is the predictor's
   `storageUri`; the InferenceService is named after the model (`_` as `-`) in the task's namespace;
2. with no champion in the registry, or no InferenceService yet (the first deployment), the
   InferenceService is applied whole, waited for until Ready, smoke-tested through its address and
   promoted in the registry on that;
3. with a champion serving, the new model is applied as a canary (`build_canary`, at the first
   step's percent) beside it, smoke-tested through the endpoint, then eval rows are replayed to the
   endpoint as live traffic while `run_canary` (serving/canary.py) moves `canaryTrafficPercent` (or
   Standard mode's `spec.canary[].trafficPercent`) step by step and judges each step with the same
   `AnalysisPolicy`, and the same reference scores (the candidate's own offline scores on the
   replayed rows), as a local deployment: one decision rule for both targets;
4. a pass patches the promotion and moves the registry's `champion` alias; a fail patches the
   rollback and leaves the alias where it was. Either way the result is the same `DeployResult`
   a local deployment returns, so the pipeline's outputs do not depend on the target.

Attributing answers. KServe splits a canary's traffic (Knative revisions, or Gateway API weights in
Standard mode) without telling the client which side answered. Our predictor names its model in
every answer (`x-slipway-model`, serving/protocol.py), read from `SLIPWAY_MODEL_URI`, which
serving/inference_service.py sets on each predictor container to that predictor's storage URI (KServe
rewrites the container's own `STORAGE_URI` to /mnt/models in the pod, so that one cannot say which model
it was).
`AttributedTraffic` records each answer into the stable or canary `Window` by that header. An
answer that names neither model is not evidence about either: a successful one is counted and
dropped; a failed one (a 5xx or no answer from the mesh, which carries no header) is charged to the
canary, because the gate must not promote on failures it could not place, and while a canary runs it
is the likely cause. The stable side must therefore be served by a Slipway image that sets the
header (every InferenceService this module deploys is); an older one would leave the stable window
empty and every step would end "not enough traffic", a rollback, never a blind promotion.

The smoke test goes through the same endpoint: it repeats one request of a few eval rows until the
new model answers it (at a 10% canary, about ten tries), so that it tests the model KServe actually
serves, through the path clients use, in both deployment modes, without tag-routing URLs.

A Serverless rollback (`canaryTrafficPercent: 0`) leaves the rejected model in `spec.predictor`
while the previous revision serves everything (serving/inference_service.py); the next deployment
builds its canary from the registry's champion, which is what that previous revision serves.

What is verified how: tests/test_cluster_deploy.py drives this module against the recording fake
CustomObjectsApi of tests/test_inference_service.py (merge patches applied as the API server would,
every stored object validated against the real CRD), a real MLflow server (registry and proxied
artifacts), and real `slipway serve` processes behind a loopback splitter that plays KServe's
traffic split from the stored InferenceService's spec. No cluster exists here (REFERENCE.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
import pandas as pd
from kubernetes import client
from kubernetes.client.rest import ApiException

from slipway import cluster
from slipway.serving.canary import (
    CANARY,
    STABLE,
    AnalysisPolicy,
    BackendWindows,
    Observation,
    checked_steps,
    run_canary,
)
from slipway.serving.cluster_rollout import CanaryEndpoint, InferenceServiceRollout, RolloutError
from slipway.serving.deploy import (
    SMOKE_ROWS,
    DeployError,
    DeployResult,
    LocalDeployConfig,
    ReplayTraffic,
    SmokeResult,
    checked_smoke_answer,
    json_instances,
)
from slipway.serving.inference_service import (
    DEPLOYMENT_MODE_ANNOTATION,
    GROUP,
    PLURAL,
    VERSION,
    DeploymentMode,
    ServingConfig,
    build_canary,
    build_inference_service,
    check_storage_uri,
)
from slipway.serving.protocol import DEGRADED_HEADER, MODEL_HEADER
from slipway.serving.router import scores_from_answer

if TYPE_CHECKING:
    from slipway.components.registry import ModelRegistry, RegisteredVersion

log = logging.getLogger(__name__)

LOCAL, KSERVE = "local", "kserve"
SERVING_TARGETS = (LOCAL, KSERVE)

# Settings a cluster deployment reads from the task's environment (set on the pipeline's deploy task).
# The predictor's service account, whose object-store Secret the storage initializer uses; default
# `slipway.cluster.SERVING_ACCOUNT`, the one the manifests create.
SERVICE_ACCOUNT_ENV = "SLIPWAY_SERVING_SERVICE_ACCOUNT"
DEPLOYMENT_MODE_ENV = "SLIPWAY_SERVING_DEPLOYMENT_MODE"  # Knative (default) or Standard, for a new InferenceService
ARTIFACTS_DESTINATION_ENV = "SLIPWAY_MLFLOW_ARTIFACTS_DESTINATION"  # the MLflow server's --artifacts-destination
MLFLOW_ARTIFACTS_SCHEME = "mlflow-artifacts"


class ClusterUnavailableError(RuntimeError):
    """No Kubernetes API to talk to: neither inside a pod nor with a kubeconfig."""


def checked_serving_target(target: str) -> str:
    """`target` if it is one of SERVING_TARGETS, else a ValueError naming them."""
    if target not in SERVING_TARGETS:
        raise ValueError(f"serving_target {target!r} is not one of {', '.join(SERVING_TARGETS)}: "
                         f"'{LOCAL}' serves the model in a process of this task, '{KSERVE}' as a KServe "
                         "InferenceService on the cluster")
    return target


@dataclasses.dataclass(frozen=True)
class ClusterDeployConfig:
    """A cluster deployment. `model_name` is the name in URLs (the registered name, as locally); the
    InferenceService is named after it with `_` as `-`. `steps`, `policy`, `traffic_rps` and
    `step_timeout_s` mean what they mean in `LocalDeployConfig`."""

    model_name: str
    namespace: str
    image: str
    service_account: str = cluster.SERVING_ACCOUNT
    deployment_mode: DeploymentMode = DeploymentMode.SERVERLESS  # for a new InferenceService; a live one keeps its
    artifacts_destination: str | None = None  # where `mlflow-artifacts:/` paths live (see `storage_uri_of`)
    steps: tuple[int, ...] = (10, 50, 100)
    policy: AnalysisPolicy = dataclasses.field(default_factory=AnalysisPolicy)
    traffic_rps: float = 250.0
    step_timeout_s: float = 600.0  # a cluster step waits for KServe as well as for evidence
    ready_timeout_s: float = 900.0  # a new revision pulls an image and downloads a model
    smoke_timeout_s: float = 120.0
    poll_s: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", checked_steps(self.steps))
        try:
            object.__setattr__(self, "deployment_mode", DeploymentMode(self.deployment_mode))
        except ValueError:
            raise ValueError(f"deployment_mode {self.deployment_mode!r} is not Knative (Serverless) or Standard "
                             f"(RawDeployment); set {DEPLOYMENT_MODE_ENV} to one of them") from None
        if self.traffic_rps <= 0:
            raise ValueError(f"traffic_rps must be positive, got {self.traffic_rps}")
        ServingConfig(name=self.isvc_name, namespace=self.namespace, storage_uri="s3://check/name",
                      model_name=self.model_name, image=self.image, service_account=self.service_account,
                      deployment_mode=self.deployment_mode)  # refuses a bad name, namespace or image now

    @property
    def isvc_name(self) -> str:
        return self.model_name.replace("_", "-").lower()

    @classmethod
    def from_env(cls, local: LocalDeployConfig, namespace: str, image: str,
                 environ: Mapping[str, str] | None = None) -> ClusterDeployConfig:
        """The cluster counterpart of a local deployment's config, with the cluster settings from the environment."""
        environ = os.environ if environ is None else environ
        return cls(model_name=local.name, namespace=namespace, image=image,
                   service_account=environ.get(SERVICE_ACCOUNT_ENV) or cluster.SERVING_ACCOUNT,
                   deployment_mode=environ.get(DEPLOYMENT_MODE_ENV) or DeploymentMode.SERVERLESS,
                   artifacts_destination=environ.get(ARTIFACTS_DESTINATION_ENV) or None,
                   steps=local.steps, policy=local.policy, traffic_rps=local.traffic_rps)

    def serving(self, storage_uri: str, mode: DeploymentMode, predictor_name: str | None = None) -> ServingConfig:
        return ServingConfig(name=self.isvc_name, namespace=self.namespace, storage_uri=storage_uri,
                             model_name=self.model_name, image=self.image, service_account=self.service_account,
                             deployment_mode=mode, predictor_name=predictor_name)


# --- where the model is, what answered --------------------------------------------------------------


def storage_uri_of(version: RegisteredVersion, artifacts_destination: str | None = None) -> str:
    """The registered version's model folder as a URI KServe's storage initializer fetches (s3://, gs://, pvc://).

    An MLflow server that stores artifacts itself (`--default-artifact-root s3://...`) records such a
    URI as the version's source. One that proxies them (`--artifacts-destination s3://bucket/path`)
    records `mlflow-artifacts:/<path>`, stored at `<destination>/<path>`: `artifacts_destination`
    (SLIPWAY_MLFLOW_ARTIFACTS_DESTINATION) must then say where that is.
    """
    source = version.source
    parsed = urlparse(source)
    if parsed.scheme == MLFLOW_ARTIFACTS_SCHEME:
        if not artifacts_destination:
            raise DeployError(f"{version.uri} is stored at {source}, inside the MLflow server's artifact store: set "
                              f"{ARTIFACTS_DESTINATION_ENV} to the server's --artifacts-destination (s3://... or "
                              "gs://...) so that KServe can fetch the model from there")
        source = f"{artifacts_destination.rstrip('/')}/{parsed.path.lstrip('/')}"
    try:
        return check_storage_uri(source, f"the model folder of {version.uri}")
    except ValueError as error:
        raise DeployError(f"{error}; serving_target=kserve needs the registry's artifacts in object storage "
                          "that the cluster can read") from None


def endpoint_url(isvc: Mapping[str, Any]) -> str:
    """Where to send requests: the InferenceService's address inside the cluster, else its URL."""
    status = isvc.get("status") or {}
    url = (status.get("address") or {}).get("url") or status.get("url")
    if not url:
        metadata = isvc.get("metadata") or {}
        raise DeployError(f"InferenceService {metadata.get('namespace')}/{metadata.get('name')} is Ready but reports "
                          "no status.address.url or status.url to send requests to")
    return str(url).rstrip("/")


class AttributedTraffic(ReplayTraffic):
    """Replays rows as `ReplayTraffic` does, and records each answer into `windows` by the model it names
    (`backends`: model URI -> "stable" or "canary"); see the module docstring.

    Locally the router records each answer, since it knows where it sent the request; here only the
    answer can say.
    """

    def __init__(self, url: str, instances: Sequence[dict[str, Any]], rps: float, windows: BackendWindows,
                 backends: Mapping[str, str], threads: int = 4) -> None:
        super().__init__(url, instances, rps, threads)
        self.windows, self.backends = windows, dict(backends)
        self.path = urlparse(url).path
        self.unattributed = 0  # successful answers that named neither model (dropped)
        self.charged_to_canary = 0  # failed answers that named neither model
        self._lock = threading.Lock()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        log.info("%d successful answers named neither model, %d failures without a model were charged to the "
                 "canary", self.unattributed, self.charged_to_canary)

    def record(self, model: str | None, observation: Observation) -> None:
        """Into the window of the backend serving `model`; see the module docstring for answers naming neither."""
        backend = self.backends.get(model) if model else None
        if backend is None:
            with self._lock:
                if not observation.is_error:
                    self.unattributed += 1
                    return
                self.charged_to_canary += 1
            backend = CANARY
        self.windows.window(backend).record(observation)

    def _post(self, client: httpx.Client, row: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            response = client.post(self.url, json={"instances": [row]})
        except httpx.HTTPError:
            self.record(None, Observation((time.perf_counter() - start) * 1000, None))
            return
        latency_ms = (time.perf_counter() - start) * 1000
        scores = scores_from_answer(self.path, response.status_code, response.headers, response.content)
        self.record(response.headers.get(MODEL_HEADER), Observation(
            latency_ms, response.status_code, DEGRADED_HEADER in response.headers, scores))


def smoke_test_through(url: str, name: str, instances: list[dict[str, Any]], model_uri: str, timeout_s: float,
                       clock: Callable[[], float] = time.monotonic) -> SmokeResult:
    """One V1 request of `instances`, repeated until `model_uri` answers it; that answer must be a probability
    per row and not degraded (`checked_smoke_answer`, as a local smoke test)."""
    deadline = clock() + timeout_s
    tries, last = 0, "no answer yet"
    with httpx.Client(timeout=30) as client:
        while True:
            tries += 1
            start = time.perf_counter()
            try:
                response = client.post(f"{url}/v1/models/{name}:predict", json={"instances": instances})
            except httpx.HTTPError as error:
                last = repr(error)
            else:
                latency_ms = (time.perf_counter() - start) * 1000
                served = response.headers.get(MODEL_HEADER)
                if served == model_uri:
                    return checked_smoke_answer(url, response, len(instances), latency_ms)
                last = f"HTTP {response.status_code} from {served or 'a server that named no model'}"
            if clock() >= deadline:
                raise DeployError(f"smoke test: {model_uri} did not answer through {url} in {tries} requests within "
                                  f"{timeout_s:g} s (last: {last})")
            time.sleep(0.05)


# --- the cluster ----------------------------------------------------------------------------------------


def cluster_api(config_file: str | None = None) -> client.CustomObjectsApi:
    """The CustomObjectsApi of the cluster this task runs in (its service account), else of the kubeconfig."""
    from kubernetes.config.config_exception import ConfigException

    from slipway.components.custom_objects import kube_client

    try:
        return client.CustomObjectsApi(kube_client(config_file))
    except (ConfigException, OSError) as error:
        raise ClusterUnavailableError(
            f"serving_target={KSERVE} needs a Kubernetes cluster with KServe: this task is not running in a pod "
            f"(no KUBERNETES_SERVICE_HOST) and found no usable kubeconfig ({error}); run the pipeline on Kubeflow, "
            f"or deploy with serving_target={LOCAL}") from None


def live_inference_service(rollout: InferenceServiceRollout, name: str, namespace: str) -> dict[str, Any] | None:
    """The InferenceService as stored, or None when there is none of that name."""
    try:
        return rollout.api.get_namespaced_custom_object(group=GROUP, version=VERSION, namespace=namespace,
                                                        plural=PLURAL, name=name,
                                                        _request_timeout=rollout.request_timeout_s)
    except ApiException as error:
        if error.status == 404:
            return None
    return rollout.get(name, namespace)  # any other refusal, said the way the rollout layer says it


def deploy_on_cluster(registry: ModelRegistry, name: str, version: str, rows: pd.DataFrame,
                      config: ClusterDeployConfig, rollout: InferenceServiceRollout, workdir: Path) -> DeployResult:
    """Deploys registered `version` of `name` as a KServe InferenceService; see the module docstring."""
    candidate = registry.version(name, version)
    champion = registry.champion(name)
    new_uri = storage_uri_of(candidate, config.artifacts_destination)
    live = live_inference_service(rollout, config.isvc_name, config.namespace)
    instances = json_instances(rows)
    if champion is None or live is None or champion.version == candidate.version:
        result = _first_deployment(config, new_uri, instances[:SMOKE_ROWS], rollout)
    else:
        stable_uri = storage_uri_of(champion, config.artifacts_destination)
        log.info("canary on InferenceService %s/%s: %s (%s) against the champion %s (%s)", config.namespace,
                 config.isvc_name, candidate.uri, new_uri, champion.uri, stable_uri)
        # What the candidate should answer on these rows, scored as it was evaluated (see serving/deploy.py).
        from slipway.components.model_artifact import load_model

        model = load_model(registry.download(candidate, workdir / "models" / f"v{candidate.version}"))
        expected = tuple(float(s) for s in model.predict_proba({c: rows[c].to_numpy() for c in rows.columns}))
        result = _canary(config, live, stable_uri, new_uri, instances, expected, rollout)
    if result.promoted:
        registry.promote(name, candidate.version)
    else:
        log.warning("%s was rolled back; the champion stays %s", candidate.uri, champion.uri if champion else None)
    return result


def _first_deployment(config: ClusterDeployConfig, uri: str, instances: list[dict[str, Any]],
                      rollout: InferenceServiceRollout) -> DeployResult:
    """Applies the InferenceService whole, waits until it is Ready, smoke-tests the model through it."""
    stored = rollout.apply(build_inference_service(config.serving(uri, config.deployment_mode)))
    ready = rollout.wait_ready(config.isvc_name, config.namespace, _generation(stored), config.ready_timeout_s)
    url = endpoint_url(ready)
    smoke = smoke_test_through(url, config.model_name, instances, uri, config.smoke_timeout_s)
    log.info("smoke test passed through %s: %d rows in %.1f ms", url, smoke.rows, smoke.latency_ms)
    return DeployResult("promoted", smoke, None)


def _canary(config: ClusterDeployConfig, live: Mapping[str, Any], stable_uri: str, new_uri: str,
            instances: list[dict[str, Any]], expected: tuple[float, ...],
            rollout: InferenceServiceRollout) -> DeployResult:
    mode = _mode_of(live, config.deployment_mode)
    predictor_name = (live.get("spec") or {}).get("predictor", {}).get("name") if mode is DeploymentMode.STANDARD \
        else None
    stable = config.serving(stable_uri, mode, predictor_name)
    endpoint = CanaryEndpoint(rollout, config.isvc_name, config.namespace, mode, config.ready_timeout_s)
    stored = rollout.apply(build_canary(stable, new_uri, config.steps[0]))
    try:
        ready = rollout.wait_ready(config.isvc_name, config.namespace, _generation(stored), config.ready_timeout_s)
        url = endpoint_url(ready)
        smoke = smoke_test_through(url, config.model_name, instances[:SMOKE_ROWS], new_uri, config.smoke_timeout_s)
        log.info("smoke test passed through %s: %d rows in %.1f ms", url, smoke.rows, smoke.latency_ms)
    except BaseException as error:
        log.error("the canary did not come up (%s): rolling back", error)
        with contextlib.suppress(RolloutError):  # the original error is the one to report
            endpoint.rollback()
        raise
    windows = BackendWindows()
    with AttributedTraffic(f"{url}/v1/models/{config.model_name}:predict", instances, config.traffic_rps, windows,
                           {stable_uri: STABLE, new_uri: CANARY}):
        result = run_canary(endpoint, windows, config.steps, config.policy, config.step_timeout_s,
                            poll_s=config.poll_s, expected_scores=expected)
    return DeployResult(result.outcome, smoke, result)


def _mode_of(live: Mapping[str, Any], default: DeploymentMode) -> DeploymentMode:
    """The live InferenceService's mode (KServe refuses to change it), else `default`."""
    recorded = (live.get("status") or {}).get("deploymentMode") or \
        ((live.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    try:
        return DeploymentMode(recorded) if recorded else default
    except ValueError:
        return default


def _generation(stored: Mapping[str, Any]) -> int:
    return int((stored.get("metadata") or {}).get("generation") or 0)


# --- the component's entry point ----------------------------------------------------------------------


def deploy_to(serving_target: str, registry: ModelRegistry, name: str, version: str, rows: pd.DataFrame,
              config: LocalDeployConfig, workdir: Path,
              api: Callable[[], client.CustomObjectsApi] = cluster_api) -> DeployResult:
    """Deploys registered `version` of `name` on `serving_target`: "local" (serving/deploy.py) or "kserve" (this
    module, in the namespace this pod runs in, with the serving image of this build)."""
    if checked_serving_target(serving_target) == LOCAL:
        from slipway.serving.deploy import deploy_registered

        return deploy_registered(registry, name, version, rows, config, workdir)
    from slipway import runtimes
    from slipway.components.custom_objects import pod_namespace

    cluster = ClusterDeployConfig.from_env(config, pod_namespace(), runtimes.image(runtimes.SERVING))
    return deploy_on_cluster(registry, name, version, rows, cluster, InferenceServiceRollout(api()), workdir)

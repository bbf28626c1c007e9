"""The deploy step's kserve target (serving/cluster_deploy.py): an InferenceService, a smoke test and a canary.

What is verified how. No cluster exists here (REFERENCE.md), so the cluster is played in three parts:

- the API server: the recording fake CustomObjectsApi of tests/test_inference_service.py, which applies
  creates, replacements and merge patches as the API server does and validates every stored
  InferenceService against the real CRD; the tests assert on what it stores and on the patches sent;
- KServe: `KServeStandIn`, the fake's controller, marks each new generation Ready, reports the
  splitter's URL as the InferenceService's address, and reads the traffic split from the stored spec
  the way KServe does (Serverless: `canaryTrafficPercent` to the latest revision, the rest to the last
  revision rolled out whole; Standard: `spec.canary[0].trafficPercent`);
- the pods: real `slipway serve` processes, one per model location, each started with the
  `SLIPWAY_MODEL_URI` the InferenceService gives its predictor container, behind a loopback splitter
  that sends each request to one of them at random by that split and passes the answer back
  unchanged. It adds nothing, so the stable/canary attribution rests on the model servers' own
  `x-slipway-model` header alone, as it must behind KServe.

The registry is a real MLflow server with proxied artifacts (what a cluster runs), so versions are
`mlflow-artifacts:/` paths mapped onto an object-store destination, and the candidate's expected
scores come from its downloaded artifact. The models are logistic regressions trained here on the
real taxi rows. So the header attribution, the per-step windows, the PSI/latency/error checks and
the promote/rollback decisions are all real; only the API server and the traffic split are stand-ins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import torch
from crd_schema import validate_against_crd
from safetensors.torch import load_file, save_file
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from test_inference_service import CRD, FakeClock, FakeCustomObjectsApi

from slipway.components import models
from slipway.components.model_artifact import WEIGHTS_FILE, save_model
from slipway.components.preprocessing import Preprocessing
from slipway.components.registry import ModelRegistry, RegisteredVersion
from slipway.components.tracking import TrackingConfig, TrainingRun
from slipway.problem import load_problem
from slipway.serving.canary import AnalysisPolicy, BackendWindows, Observation
from slipway.serving.cluster_deploy import (
    AttributedTraffic,
    ClusterDeployConfig,
    ClusterUnavailableError,
    cluster_api,
    deploy_on_cluster,
    deploy_to,
    storage_uri_of,
)
from slipway.serving.cluster_rollout import InferenceServiceRollout, RolloutTimeoutError
from slipway.serving.deploy import DeployError, LocalDeployConfig, json_instances
from slipway.serving.inference_service import DeploymentMode
from slipway.serving.process import ServerProcess
from slipway.serving.protocol import MODEL_HEADER, MODEL_URI_ENV
from slipway.serving.router import serve_in_background

NAMESPACE = "kubeflow-user"
DESTINATION = "s3://slipway-mlflow/artifacts"  # the MLflow server's --artifacts-destination, as the task is told
SERVED_AS = "chicago_taxi"  # the name in URLs: the registered name, as in a local deployment
# Fewer requests per step than the production default (500) keep the test short, as in test_deploy.py; the
# p99 slack is wider because three model servers, the splitter and the load share two cores here.
POLICY = AnalysisPolicy(min_requests=150, p99_slack_ms=25.0)


def cluster_config(mode: DeploymentMode = DeploymentMode.SERVERLESS) -> ClusterDeployConfig:
    return ClusterDeployConfig(model_name=SERVED_AS, namespace=NAMESPACE, image="ghcr.io/slipway-ml/slipway-serving:t",
                               service_account="kserve-object-store", deployment_mode=mode,
                               artifacts_destination=DESTINATION, steps=(20, 100), policy=POLICY, traffic_rps=200,
                               step_timeout_s=60, ready_timeout_s=60, smoke_timeout_s=30, poll_s=0.25)


# --- models, registry, servers ------------------------------------------------------------------------


def train_logistic(train: pd.DataFrame, seed: int, steps: int, folder: Path) -> Path:
    """A logistic regression on the raw taxi columns (no feature store), trained full-batch: a real, small model."""
    problem = dataclasses.replace(load_problem("chicago_taxi"), feature_store=None)
    preprocessing = Preprocessing.fit(train, problem)
    torch.manual_seed(seed)
    module = models.build("logistic_regression", {"numeric_inputs": preprocessing.numeric_inputs,
                                                  "vocabulary_sizes": preprocessing.vocabulary_sizes})
    numeric, categorical = preprocessing.transform(train)
    labels = torch.tensor(train[problem.label.name].astype("float32").to_numpy())
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(module(numeric, categorical), labels).backward()
        optimizer.step()
    save_model(folder, module, "logistic_regression", module.arguments, preprocessing,
               {"problem": "chicago_taxi", "train_positive_rate": float(labels.mean())})
    return folder


def shifted(model: Path, folder: Path) -> Path:
    """The model with its bias raised by 2 logits: it loads and serves, but not what was evaluated."""
    shutil.copytree(model, folder)
    weights = load_file(str(folder / WEIGHTS_FILE))
    weights["linear.bias"] = weights["linear.bias"] + 2.0
    save_file(weights, str(folder / WEIGHTS_FILE))
    return folder


@dataclasses.dataclass(frozen=True)
class Setup:
    """Training runs to register from, the storage URI each one's versions get, and a server per URI."""

    registry: ModelRegistry
    folders: dict[str, Path]  # role -> the model folder its run logged
    runs: dict[str, str]  # role -> MLflow run id
    uris: dict[str, str]  # role -> storage URI of a version registered from that run
    servers: dict[str, str]  # storage URI -> the base URL of the server playing its predictor pod
    rows: pd.DataFrame


@pytest.fixture(scope="module")
def setup(mlflow_server: str, taxi_splits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("cluster-deploy")
    train, evaluation = (pd.read_parquet(path) for path in taxi_splits)
    stable = train_logistic(train, seed=0, steps=60, folder=root / "stable")
    candidate = train_logistic(train, seed=1, steps=120, folder=root / "candidate")
    models_by_role = {"stable": stable, "candidate": candidate, "skewed": candidate}
    served_by_role = {"stable": stable, "candidate": candidate, "skewed": shifted(candidate, root / "skewed")}
    registry = ModelRegistry.connect(mlflow_server)
    runs = {}
    for role, folder in models_by_role.items():
        with TrainingRun.start(TrackingConfig(mlflow_server, "cluster-deploy"), "train", {}, {}) as run:
            run.log_model_dir(folder)
        runs[role] = run.run_id
    uris = {role: storage_uri_of(registry.version(*register(registry, "scratch", run_id)), DESTINATION)
            for role, run_id in runs.items()}
    with contextlib.ExitStack() as stack:
        servers = {uris[role]: stack.enter_context(serve_as(folder, uris[role], root / role))
                   for role, folder in served_by_role.items()}
        rows = evaluation.sample(n=600, random_state=0)  # shuffled: any prefix a step replays is drawn like the whole
        for server in servers.values():
            server.wait_ready()
            # Warm, as a pod is once probes and the smoke test have run: a cold process's first calls are slow,
            # and one of them would decide a 150-request p99.
            for row in json_instances(rows.head(20)):
                httpx.post(f"{server.url}/v1/models/{SERVED_AS}:predict", json={"instances": [row]}).raise_for_status()
        yield Setup(registry, models_by_role, runs, uris, {uri: server.url for uri, server in servers.items()}, rows)


class IdentifiedServer(ServerProcess):
    """`slipway serve` with the identity the InferenceService gives the predictor container of `uri`.

    Started by `serve_as` without waiting, so that the three servers load their models side by side;
    `wait_ready` then waits as `ServerProcess` does on entry."""

    def _wait_ready(self) -> None:
        pass

    def wait_ready(self) -> None:
        try:
            ServerProcess._wait_ready(self)
        except BaseException:
            self.stop()
            raise


@contextlib.contextmanager
def serve_as(model: Path, uri: str, workdir: Path) -> Iterator[IdentifiedServer]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(MODEL_URI_ENV, uri)  # read by the child when it starts: ServerProcess passes its environment on
        server = IdentifiedServer(["serve", "--model", str(model), "--name", SERVED_AS], SERVED_AS, workdir, 90)
        server.__enter__()
    try:
        yield server
    finally:
        server.stop()


def register(registry: ModelRegistry, name: str, run_id: str) -> tuple[str, str]:
    return name, registry.register(name, run_id, {}).version


# --- KServe, played -----------------------------------------------------------------------------------


def storage_uri(predictor: dict[str, Any]) -> str:
    [container] = predictor["containers"]
    return next(v["value"] for v in container["env"] if v["name"] == "STORAGE_URI")


class KServeStandIn:
    """The fake API server's controller and the traffic split it implies (see the module docstring)."""

    def __init__(self, servers: dict[str, str]) -> None:
        self.servers = servers
        self.url = ""  # the splitter's, once it serves
        self.split: list[tuple[str, int]] = []  # (storage URI, percent)
        self.rolled_out: str | None = None  # Serverless: the revision that last took all of the traffic

    def __call__(self, obj: dict[str, Any]) -> None:
        spec, generation = obj["spec"], obj["metadata"]["generation"]
        uri = storage_uri(spec["predictor"])
        mode = obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        if mode == "Standard":
            canary = (spec.get("canary") or [None])[0]
            self.split = [(uri, 100)] if canary is None else [
                (uri, 100 - canary["trafficPercent"]), (storage_uri(canary["predictor"]), canary["trafficPercent"])]
        elif (percent := spec["predictor"].get("canaryTrafficPercent")) is None:
            self.rolled_out, self.split = uri, [(uri, 100)]
        else:
            self.split = [(self.rolled_out, 100 - percent), (uri, percent)]
        obj["status"] = {"observedGeneration": generation, "deploymentMode": mode, "url": self.url,
                         "address": {"url": self.url},
                         "conditions": [{"type": "PredictorReady", "status": "True"},
                                        {"type": "Ready", "status": "True"}]}

    def pick(self) -> str | None:
        point, total = random.random() * 100, 0
        for uri, percent in self.split:
            total += percent
            if point < total:
                return self.servers.get(uri)
        return None

    async def forward(self, request: Request) -> Response:
        upstream = self.pick()
        if upstream is None:
            return PlainTextResponse("no revision serves this", status_code=503)
        client: httpx.AsyncClient = request.app.state.client
        answer = await client.request(request.method, upstream + request.url.path, content=await request.body(),
                                      headers={"content-type": request.headers.get("content-type", "")})
        kept = {k: v for k, v in answer.headers.items() if k not in ("content-length", "transfer-encoding",
                                                                      "content-encoding", "connection")}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


@contextlib.contextmanager
def kserve(setup: Setup) -> Iterator[tuple[FakeCustomObjectsApi, InferenceServiceRollout, KServeStandIn]]:
    stand_in = KServeStandIn(setup.servers)
    app = Starlette(routes=[Route("/{path:path}", stand_in.forward, methods=["GET", "POST"])])
    app.state.client = httpx.AsyncClient(timeout=30)
    with serve_in_background(app) as url:
        stand_in.url = url
        api = FakeCustomObjectsApi(controller=stand_in)
        yield api, InferenceServiceRollout(api, poll_s=0.05), stand_in  # type: ignore[arg-type]


def stored(api: FakeCustomObjectsApi) -> dict[str, Any]:
    return api.objects[(NAMESPACE, "chicago-taxi")]


def env_of(predictor: dict[str, Any]) -> dict[str, str]:
    [container] = predictor["containers"]
    return {v["name"]: v["value"] for v in container["env"]}


# --- the deployments ----------------------------------------------------------------------------------


def test_a_first_deployment_applies_the_service_smoke_tests_it_through_its_address_and_promotes(
        setup: Setup, tmp_path: Path) -> None:
    name = "taxi-first"
    _, version = register(setup.registry, name, setup.runs["stable"])
    with kserve(setup) as (api, rollout, _):
        result = deploy_on_cluster(setup.registry, name, version, setup.rows, cluster_config(), rollout, tmp_path)

    assert result.promoted and result.rollout is None and "first deployment" in result.markdown()
    assert result.smoke.rows == 8 and all(0 <= s <= 1 for s in result.smoke.scores)
    assert [kind for kind, _ in api.calls if kind != "get"] == ["create"]
    predictor = stored(api)["spec"]["predictor"]
    assert env_of(predictor) == {"STORAGE_URI": setup.uris["stable"], MODEL_URI_ENV: setup.uris["stable"]}
    assert predictor["serviceAccountName"] == "kserve-object-store"
    assert predictor["containers"][0]["args"][:4] == ["--model", "/mnt/models", "--name", SERVED_AS]
    validate_against_crd(stored(api), CRD)
    assert setup.registry.champion(name).version == version


def test_a_canary_that_serves_other_scores_than_were_evaluated_is_rolled_back_and_the_alias_stays(
        setup: Setup, tmp_path: Path) -> None:
    name = "taxi-skewed"
    _, champion = register(setup.registry, name, setup.runs["stable"])
    _, candidate = register(setup.registry, name, setup.runs["skewed"])
    with kserve(setup) as (api, rollout, _):
        deploy_on_cluster(setup.registry, name, champion, setup.rows, cluster_config(), rollout, tmp_path)
        result = deploy_on_cluster(setup.registry, name, candidate, setup.rows, cluster_config(), rollout, tmp_path)

    assert result.outcome == "rolled_back", result.markdown()
    [step] = result.rollout.steps
    assert step.percent == 20 and step.verdict.failed == ("score_psi",)
    # Both windows were filled by the servers' own headers: the canary's scores are the shifted model's.
    assert step.canary.requests >= POLICY.min_requests and step.stable.requests > step.canary.requests
    assert step.canary.to_dict()["score_mean"] > step.stable.to_dict()["score_mean"] + 0.1
    assert api.writes("patch")[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    spec = stored(api)["spec"]
    assert spec["predictor"]["canaryTrafficPercent"] == 0
    assert env_of(spec["predictor"])[MODEL_URI_ENV] == setup.uris["skewed"]  # Serverless: the spec still names it
    assert setup.registry.champion(name).version == champion
    assert "rolled back at 20%" in result.markdown() and "score PSI" in result.markdown()


def test_a_canary_that_serves_what_was_evaluated_is_promoted_step_by_step_in_standard_mode(
        setup: Setup, tmp_path: Path) -> None:
    name = "taxi-promoted"
    _, champion = register(setup.registry, name, setup.runs["stable"])
    _, candidate = register(setup.registry, name, setup.runs["candidate"])
    config = cluster_config(DeploymentMode.STANDARD)
    with kserve(setup) as (api, rollout, stand_in):
        deploy_on_cluster(setup.registry, name, champion, setup.rows, config, rollout, tmp_path)
        result = deploy_on_cluster(setup.registry, name, candidate, setup.rows, config, rollout, tmp_path)

    assert result.outcome == "promoted", result.markdown()
    assert [step.percent for step in result.rollout.steps] == [20, 100]
    first = result.rollout.steps[0]
    assert first.canary.requests >= POLICY.min_requests and first.stable.requests > first.canary.requests
    assert first.canary.error_rate == 0 and first.stable.error_rate == 0
    promotion = api.writes("patch")[-1]
    assert promotion["spec"]["canary"] is None and "resourceVersion" in promotion["metadata"]
    spec = stored(api)["spec"]
    assert "canary" not in spec and env_of(spec["predictor"])[MODEL_URI_ENV] == setup.uris["candidate"]
    assert spec["predictor"]["minReplicas"] == 1  # the stable's bounds, kept through the promotion
    assert stand_in.split == [(setup.uris["candidate"], 100)]
    validate_against_crd(stored(api), CRD)
    assert setup.registry.champion(name).version == candidate


def test_a_canary_that_never_answers_its_smoke_test_is_rolled_back_before_the_error(
        setup: Setup, tmp_path: Path, mlflow_server: str) -> None:
    """A canary whose pods answer nothing (here: no server plays its model location, so the splitter answers 503
    for its share) fails the smoke test; the InferenceService is rolled back before the error reaches the step."""
    with TrainingRun.start(TrackingConfig(mlflow_server, "cluster-deploy"), "train", {}, {}) as run:
        run.log_model_dir(setup.folders["stable"])  # a new run: a model location no server plays
    name = "taxi-silent"
    _, champion = register(setup.registry, name, setup.runs["stable"])
    _, candidate = register(setup.registry, name, run.run_id)
    config = dataclasses.replace(cluster_config(), smoke_timeout_s=2)
    with kserve(setup) as (api, rollout, _):
        deploy_on_cluster(setup.registry, name, champion, setup.rows, config, rollout, tmp_path)
        with pytest.raises(DeployError, match=r"smoke test: s3://slipway-mlflow/artifacts/.+/model did not answer "
                                              r"through http://127\.0\.0\.1:\d+ in \d+ requests within 2 s \(last: "
                                              r"HTTP (200 from s3://slipway-mlflow/artifacts/.+|503 from a server "
                                              r"that named no model)\)"):
            deploy_on_cluster(setup.registry, name, candidate, setup.rows, config, rollout, tmp_path)

    assert api.writes("patch") == [{"spec": {"predictor": {"canaryTrafficPercent": 0}}}]
    assert setup.registry.champion(name).version == champion


def test_an_inference_service_that_never_gets_ready_times_out_naming_its_conditions(
        setup: Setup, tmp_path: Path) -> None:
    def kserve_sees_a_failed_revision(obj: dict[str, Any]) -> None:
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "conditions": [
            {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
             "message": "Container failed with: model not found"},
            {"type": "Ready", "status": "False", "reason": "RevisionFailed"}]}

    name = "taxi-never-ready"
    _, version = register(setup.registry, name, setup.runs["stable"])
    clock = FakeClock()
    rollout = InferenceServiceRollout(FakeCustomObjectsApi(controller=kserve_sees_a_failed_revision),  # type: ignore
                                      poll_s=5, sleep=clock.sleep, clock=clock)

    with pytest.raises(RolloutTimeoutError, match=(
            r"InferenceService kubeflow-user/chicago-taxi was not Ready at generation 1 within 60 s; last seen: "
            r"observedGeneration 1; PredictorReady=False \(RevisionFailed: Container failed with: model not found\), "
            r"Ready=False \(RevisionFailed\)")):
        deploy_on_cluster(setup.registry, name, version, setup.rows, cluster_config(), rollout, tmp_path)
    assert setup.registry.champion(name) is None


# --- the parts ----------------------------------------------------------------------------------------


def registered(source: str) -> RegisteredVersion:
    return RegisteredVersion(name="chicago_taxi", version="3", source=source, run_id=None, aliases=(), tags={})


def test_the_storage_uri_is_the_version_source_in_object_storage() -> None:
    assert storage_uri_of(registered("s3://mlflow/1/abc/artifacts/model")) == "s3://mlflow/1/abc/artifacts/model"
    assert storage_uri_of(registered("mlflow-artifacts:/1/abc/artifacts/model"), "gs://ml/store/") == \
        "gs://ml/store/1/abc/artifacts/model"
    with pytest.raises(DeployError, match=r"models:/chicago_taxi/3 is stored at mlflow-artifacts:/1/abc/artifacts/model"
                                          r", inside the MLflow server's artifact store: set "
                                          r"SLIPWAY_MLFLOW_ARTIFACTS_DESTINATION"):
        storage_uri_of(registered("mlflow-artifacts:/1/abc/artifacts/model"))
    with pytest.raises(DeployError, match=r"the model folder of models:/chicago_taxi/3: '/runs/mlflow/artifacts/model' "
                                          r"is not a model location.*serving_target=kserve needs the registry's "
                                          r"artifacts in object storage"):
        storage_uri_of(registered("/runs/mlflow/artifacts/model"))


def test_answers_are_attributed_by_the_model_they_name_and_unplaced_failures_charged_to_the_canary() -> None:
    windows = BackendWindows()
    traffic = AttributedTraffic("http://isvc/v1/models/m:predict", [{}], 1.0, windows,
                                {"s3://m/1": "stable", "s3://m/2": "canary"})
    traffic.record("s3://m/1", Observation(2.0, 200, scores=(0.1,)))
    traffic.record("s3://m/2", Observation(3.0, 200, scores=(0.2,)))
    traffic.record(None, Observation(1.0, 200))  # a success that names no model: not evidence, dropped
    traffic.record("s3://m/9", Observation(1.0, 200))  # a third model: not evidence either
    traffic.record(None, Observation(1.0, 503))  # the mesh failed: charged to the canary
    traffic.record(None, Observation(1.0, None))  # no answer at all: likewise

    stable, canary = windows.summaries()
    assert (stable.requests, stable.scores) == (1, (0.1,))
    assert (canary.requests, canary.errors, canary.scores) == (3, 2, (0.2,))
    assert (traffic.unattributed, traffic.charged_to_canary) == (2, 2)


def test_the_model_server_names_its_model_in_every_answer(setup: Setup) -> None:
    server = setup.servers[setup.uris["stable"]]
    v1 = httpx.post(f"{server}/v1/models/{SERVED_AS}:predict", json={"instances": json_instances(setup.rows.head(2))})
    assert v1.status_code == 200 and v1.headers[MODEL_HEADER] == setup.uris["stable"]


def test_without_a_cluster_the_kserve_target_says_it_needs_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterUnavailableError, match=r"serving_target=kserve needs a Kubernetes cluster with KServe: "
                                                      r"this task is not running in a pod .*serving_target=local"):
        cluster_api()


def test_an_unknown_serving_target_is_refused_naming_the_allowed_values(tmp_path: Path) -> None:
    from slipway.components.catalog import deploy

    assert inspect.signature(deploy.python_func).parameters["serving_target"].default == "local"
    with pytest.raises(ValueError, match=r"serving_target 'k8s' is not one of local, kserve"):
        deploy_to("k8s", None, "chicago_taxi", "1", pd.DataFrame(), LocalDeployConfig(name="chicago_taxi"),  # type: ignore[arg-type]
                  tmp_path)


def test_the_cluster_settings_come_from_the_task_environment_with_the_manifests_defaults() -> None:
    local = LocalDeployConfig(name="chicago_taxi", steps=(10, 100), traffic_rps=50)
    default = ClusterDeployConfig.from_env(local, "kubeflow-user", "ghcr.io/slipway-ml/slipway-serving:1", {})
    assert (default.isvc_name, default.service_account, default.deployment_mode, default.artifacts_destination) == \
        ("chicago-taxi", "slipway-serving", DeploymentMode.SERVERLESS, None)
    assert (default.steps, default.traffic_rps, default.policy) == ((10, 100), 50, local.policy)

    configured = ClusterDeployConfig.from_env(local, "kubeflow-user", "ghcr.io/slipway-ml/slipway-serving:1", {
        "SLIPWAY_SERVING_SERVICE_ACCOUNT": "kserve-minio", "SLIPWAY_SERVING_DEPLOYMENT_MODE": "RawDeployment",
        "SLIPWAY_MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow/artifacts"})
    assert (configured.service_account, configured.deployment_mode, configured.artifacts_destination) == \
        ("kserve-minio", DeploymentMode.STANDARD, "s3://mlflow/artifacts")
    with pytest.raises(ValueError, match=r"deployment_mode 'ModelMesh' is not Knative \(Serverless\) or Standard "
                                         r"\(RawDeployment\); set SLIPWAY_SERVING_DEPLOYMENT_MODE"):
        ClusterDeployConfig.from_env(local, "kubeflow-user", "img:1", {"SLIPWAY_SERVING_DEPLOYMENT_MODE": "ModelMesh"})

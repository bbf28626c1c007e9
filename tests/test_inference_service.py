"""The KServe InferenceService we emit, and the canary rollout layer that changes it on a cluster.

Every shape (plain, with transformer + logger + batcher, GPU, canary, promoted, rolled back, in both
deployment modes) is validated against the real InferenceService CRD, strictly, so a typo'd field
fails. The cluster layer runs against a fake CustomObjectsApi that applies writes as the API server
would (merge patch: null deletes, lists replace; resourceVersion preconditions; generation bumps) and
validates every stored object against the same CRD; one test puts the real kubernetes client on the
wire to a local HTTP server to pin the patch content type.
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schema import CRDValidationError, crd_errors, crd_path, validate_against_crd
from kubernetes import client
from kubernetes.client.rest import ApiException
from pod_security_profile import pod_specs, restricted_violations

from slipway.pipelines.cli import serve_command
from slipway.runtimes import SERVING_IMAGE
from slipway.serving.cluster_rollout import (
    CanaryEndpoint,
    InferenceServiceRollout,
    RolloutError,
    RolloutTimeoutError,
    TrafficTarget,
    promotion_patch,
)
from slipway.serving.inference_cache import CacheSettings
from slipway.serving.inference_service import (
    GROUP,
    PLURAL,
    VERSION,
    BatcherConfig,
    DeploymentMode,
    LoggerConfig,
    ServingConfig,
    ServingConfigError,
    ServingResources,
    TransformerConfig,
    build_canary,
    build_inference_service,
    build_promotion,
    build_rollback,
    model_revision_name,
    to_dict,
    write_manifest,
)

CRD = crd_path("serving.kserve.io_inferenceservices.yaml")
STABLE_URI = "s3://slipway-models/taxi-tips/3"
CANARY_URI = "s3://slipway-models/taxi-tips/4"
SERVERLESS, STANDARD = DeploymentMode.SERVERLESS, DeploymentMode.STANDARD
MODES = [SERVERLESS, STANDARD]


def serving_config(mode: DeploymentMode = SERVERLESS, **overrides: Any) -> ServingConfig:
    fields: dict[str, Any] = {
        "name": "taxi-tips", "namespace": "kubeflow-user", "storage_uri": STABLE_URI, "model_name": "taxi-tips",
        "service_account": "kserve-object-store", "deployment_mode": mode, "min_replicas": 2, "max_replicas": 6,
    }
    return ServingConfig(**{**fields, **overrides})


def full_config(mode: DeploymentMode = SERVERLESS) -> ServingConfig:
    return serving_config(
        mode,
        transformer=TransformerConfig(env={"SLIPWAY_FEAST_REDIS": "feast-redis.feast:6379",
                                           "SLIPWAY_FEAST_REGISTRY": "s3://slipway-features/registry.db"},
                                      fallback_score=0.27, args=["--predictor-timeout", "2"]),
        logger=LoggerConfig(url="http://drift-detector.kubeflow-user.svc.cluster.local/events", mode="request"),
        batcher=BatcherConfig(max_batch_size=32, max_latency_ms=5),
    )


def predictor_container(manifest: dict[str, Any]) -> dict[str, Any]:
    [container] = manifest["spec"]["predictor"]["containers"]
    return container


def env(container: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container["env"] if "value" in variable}


# --- the shapes, against the CRD ------------------------------------------------------------------------

SHAPES: dict[str, Callable[[DeploymentMode], Any]] = {
    "plain": lambda mode: build_inference_service(serving_config(mode)),
    "transformer+logger+batcher": lambda mode: build_inference_service(full_config(mode)),
    "gpu": lambda mode: build_inference_service(serving_config(mode, resources=ServingResources(gpus=2))),
    "canary": lambda mode: build_canary(full_config(mode), CANARY_URI, 10),
    "promoted": lambda mode: build_promotion(build_canary(full_config(mode), CANARY_URI, 10)),
    "rolled back": lambda mode: build_rollback(build_canary(full_config(mode), CANARY_URI, 10)),
}


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_validates_against_the_crd(shape: str, mode: DeploymentMode) -> None:
    validate_against_crd(to_dict(SHAPES[shape](mode)), CRD)


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_container_of_every_shape_meets_the_restricted_profile_on_its_own(
        shape: str, mode: DeploymentMode) -> None:
    components = pod_specs(to_dict(SHAPES[shape](mode)))
    assert components and all(restricted_violations(component) == [] for component in components)
    # At the container level only: a Knative revision refuses a pod-level securityContext unless the cluster
    # enables kubernetes.podspec-securitycontext, so the predictor and transformer carry none.
    assert not any("securityContext" in component for component in components)


def test_the_predictor_runs_as_the_slipway_serving_account_unless_told_otherwise() -> None:
    default = ServingConfig(name="taxi-tips", namespace="kubeflow-user", storage_uri=STABLE_URI,
                            model_name="taxi-tips", deployment_mode=STANDARD)
    canary = to_dict(build_canary(default, CANARY_URI, 10))
    assert canary["spec"]["predictor"]["serviceAccountName"] == "slipway-serving"  # manifests/base creates it
    assert canary["spec"]["canary"][0]["predictor"]["serviceAccountName"] == "slipway-serving"
    assert to_dict(build_inference_service(serving_config()))["spec"]["predictor"]["serviceAccountName"] == \
        "kserve-object-store"


def test_the_validator_catches_a_typo_a_missing_field_and_a_bound_in_an_inference_service() -> None:
    serverless = to_dict(build_canary(serving_config(SERVERLESS), CANARY_URI, 10))
    serverless["spec"]["predictor"]["canaryTraficPercent"] = serverless["spec"]["predictor"].pop("canaryTrafficPercent")
    standard = to_dict(build_canary(serving_config(STANDARD), CANARY_URI, 10))
    del standard["spec"]["canary"][0]["trafficPercent"]
    over = to_dict(build_canary(serving_config(STANDARD), CANARY_URI, 10))
    over["spec"]["canary"][0]["trafficPercent"] = 101

    assert crd_errors(serverless, CRD) == [
        "spec.predictor.canaryTraficPercent: unknown field 'canaryTraficPercent' (the API server would drop it)"]
    assert crd_errors(standard, CRD) == ["spec.canary[0].trafficPercent: required field is missing"]
    with pytest.raises(CRDValidationError, match=r"spec\.canary\[0\]\.trafficPercent: 101 is greater than"):
        validate_against_crd(over, CRD)


def test_to_dict_is_plain_json_with_the_apis_camel_case_names() -> None:
    manifest = to_dict(build_inference_service(full_config()))

    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert manifest["spec"]["predictor"]["serviceAccountName"] == "kserve-object-store"
    assert manifest["spec"]["predictor"]["batcher"] == {"maxBatchSize": 32, "maxLatency": 5}


# --- the predictor ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_the_predictor_runs_our_server_on_the_model_the_storage_initializer_downloads(mode: DeploymentMode) -> None:
    manifest = to_dict(build_inference_service(serving_config(mode, model_name="tips-v3")))
    container = predictor_container(manifest)

    assert container["name"] == "kserve-container"
    assert container["image"] == SERVING_IMAGE
    assert container["command"] == ["slipway", "serve"]
    assert container["args"] == ["--model", "/mnt/models", "--name", "tips-v3",
                                 "--http-port", "8080", "--grpc-port", "8081"]
    assert env(container) == {"STORAGE_URI": STABLE_URI, "SLIPWAY_MODEL_URI": STABLE_URI}
    assert container["readinessProbe"] == {"httpGet": {"path": "/v2/models/tips-v3/ready", "port": 8080}}
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}
    assert manifest["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": mode.value}
    assert (manifest["spec"]["predictor"]["minReplicas"], manifest["spec"]["predictor"]["maxReplicas"]) == (2, 6)


def test_the_inference_cache_reaches_the_predictor_as_the_variables_slipway_serve_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = CacheSettings(size=10_000, ttl_s=60, redis="inference-cache.kubeflow:6379")
    manifest = to_dict(build_inference_service(serving_config(STANDARD, cache=cache)))
    validate_against_crd(manifest, CRD)
    variables = env(predictor_container(manifest))
    assert {name: value for name, value in variables.items() if name.startswith("SLIPWAY_INFERENCE_CACHE_")} == {
        "SLIPWAY_INFERENCE_CACHE_SIZE": "10000", "SLIPWAY_INFERENCE_CACHE_TTL": "60",
        "SLIPWAY_INFERENCE_CACHE_REDIS": "inference-cache.kubeflow:6379"}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    served = serve_command.make_context("serve", ["--model", "/mnt/models"]).params
    assert CacheSettings(size=served["cache_size"], ttl_s=served["cache_ttl"], redis=served["cache_redis"]) == cache
    # Off by default: no variable at all, so the server's own default (no cache) holds.
    assert not any(name.startswith("SLIPWAY_INFERENCE_CACHE_")
                   for name in env(predictor_container(to_dict(build_inference_service(serving_config())))))


def test_knative_routes_one_port_so_serverless_exposes_http_and_standard_also_grpc() -> None:
    serverless = predictor_container(to_dict(build_inference_service(serving_config(SERVERLESS))))
    standard = predictor_container(to_dict(build_inference_service(serving_config(STANDARD))))

    assert serverless["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert standard["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"},
                                 {"name": "grpc-port", "containerPort": 8081, "protocol": "TCP"}]


def test_the_legacy_mode_names_are_read_and_the_names_of_kserve_0_21_written() -> None:
    assert serving_config("Serverless").deployment_mode is SERVERLESS
    assert serving_config("RawDeployment").deployment_mode is STANDARD
    assert serving_config("Knative").deployment_mode is SERVERLESS
    manifest = to_dict(build_inference_service(serving_config("RawDeployment")))
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    with pytest.raises(ServingConfigError, match=r"ServingConfig\.deployment_mode: 'ModelMesh' is not"):
        serving_config("ModelMesh")


def test_transformer_logger_and_batcher() -> None:
    spec = to_dict(build_inference_service(full_config()))["spec"]
    [transformer] = spec["transformer"]["containers"]

    assert transformer["name"] == "kserve-container" and transformer["image"] == SERVING_IMAGE
    assert transformer["command"] == ["slipway", "transform"]
    # KServe would pass --model_name <isvc name>; the transformer must call the model the predictor serves.
    assert transformer["args"] == ["--model_name", "taxi-tips", "--fallback-score", "0.27", "--predictor-timeout", "2"]
    assert env(transformer) == {"SLIPWAY_FEAST_REDIS": "feast-redis.feast:6379",
                                "SLIPWAY_FEAST_REGISTRY": "s3://slipway-features/registry.db"}
    # The base's Redis asks for a password: the transformer reads it from the Secret, never as a value.
    assert [variable for variable in transformer["env"] if "valueFrom" in variable] == [
        {"name": "SLIPWAY_FEAST_REDIS_PASSWORD", "valueFrom": {
            "secretKeyRef": {"name": "slipway-auth", "key": "SLIPWAY_FEAST_REDIS_PASSWORD", "optional": True}}}]
    assert transformer["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert transformer["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert "nvidia.com/gpu" not in transformer["resources"]["limits"]
    assert spec["predictor"]["logger"] == {"url": "http://drift-detector.kubeflow-user.svc.cluster.local/events",
                                           "mode": "request"}
    assert spec["predictor"]["batcher"] == {"maxBatchSize": 32, "maxLatency": 5}

    named = serving_config(transformer=TransformerConfig(image="feast:1", args=["--model_name", "other"]))
    assert to_dict(build_inference_service(named))["spec"]["transformer"]["containers"][0]["args"] == [
        "--fallback-score", "0.5", "--model_name", "other"]


def test_gpus_are_requested_limited_and_their_taint_tolerated() -> None:
    gpu = serving_config(resources=ServingResources(gpus=2, gpu_resource="nvidia.com/gpu"))
    predictor = to_dict(build_inference_service(gpu))["spec"]["predictor"]

    assert predictor["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert predictor["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "tolerations" not in to_dict(build_inference_service(serving_config()))["spec"]["predictor"]


# --- canary, promotion, rollback shapes ---------------------------------------------------------------


def test_serverless_canary_promotion_and_rollback() -> None:
    canary = build_canary(full_config(SERVERLESS), CANARY_URI, 10)
    manifest = to_dict(canary)

    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert env(predictor_container(manifest)) == {"STORAGE_URI": CANARY_URI, "SLIPWAY_MODEL_URI": CANARY_URI}
    assert manifest["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert "canary" not in manifest["spec"]

    promoted = to_dict(build_promotion(canary))["spec"]["predictor"]
    rolled_back = to_dict(build_rollback(canary))["spec"]["predictor"]
    assert "canaryTrafficPercent" not in promoted
    assert rolled_back["canaryTrafficPercent"] == 0
    assert env(promoted["containers"][0]) == env(rolled_back["containers"][0]) == {
        "STORAGE_URI": CANARY_URI, "SLIPWAY_MODEL_URI": CANARY_URI}
    assert to_dict(canary) == manifest  # the builders copy, never change their argument


def test_standard_canary_promotion_and_rollback() -> None:
    stable = to_dict(build_inference_service(full_config(STANDARD)))
    canary = build_canary(full_config(STANDARD), CANARY_URI, 10)
    manifest = to_dict(canary)
    [entry] = manifest["spec"]["canary"]

    assert manifest["spec"]["predictor"] == stable["spec"]["predictor"]
    assert entry["trafficPercent"] == 10
    assert entry["predictor"]["name"] == model_revision_name(CANARY_URI)
    assert env(entry["predictor"]["containers"][0]) == {"STORAGE_URI": CANARY_URI, "SLIPWAY_MODEL_URI": CANARY_URI}
    assert not {"minReplicas", "maxReplicas", "canaryTrafficPercent"} & set(entry["predictor"])
    assert "serving.kserve.io/enable-tag-routing" not in manifest["metadata"]["annotations"]

    promoted = to_dict(build_promotion(canary))["spec"]
    assert "canary" not in promoted
    assert promoted["predictor"] == {**entry["predictor"], "minReplicas": 2, "maxReplicas": 6}
    assert promoted["transformer"] == stable["spec"]["transformer"]

    rolled_back = to_dict(build_rollback(canary))["spec"]
    assert rolled_back == stable["spec"]


def test_a_standard_canary_after_a_promotion_keeps_the_stable_predictor_name() -> None:
    config = serving_config(STANDARD, storage_uri=CANARY_URI, predictor_name=model_revision_name(CANARY_URI))
    manifest = to_dict(build_canary(config, "gs://slipway-models/taxi-tips/5", 25))

    assert manifest["spec"]["predictor"]["name"] == model_revision_name(CANARY_URI)
    assert manifest["spec"]["canary"][0]["predictor"]["name"] == model_revision_name("gs://slipway-models/taxi-tips/5")
    with pytest.raises(ServingConfigError, match="canary_name: 'v1' is the stable predictor's name"):
        build_canary(serving_config(STANDARD, predictor_name="v1"), CANARY_URI, 10, canary_name="v1")


@pytest.mark.parametrize("percent", [-1, 101, True, 12.5, "10", None])
def test_a_canary_percent_outside_0_to_100_is_refused(percent: Any) -> None:
    with pytest.raises(ValueError, match=rf"canary traffic percent: {percent!r} must be a whole number from 0 to 100"):
        build_canary(serving_config(), CANARY_URI, percent)


@pytest.mark.parametrize("percent", [0, 100])
def test_the_bounds_are_allowed(percent: int) -> None:
    validate_against_crd(to_dict(build_canary(serving_config(STANDARD), CANARY_URI, percent)), CRD)


def test_a_canary_of_the_served_model_and_promoting_what_is_no_canary_are_refused() -> None:
    with pytest.raises(ServingConfigError, match="is the model the endpoint serves already"):
        build_canary(serving_config(), STABLE_URI, 10)
    with pytest.raises(ServingConfigError, match="not a Serverless canary"):
        build_promotion(build_inference_service(serving_config(SERVERLESS)))
    with pytest.raises(ServingConfigError, match="expected one Standard canary in spec.canary, found 0"):
        build_rollback(build_inference_service(serving_config(STANDARD)))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": "Taxi_Tips"}, r"ServingConfig\.name: 'Taxi_Tips' is not a valid InferenceService name"),
    ({"name": "3-taxi"}, r"ServingConfig\.name: '3-taxi' is not a valid InferenceService name"),
    ({"namespace": "Kube Flow"}, r"ServingConfig\.namespace: 'Kube Flow' is not a namespace name"),
    ({"storage_uri": "https://models/taxi"}, r"ServingConfig\.storage_uri: 'https://models/taxi' is not a model loc"),
    ({"storage_uri": "s3://"}, r"ServingConfig\.storage_uri: 's3://' is not a model location"),
    ({"storage_uri": "pvc://Models_Claim/taxi"}, r"'Models_Claim' in 'pvc://Models_Claim/taxi' is not a Persist"),
    ({"model_name": "taxi/tips"}, r"ServingConfig\.model_name: 'taxi/tips' is not a model name"),
    ({"image": "ghcr.io/x y"}, r"ServingConfig\.image: 'ghcr.io/x y' is not a container image reference"),
    ({"min_replicas": 3, "max_replicas": 2}, r"ServingConfig\.min_replicas/max_replicas: 3/2 must be"),
    ({"service_account": "Object Store"}, r"ServingConfig\.service_account: 'Object Store' is not a service acc"),
    ({"predictor_name": "v1"}, r"ServingConfig\.predictor_name: only a Standard-mode predictor is renamed"),
    ({"resources": None}, r"ServingConfig\.resources: expected a ServingResources, got None"),
    ({"name": "t" * 54}, r"ServingConfig\.name: 't{54}' is too long: the name 't{54}-predictor' that KServe der"),
])
def test_an_invalid_config_is_refused_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ServingConfigError, match=message):
        serving_config(**overrides)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: ServingResources(cpu_request="lots"), r"ServingResources\.cpu_request: 'lots' is not a positive"),
    (lambda: ServingResources(cpu_request="3", cpu_limit="2500m"), r"cpu_request: 3 is more than the limit 2500m"),
    (lambda: ServingResources(memory_request="4Gi", memory_limit="3000Mi"), r"memory_request: 4Gi is more than"),
    (lambda: ServingResources(gpus=-1), r"ServingResources\.gpus: -1 is not a whole number of GPUs"),
    (lambda: ServingResources(gpu_resource="gpu"), r"ServingResources\.gpu_resource: 'gpu' is not an extended"),
    (lambda: LoggerConfig(url="http://drift", mode="everything"), r"LoggerConfig\.mode: 'everything' is not one of"),
    (lambda: BatcherConfig(max_batch_size=0), r"BatcherConfig\.max_batch_size: 0 must be a whole number, at least 1"),
    (lambda: TransformerConfig(image="feast:1", resources=ServingResources(gpus=1)), r"needs no GPU"),
    (lambda: TransformerConfig(env={"FEAST REDIS": "r:6379"}), r"TransformerConfig\.env: 'FEAST REDIS'='r:6379'"),
    (lambda: TransformerConfig(fallback_score=1.5), r"TransformerConfig\.fallback_score: 1\.5 is not a probability"),
    (lambda: build_canary(serving_config(name="t" * 47), CANARY_URI, 5), r"'latest-t{47}-predictor' that KServe"),
    (lambda: build_canary(serving_config(STANDARD), CANARY_URI, 5, canary_name="C1"), r"canary_name: 'C1' is not a"),
    (lambda: build_canary(serving_config(), "s3:/models", 5), r"storage_uri: 's3:/models' is not a model location"),
])
def test_invalid_parts_are_refused_naming_the_field(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ServingConfigError, match=message):
        build()


LOGGER_URL_RULE = "is not an http(s) URL with a host (and a port from 1 to 65535 if it names one), e.g. " \
    "http://drift.kubeflow.svc.cluster.local/events"
HOST_PORT_RULE = "is not HOST:PORT (a host name or IP address, then a port from 1 to 65535), e.g. " \
    "feast-redis.kubeflow.svc.cluster.local:6379"
REGISTRY_RULE = "is not a registry the transformer's pod can read: an s3:// or gs:// URI of the registry file, or a " \
    "SQL URL (postgresql://...)"


@pytest.mark.parametrize("url", ["drift-detector", "ftp://drift/events", "http://:8080/events", "http://drift:0",
                                 "http://drift:99999/events", "http://drift detector/events"])
def test_a_logger_url_without_http_a_host_or_a_valid_port_is_refused(url: str) -> None:
    with pytest.raises(ServingConfigError) as caught:
        LoggerConfig(url=url)
    assert str(caught.value) == f"LoggerConfig.url: {url!r} {LOGGER_URL_RULE}"


@pytest.mark.parametrize("address", ["feast-redis", "feast-redis:0", "feast-redis:65536", ":6379", "feast-redis:",
                                     "feast redis:6379", "feast-redis:６３７９", "feast-redis:6379,db=0"])
def test_the_transformers_redis_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ServingConfigError) as caught:
        TransformerConfig(env={"SLIPWAY_FEAST_REDIS": address, "SLIPWAY_FEAST_REGISTRY": "s3://features/registry.db"})
    assert str(caught.value) == f"TransformerConfig.env['SLIPWAY_FEAST_REDIS']: {address!r} {HOST_PORT_RULE}"


@pytest.mark.parametrize("location", ["registry.db", "/data/registry.db", "file:///data/registry.db", "s3://features",
                                      "gs:///registry.db"])
def test_the_transformers_registry_must_be_one_its_pod_can_read(location: str) -> None:
    with pytest.raises(ServingConfigError) as caught:
        TransformerConfig(env={"SLIPWAY_FEAST_REDIS": "feast-redis:6379", "SLIPWAY_FEAST_REGISTRY": location})
    assert str(caught.value) == f"TransformerConfig.env['SLIPWAY_FEAST_REGISTRY']: {location!r} {REGISTRY_RULE}"


@pytest.mark.parametrize(("redis", "registry"), [("feast-redis.kubeflow.svc.cluster.local:6379", "s3://f/registry.db"),
                                                 ("10.0.0.7:6380", "gs://f/slipway/registry.db"),
                                                 ("[fd00::7]:6379", "postgresql://feast@pg.kubeflow/registry")])
def test_addresses_a_pod_can_reach_are_accepted(redis: str, registry: str) -> None:
    transformer = TransformerConfig(env={"SLIPWAY_FEAST_REDIS": redis, "SLIPWAY_FEAST_REGISTRY": registry})
    assert transformer.env["SLIPWAY_FEAST_REDIS"] == redis
    assert LoggerConfig(url="https://[fd00::9]:8443/events").url == "https://[fd00::9]:8443/events"


@pytest.mark.parametrize(("flags", "message"), [
    (["--logger-url", "drift:8080"], f"--logger-url: 'drift:8080' {LOGGER_URL_RULE}"),
    (["--feast-redis", "feast-redis", "--feast-registry", "s3://f/registry.db"],
     f"--feast-redis: 'feast-redis' {HOST_PORT_RULE}"),
    (["--feast-redis", "feast-redis:6379", "--feast-registry", "registry.db"],
     f"--feast-registry: 'registry.db' {REGISTRY_RULE}"),
    (["--cache-redis", "cache:70000"], f"--cache-redis: 'cache:70000' {HOST_PORT_RULE}"),
])
def test_the_manifests_command_refuses_a_bad_address_naming_its_flag_before_writing(
        tmp_path: Path, flags: list[str], message: str) -> None:
    from click.testing import CliRunner

    from slipway.pipelines.cli import cli

    result = CliRunner().invoke(cli, ["manifests", "inference-service", "--model", STABLE_URI,
                                      "--output-dir", str(tmp_path / "out"), *flags])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "out").exists()


def test_the_manifests_command_serves_as_slipway_serving_by_default(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from slipway.pipelines.cli import cli

    result = CliRunner().invoke(cli, ["manifests", "inference-service", "--model", STABLE_URI, "--mode", "Standard",
                                      "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load((tmp_path / "chicago-taxi.yaml").read_text())
    assert manifest["spec"]["predictor"]["serviceAccountName"] == "slipway-serving"
    validate_against_crd(manifest, CRD)


def test_write_manifest_writes_the_yaml_whole(tmp_path: Path) -> None:
    canary = build_canary(full_config(STANDARD), CANARY_URI, 10)
    path = write_manifest(canary, tmp_path / "manifests" / "taxi-tips.yaml")

    assert yaml.safe_load(path.read_text()) == to_dict(canary)
    assert sorted(p.name for p in path.parent.iterdir()) == ["taxi-tips.yaml"]  # no temporary file left


# --- the cluster layer, against an API server stand-in --------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json: null deletes, lists replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def api_error(status: int, reason: str, message: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "status": "Failure", "reason": reason, "message": message})
    return error


class FakeCustomObjectsApi:
    """CustomObjectsApi for InferenceServices, applying writes the way the API server does.

    Writes never touch `status` (the CRD has a status subresource); `generation` goes up when the
    spec changes; a `resourceVersion` sent with a write must match the stored one (else 409); every
    stored object must be valid against the CRD (else 422). `controller`, when set, plays KServe: it
    is called with the stored object after each write. `before_write` runs once before the next write
    (someone else changing the object). Each call is recorded.
    """

    def __init__(self, controller: Callable[[dict[str, Any]], None] | None = None):
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.controller = controller
        self.before_write: Callable[[], None] | None = None
        self.read_errors: list[ApiException] = []
        self.versions = itertools.count(1)

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        self.calls.append(("create", copy.deepcopy(body)))
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            raise api_error(409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists')
        stored = {key: copy.deepcopy(value) for key, value in body.items() if key != "status"}
        stored["metadata"]["generation"] = 1
        return self._store(namespace, name, stored)

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **_: Any) -> dict[str, Any]:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        self.calls.append(("get", name))
        if self.read_errors:
            raise self.read_errors.pop(0)
        return copy.deepcopy(self._stored(namespace, name))

    def replace_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                         body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls.append(("replace", copy.deepcopy(body)))
        old = self._precondition(namespace, name, body)
        new = {key: copy.deepcopy(value) for key, value in body.items() if key != "status"}
        return self._update(namespace, name, old, new)

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls.append(("patch", copy.deepcopy(body)))
        old = self._precondition(namespace, name, body)
        unstatused = {key: value for key, value in old.items() if key != "status"}
        new = json_merge_patch(unstatused, {key: value for key, value in body.items() if key != "status"})
        return self._update(namespace, name, old, new)

    def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._stored(namespace, name)["status"] = copy.deepcopy(status)

    def writes(self, verb: str) -> list[Any]:
        return [body for kind, body in self.calls if kind == verb]

    def _precondition(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(body, dict), "a merge patch is a JSON object"
        if self.before_write:
            self.before_write, interfere = None, self.before_write
            interfere()
        old = self._stored(namespace, name)
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if sent is not None and sent != old["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io '
                                             f'"{name}": the object has been modified; please apply your changes to '
                                             'the latest version and try again')
        return old

    def _update(self, namespace: str, name: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        new["metadata"]["generation"] = old["metadata"]["generation"] + (new.get("spec") != old.get("spec"))
        if "status" in old:
            new["status"] = old["status"]
        return self._store(namespace, name, new)

    def _store(self, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        errors = crd_errors(obj, CRD)
        if errors:
            raise api_error(422, "Invalid", f'InferenceService.serving.kserve.io "{name}" is invalid: {errors}')
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        self.objects[(namespace, name)] = obj
        answer = copy.deepcopy(obj)
        if self.controller:
            self.controller(obj)
        return answer

    def _stored(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.objects:
            raise api_error(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
        return self.objects[(namespace, name)]


def kserve_marks_ready(obj: dict[str, Any]) -> None:
    """KServe having reconciled the new generation successfully."""
    obj["status"] = {"observedGeneration": obj["metadata"]["generation"],
                     "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def rollout_on(api: FakeCustomObjectsApi, clock: FakeClock | None = None) -> InferenceServiceRollout:
    clock = clock or FakeClock()
    return InferenceServiceRollout(api, poll_s=5, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]


def stored_spec(api: FakeCustomObjectsApi) -> dict[str, Any]:
    return api.objects[("kubeflow-user", "taxi-tips")]["spec"]


def test_apply_creates_then_replaces_with_the_stored_resource_version() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)

    created = rollout.apply(build_inference_service(serving_config()))
    replaced = rollout.apply(build_canary(serving_config(), CANARY_URI, 10))

    assert created["metadata"]["generation"] == 1 and replaced["metadata"]["generation"] == 2
    assert [kind for kind, _ in api.calls] == ["create", "create", "get", "replace"]
    assert api.writes("replace")[0]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert stored_spec(api)["predictor"]["canaryTrafficPercent"] == 10


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_canary_then_promote_on_the_cluster_gives_the_promoted_shape(mode: DeploymentMode) -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    canary = build_canary(full_config(mode), CANARY_URI, 10)
    rollout.apply(build_inference_service(full_config(mode)))
    rollout.apply(canary)

    moved = rollout.set_canary_percent("taxi-tips", "kubeflow-user", 50, mode)
    percent = (stored_spec(api)["predictor"]["canaryTrafficPercent"] if mode is SERVERLESS
               else stored_spec(api)["canary"][0]["trafficPercent"])
    promoted = rollout.promote("taxi-tips", "kubeflow-user", mode)

    assert percent == 50
    assert promoted["metadata"]["generation"] == moved["metadata"]["generation"] + 1 == 4
    assert "canaryTrafficPercent" not in stored_spec(api)["predictor"]
    assert stored_spec(api) == to_dict(build_promotion(canary))["spec"]
    validate_against_crd(api.objects[("kubeflow-user", "taxi-tips")], CRD)


def test_a_serverless_promotion_removes_the_field_with_a_null_and_a_rollback_sets_zero() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    canary = build_canary(serving_config(), CANARY_URI, 10)
    rollout.apply(canary)

    rollout.rollback("taxi-tips", "kubeflow-user", SERVERLESS)
    assert stored_spec(api)["predictor"]["canaryTrafficPercent"] == 0
    assert stored_spec(api) == to_dict(build_rollback(canary))["spec"]
    rollout.promote("taxi-tips", "kubeflow-user", SERVERLESS)

    assert api.writes("patch") == [{"spec": {"predictor": {"canaryTrafficPercent": 0}}},
                                   {"spec": {"predictor": {"canaryTrafficPercent": None}}}]
    assert "canaryTrafficPercent" not in stored_spec(api)["predictor"]


def test_a_standard_rollback_removes_the_canary_and_keeps_the_stable_predictor() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    canary = build_canary(full_config(STANDARD), CANARY_URI, 10)
    rollout.apply(canary)

    rollout.rollback("taxi-tips", "kubeflow-user", STANDARD)

    assert api.writes("patch") == [{"spec": {"canary": None}}]
    assert stored_spec(api) == to_dict(build_rollback(canary))["spec"]


def test_standard_writes_carry_the_resource_version_and_a_promotion_diffs_the_predictor() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    rollout.apply(build_canary(full_config(STANDARD), CANARY_URI, 10))
    live = rollout.get("taxi-tips", "kubeflow-user")

    patch = promotion_patch(live, STANDARD)

    assert patch["metadata"] == {"resourceVersion": live["metadata"]["resourceVersion"]}
    assert patch["spec"]["canary"] is None
    assert patch["spec"]["predictor"] == {
        "name": model_revision_name(CANARY_URI),
        "containers": live["spec"]["canary"][0]["predictor"]["containers"],
    }


def test_a_write_that_conflicts_is_computed_again_from_the_new_object() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    rollout.apply(build_canary(serving_config(STANDARD), CANARY_URI, 10))

    def someone_else_moves_traffic() -> None:
        obj = api.objects[("kubeflow-user", "taxi-tips")]
        obj["spec"]["canary"][0]["trafficPercent"] = 20
        obj["metadata"]["resourceVersion"] = str(next(api.versions))

    api.before_write = someone_else_moves_traffic
    rollout.set_canary_percent("taxi-tips", "kubeflow-user", 30, STANDARD)

    first, second = api.writes("patch")
    assert first["metadata"]["resourceVersion"] != second["metadata"]["resourceVersion"]
    assert stored_spec(api)["canary"][0]["trafficPercent"] == 30


def test_a_change_for_the_other_mode_or_without_a_canary_is_refused() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    rollout.apply(build_inference_service(serving_config(STANDARD)))

    with pytest.raises(RolloutError, match="kubeflow-user/taxi-tips runs in 'Standard' mode, not 'Knative'"):
        rollout.set_canary_percent("taxi-tips", "kubeflow-user", 10, SERVERLESS)
    with pytest.raises(RolloutError, match="expected one canary in spec.canary, found 0"):
        rollout.promote("taxi-tips", "kubeflow-user", STANDARD)
    with pytest.raises(ValueError, match="canary traffic percent: 150 must be a whole number from 0 to 100"):
        rollout.set_canary_percent("taxi-tips", "kubeflow-user", 150, STANDARD)
    assert api.writes("patch") == []


def test_a_missing_inference_service_is_named() -> None:
    with pytest.raises(RolloutError, match=r"InferenceService kubeflow-user/taxi-tips: could not read it \(it does "
                                           r"not exist\): HTTP 404 inferenceservices.serving.kserve.io \"taxi-tips\""):
        rollout_on(FakeCustomObjectsApi()).promote("taxi-tips", "kubeflow-user", SERVERLESS)


# A Serverless InferenceService with a 10% canary, as KServe reports it: its status copies the Knative
# Service's traffic targets (pkg/apis/serving/v1beta1/inference_service_status.go, PropagateStatus); with
# tag routing the latest ready revision is tagged `latest` and the last rolled-out one `prev`.
CANARY_STATUS: dict[str, Any] = {
    "observedGeneration": 2,
    "deploymentMode": "Knative",
    "url": "http://taxi-tips.kubeflow-user.example.com",
    "address": {"url": "http://taxi-tips.kubeflow-user.svc.cluster.local"},
    "conditions": [
        {"type": "IngressReady", "status": "True", "lastTransitionTime": "2026-11-23T10:15:02Z"},
        {"type": "LatestDeploymentReady", "status": "True", "lastTransitionTime": "2026-11-23T10:15:01Z"},
        {"type": "PredictorConfigurationReady", "status": "True", "lastTransitionTime": "2026-11-23T10:15:01Z"},
        {"type": "PredictorReady", "status": "True", "lastTransitionTime": "2026-11-23T10:15:02Z"},
        {"type": "PredictorRouteReady", "status": "True", "lastTransitionTime": "2026-11-23T10:15:02Z"},
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T10:15:02Z"},
        {"type": "RoutesReady", "status": "True", "lastTransitionTime": "2026-11-23T10:15:02Z"},
    ],
    "components": {"predictor": {
        "latestCreatedRevision": "taxi-tips-predictor-00002",
        "latestReadyRevision": "taxi-tips-predictor-00002",
        "latestRolledoutRevision": "taxi-tips-predictor-00001",
        "url": "http://taxi-tips-predictor.kubeflow-user.example.com",
        "address": {"url": "http://taxi-tips-predictor.kubeflow-user.svc.cluster.local"},
        "traffic": [
            {"latestRevision": True, "percent": 10, "revisionName": "taxi-tips-predictor-00002", "tag": "latest",
             "url": "http://latest-taxi-tips-predictor.kubeflow-user.example.com"},
            {"latestRevision": False, "percent": 90, "revisionName": "taxi-tips-predictor-00001", "tag": "prev",
             "url": "http://prev-taxi-tips-predictor.kubeflow-user.example.com"},
        ],
    }},
    "modelStatus": {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded",
                                                               "targetModelState": "Loaded"},
                    "copies": {"failedCopies": 0, "totalCopies": 1}},
}


def test_traffic_is_read_from_a_realistic_status_block() -> None:
    api = FakeCustomObjectsApi()
    rollout = rollout_on(api)
    rollout.apply(build_inference_service(serving_config()))
    rollout.apply(build_canary(serving_config(), CANARY_URI, 10))
    api.set_status("kubeflow-user", "taxi-tips", CANARY_STATUS)

    assert rollout.traffic("taxi-tips", "kubeflow-user") == [
        TrafficTarget(percent=10, revision_name="taxi-tips-predictor-00002", tag="latest", latest_revision=True),
        TrafficTarget(percent=90, revision_name="taxi-tips-predictor-00001", tag="prev", latest_revision=False),
    ]
    validate_against_crd(api.objects[("kubeflow-user", "taxi-tips")], CRD)  # the status shape is the CRD's too


def test_standard_mode_reports_no_revision_traffic() -> None:
    api = FakeCustomObjectsApi(controller=kserve_marks_ready)
    rollout = rollout_on(api)
    rollout.apply(build_canary(serving_config(STANDARD), CANARY_URI, 10))
    assert rollout.traffic("taxi-tips", "kubeflow-user") == []


def test_wait_ready_waits_for_the_generation_to_be_observed_and_ready() -> None:
    api = FakeCustomObjectsApi()
    clock = FakeClock()
    rollout = rollout_on(api, clock)
    rollout.apply(build_inference_service(serving_config()))
    stored = rollout.apply(build_canary(serving_config(), CANARY_URI, 10))
    script = iter([
        {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},  # the old generation
        {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "Unknown",
                                                  "reason": "RevisionMissing"}]},
        CANARY_STATUS,
    ])
    original_get = api.get_namespaced_custom_object

    def get_as_kserve_progresses(*args: Any, **kwargs: Any) -> dict[str, Any]:
        api.set_status("kubeflow-user", "taxi-tips", next(script))
        return original_get(*args, **kwargs)

    api.get_namespaced_custom_object = get_as_kserve_progresses  # type: ignore[method-assign]
    ready = rollout.wait_ready("taxi-tips", "kubeflow-user", stored["metadata"]["generation"], timeout_s=600)

    assert ready["status"]["observedGeneration"] == 2
    assert clock.sleeps == [5, 5]


def test_wait_ready_times_out_naming_the_inference_service_and_its_conditions() -> None:
    api = FakeCustomObjectsApi()
    clock = FakeClock()
    rollout = rollout_on(api, clock)
    rollout.apply(build_canary(serving_config(), CANARY_URI, 10))
    api.set_status("kubeflow-user", "taxi-tips", {"observedGeneration": 1, "conditions": [
        {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
         "message": 'Revision "taxi-tips-predictor-00002" failed with message: Container failed with: model not found'},
        {"type": "Ready", "status": "False", "reason": "RevisionFailed"},
    ]})

    with pytest.raises(RolloutTimeoutError) as caught:
        rollout.wait_ready("taxi-tips", "kubeflow-user", 1, timeout_s=60)

    assert isinstance(caught.value, TimeoutError)
    assert str(caught.value) == (
        "InferenceService kubeflow-user/taxi-tips was not Ready at generation 1 within 60 s; last seen: "
        'observedGeneration 1; PredictorReady=False (RevisionFailed: Revision "taxi-tips-predictor-00002" failed '
        "with message: Container failed with: model not found), Ready=False (RevisionFailed)")
    assert clock.now == 60


def test_a_transient_api_error_while_waiting_is_polled_again() -> None:
    api = FakeCustomObjectsApi(controller=kserve_marks_ready)
    clock = FakeClock()
    rollout = rollout_on(api, clock)
    stored = rollout.apply(build_inference_service(serving_config()))
    api.read_errors = [api_error(503, "ServiceUnavailable", "etcd leader changed")]

    rollout.wait_ready("taxi-tips", "kubeflow-user", stored["metadata"]["generation"], timeout_s=60)
    assert clock.sleeps == [5]


def test_the_canary_endpoint_is_the_protocol_the_canary_controller_calls() -> None:
    public = {name for name, value in vars(CanaryEndpoint).items() if not name.startswith("_") and callable(value)}
    assert public == {"set_canary_percent", "promote", "rollback"}

    api = FakeCustomObjectsApi(controller=kserve_marks_ready)
    rollout = rollout_on(api)
    config = full_config(STANDARD)
    rollout.apply(build_inference_service(config))
    rollout.apply(build_canary(config, CANARY_URI, 5))
    endpoint = CanaryEndpoint(rollout, config.name, config.namespace, config.deployment_mode, timeout_s=60)

    endpoint.set_canary_percent(25)
    assert stored_spec(api)["canary"][0]["trafficPercent"] == 25
    endpoint.promote()
    assert "canary" not in stored_spec(api)
    assert stored_spec(api)["predictor"]["name"] == model_revision_name(CANARY_URI)


def test_the_endpoint_rolls_back_a_canary_that_never_became_ready() -> None:
    def kserve_sees_a_failed_revision(obj: dict[str, Any]) -> None:
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"],
                         "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed"}]}

    api = FakeCustomObjectsApi(controller=kserve_sees_a_failed_revision)
    clock = FakeClock()
    rollout = rollout_on(api, clock)
    rollout.apply(build_canary(serving_config(), CANARY_URI, 10))
    endpoint = CanaryEndpoint(rollout, "taxi-tips", "kubeflow-user", SERVERLESS, timeout_s=60)

    with pytest.raises(RolloutTimeoutError, match="was not Ready at generation 2"):
        endpoint.set_canary_percent(50)
    endpoint.rollback()

    assert stored_spec(api)["predictor"]["canaryTrafficPercent"] == 0


# --- on the wire, with the real kubernetes client --------------------------------------------------------


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    content_type: str | None
    body: Any


@pytest.fixture
def wire() -> Iterator[tuple[str, list[Recorded]]]:
    """A local HTTP server holding one InferenceService (a Serverless canary): answers GET, records PATCH."""
    stored = to_dict(build_canary(serving_config(), CANARY_URI, 10))
    stored["metadata"].update(resourceVersion="7", generation=2)
    recorded: list[Recorded] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server hook's name)
            recorded.append(Recorded("GET", self.path, None, None))
            self.answer(stored)

        def do_PATCH(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            recorded.append(Recorded("PATCH", self.path, self.headers["Content-Type"], body))
            self.answer(json_merge_patch(stored, body))

        def answer(self, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()


def test_the_kubernetes_client_sends_our_patches_as_json_merge_patch(wire: tuple[str, list[Recorded]]) -> None:
    host, recorded = wire
    configuration = client.Configuration()
    configuration.host = host
    rollout = InferenceServiceRollout(client.CustomObjectsApi(client.ApiClient(configuration)))
    assert recorded == []  # constructing it sends nothing

    rollout.promote("taxi-tips", "kubeflow-user", SERVERLESS)

    path = "/apis/serving.kserve.io/v1beta1/namespaces/kubeflow-user/inferenceservices/taxi-tips"
    assert recorded == [
        Recorded("GET", path, None, None),
        Recorded("PATCH", path, "application/merge-patch+json",
                 {"spec": {"predictor": {"canaryTrafficPercent": None}}}),
    ]

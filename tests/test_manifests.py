"""manifests/: every kustomization builds with `kubectl kustomize`, and every object it builds is valid.

What is verified how. No cluster runs here (REFERENCE.md), so an object's validity is checked against
the schemas the API server would use: InferenceServices, TrainJobs and PyTorchJobs against the real CRDs
in ../shared/crds (tests/crd_schema.py), Katib Experiments against the rules of Katib's admission
webhook (their CRD carries no schema; tests/katib_webhook.py), and every core object (RBAC,
ConfigMap, Secret, ServiceAccount, Deployment, Service, PersistentVolumeClaim, NetworkPolicy) against
the upstream Kubernetes OpenAPI schema of the `kubernetes` client's version (kubernetes-validate,
strict: an unknown field is an error, as `kubectl apply --validate=strict` makes it). Every pod spec
is checked against the Pod Security "restricted" profile (tests/pod_security_profile.py, which says
what it does not emulate), and the base's MLflow and Redis run here, from their Deployments' own
command lines, to prove that a client without the Secret's credentials is refused and one with them
is served.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml
from conftest import free_port, running_redis

from slipway import cluster, pod_security
from slipway.pipelines import cluster_manifests
from tests.crd_schema import crd_errors, crd_path
from tests.katib_webhook import webhook_errors
from tests.pod_security_profile import pod_specs, restricted_violations

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = ["base", "templates", "overlays/kind", "overlays/gcp"]
OVERLAY_NAMESPACES = {"overlays/kind": "kubeflow", "overlays/gcp": "kubeflow-user-example-com"}
# The Kubernetes minor whose OpenAPI schema matches the `kubernetes` client models (30.1.0 -> 1.30).
KUBERNETES_VERSION = f"1.{kubernetes.__version__.split('.')[0]}.0"
CRDS = {("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
        ("trainer.kubeflow.org", "TrainJob"): "trainer.kubeflow.org_trainjobs.yaml",
        ("kubeflow.org", "PyTorchJob"): "kubeflow.org_pytorchjobs.yaml"}


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    """Each kustomization's objects, as `kubectl kustomize` (the one on every machine of ours, CI's too) builds them."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: it builds the kustomize overlays (REFERENCE.md)"
    objects = {}
    for name in KUSTOMIZATIONS:
        result = subprocess.run([kubectl, "kustomize", str(MANIFESTS / name)], capture_output=True, text=True)
        assert result.returncode == 0, f"kubectl kustomize manifests/{name}: {result.stderr}"
        objects[name] = [obj for obj in yaml.safe_load_all(result.stdout) if obj]
    return objects


def test_the_checked_in_base_and_templates_are_what_the_code_renders() -> None:
    stale = [path for path, text in cluster_manifests.rendered().items()
             if not (MANIFESTS / path).is_file() or (MANIFESTS / path).read_text() != text]
    assert not stale, f"run `make manifests`: {stale} differ from pipelines/cluster_manifests.py"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_built_object_validates_against_its_schema(built: dict[str, list[dict[str, Any]]], name: str) -> None:
    errors = []
    for obj in built[name]:
        group = obj["apiVersion"].rpartition("/")[0]
        where = f"manifests/{name}: {obj['kind']}/{obj['metadata']['name']}"
        if (group, obj["kind"]) in CRDS:
            errors += [f"{where}: {error}" for error in crd_errors(obj, crd_path(CRDS[group, obj["kind"]]))]
        elif obj["kind"] == "Experiment":
            errors += [f"{where}: {error}" for error in webhook_errors(obj)]
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{where}: {error.message} at {'.'.join(map(str, error.path))}")
    assert not errors, "\n".join(errors)


def test_the_validation_catches_a_misspelt_field() -> None:
    # The check above would pass anything if strict validation were off: prove it refuses a typo.
    deployment = kubernetes.client.ApiClient().sanitize_for_serialization(cluster_manifests.feast_redis()[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", sorted(OVERLAY_NAMESPACES))
def test_an_overlay_puts_everything_in_its_namespace_and_gives_every_step_its_settings(
        built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in built[overlay]}
    namespace = OVERLAY_NAMESPACES[overlay]
    assert {obj["metadata"].get("namespace") for obj in objects.values()} == {namespace}
    config = objects["ConfigMap", cluster.CONFIG_MAP]["data"]
    assert set(config) <= set(cluster.CONFIG_KEYS), "a key no step reads"
    cluster_manifests.check_config_values(config)  # the overlay's own values, too, are addresses a pod can use
    # MLflow and Redis are named in the overlay's own namespace, where the base creates them.
    assert config["MLFLOW_TRACKING_URI"] == f"http://mlflow.{namespace}.svc.cluster.local:5000"
    assert config["SLIPWAY_FEAST_REDIS"] == f"feast-redis.{namespace}.svc.cluster.local:6379"
    [subject] = objects["RoleBinding", cluster_manifests.ROLE]["subjects"]
    assert subject["namespace"] == namespace, "the Role would bind a service account of another namespace"
    serving = objects["ServiceAccount", cluster.SERVING_ACCOUNT]
    assert serving["secrets"] == [{"name": cluster.STORAGE_SECRET}]


def test_kind_makes_the_secrets_with_exactly_the_keys_the_pipelines_and_servers_read(
        built: dict[str, list[dict[str, Any]]]) -> None:
    # No hash suffix: the IR and the base name them exactly.
    secrets = {obj["metadata"]["name"]: obj for obj in built["overlays/kind"] if obj["kind"] == "Secret"}
    assert set(secrets) == {cluster.STORAGE_SECRET, cluster.AUTH_SECRET}
    storage, auth = secrets[cluster.STORAGE_SECRET], secrets[cluster.AUTH_SECRET]
    assert sorted(storage["data"]) == sorted(cluster.STORAGE_KEYS)
    assert storage["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio-service.kubeflow:9000"
    assert "annotations" not in auth["metadata"], "KServe's storage annotations belong on the storage Secret only"
    assert sorted(auth["data"]) == sorted([*cluster.AUTH_KEYS, cluster_manifests.MLFLOW_SESSION_KEY])
    # MLflow's basic-auth app refuses to start with an admin password under 12 characters.
    assert len(base64.b64decode(auth["data"]["MLFLOW_TRACKING_PASSWORD"])) >= 12
    # kind-up.sh installs KServe without Knative: InferenceServices must be created in Standard mode.
    [config] = [obj for obj in built["overlays/kind"] if obj["kind"] == "ConfigMap"]
    assert config["data"]["SLIPWAY_SERVING_DEPLOYMENT_MODE"] == "Standard"


def test_gcp_uses_workload_identity_and_google_cloud_storage_with_no_secret(
        built: dict[str, list[dict[str, Any]]]) -> None:
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in built["overlays/gcp"]}
    assert not any(kind == "Secret" for kind, _ in objects)
    config = objects["ConfigMap", cluster.CONFIG_MAP]["data"]
    assert config["SLIPWAY_FEAST_REGISTRY"].startswith("gs://") and "AWS_ENDPOINT_URL" not in config
    for account in ("default-editor", cluster.SERVING_ACCOUNT):
        assert "iam.gke.io/gcp-service-account" in objects["ServiceAccount", account]["metadata"]["annotations"]
    [mlflow] = objects["Deployment", "mlflow"]["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in mlflow["env"]}
    assert env["MLFLOW_DEFAULT_ARTIFACT_ROOT"].startswith("gs://")


def test_the_role_grants_the_verbs_the_steps_call_on_every_resource_they_create_and_nothing_else(
        built: dict[str, list[dict[str, Any]]]) -> None:
    [role] = [obj for obj in built["base"] if obj["kind"] == "Role"]
    granted = {(group, resource): set(rule["verbs"])
               for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    created = {(obj["apiVersion"].rpartition("/")[0], obj["kind"].lower() + "s") for obj in built["templates"]}
    assert set(granted) == created
    assert all({"get", "create"} <= verbs for verbs in granted.values())
    # Rollouts patch and replace the InferenceService; nothing lists, watches, deletes, or reads Secrets.
    assert granted["serving.kserve.io", "inferenceservices"] == {"get", "create", "update", "patch"}
    assert not any(verbs & {"*", "list", "watch", "delete", "deletecollection"} for verbs in granted.values())


def test_the_templates_are_what_the_steps_create_on_the_images_of_this_build(
        built: dict[str, list[dict[str, Any]]]) -> None:
    images = {obj["kind"]: yaml.safe_dump(obj) for obj in built["templates"]}
    from slipway import runtimes
    assert runtimes.SERVING_IMAGE in images["InferenceService"]
    assert runtimes.TRAIN_GPU_IMAGE in images["TrainJob"] and runtimes.TRAIN_GPU_IMAGE in images["PyTorchJob"]
    assert runtimes.CORE_IMAGE in images["Experiment"]


# --- Pod Security: the restricted profile --------------------------------------------------------------------


def test_every_pod_slipway_emits_meets_the_restricted_pod_security_profile(
        built: dict[str, list[dict[str, Any]]]) -> None:
    violations, with_pods = [], set()
    for name, objects in built.items():
        for obj in objects:
            for pod in pod_specs(obj):
                with_pods.add(obj["kind"])
                violations += [f"manifests/{name}: {obj['kind']}/{obj['metadata']['name']}: {violation}"
                               for violation in restricted_violations(pod)]
    assert not violations, "\n".join(violations)
    # Not vacuous: every kind of object that runs pods was looked into.
    assert with_pods == {"Deployment", "InferenceService", "TrainJob", "PyTorchJob", "Experiment"}


def test_the_trainjob_patches_only_the_securitycontext_of_the_runtimes_node_container(
        built: dict[str, list[dict[str, Any]]]) -> None:
    # Kubeflow Trainer's webhook refuses a container patch for a container the runtime lacks, or one that sets
    # env on `node` (pkg/runtime/framework/plugins/jobset/jobset.go): the env goes in spec.trainer instead.
    [trainjob] = [obj for obj in built["templates"] if obj["kind"] == "TrainJob"]
    [pod] = pod_specs(trainjob)
    assert pod["containers"] == [{"name": "node",
                                  "securityContext": pod_security.as_json(pod_security.container_context())}]


RESTRICTED_SETTINGS = {
    "allowPrivilegeEscalation": "container mlflow: allowPrivilegeEscalation is not false",
    "capabilities": "container mlflow: capabilities do not drop ALL",
    "runAsNonRoot": "container mlflow: runAsNonRoot is not true (on the container or the pod)",
    "seccompProfile": "container mlflow: seccompProfile is unset (on the container and the pod), not RuntimeDefault",
}


@pytest.mark.parametrize("setting", sorted(RESTRICTED_SETTINGS))
def test_the_profile_check_refuses_a_pod_without_each_restricted_setting(setting: str) -> None:
    # The check above would pass anything if it looked at nothing: take one setting off MLflow's pod (both
    # levels where the pod has it too) and it must name what the admission controller would refuse.
    deployment = kubernetes.client.ApiClient().sanitize_for_serialization(cluster_manifests.mlflow()[1])
    [pod] = pod_specs(deployment)
    assert restricted_violations(pod) == []
    pod["containers"][0]["securityContext"].pop(setting)
    pod["securityContext"].pop(setting, None)
    assert restricted_violations(pod) == [RESTRICTED_SETTINGS[setting]]


def test_the_restricted_settings_are_written_in_one_place() -> None:
    assert pod_security.as_json(pod_security.container_context()) == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsGroup": 1000,
        "runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod_security.as_json(pod_security.pod_context(fs_group=1000)) == {
        "fsGroup": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"}}
    # The serving image's user is that uid: a pod that runs it as 1000 runs it as it was built.
    assert "USER 1000" in (ROOT / "images" / "serving.Dockerfile").read_text()


# --- who may reach MLflow and Redis, and with what credentials ---------------------------------------------


@pytest.mark.parametrize("server", [cluster_manifests.MLFLOW, cluster_manifests.REDIS])
def test_mlflow_and_redis_admit_only_their_namespace_and_labelled_clients_on_their_port(
        built: dict[str, list[dict[str, Any]]], server: str) -> None:
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in built["overlays/kind"]}
    policy = objects["NetworkPolicy", server]["spec"]
    pods = objects["Deployment", server]["spec"]["template"]["metadata"]["labels"]
    [service_port] = objects["Service", server]["spec"]["ports"]
    assert policy["podSelector"] == {"matchLabels": pods}
    # Ingress only, so every connection the rule does not list is denied.
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{
        "from": [{"podSelector": {}},
                 {"namespaceSelector": {}, "podSelector": {"matchLabels": {cluster_manifests.CLIENT_LABEL: "true"}}}],
        "ports": [{"port": service_port["targetPort"], "protocol": "TCP"}]}]


def secret_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable["valueFrom"]["secretKeyRef"] for variable in container["env"]
            if "secretKeyRef" in variable.get("valueFrom", {})}


def test_redis_and_mlflow_take_their_credentials_from_the_auth_secret_and_refuse_to_start_without_it(
        built: dict[str, list[dict[str, Any]]]) -> None:
    containers = {obj["metadata"]["name"]: obj["spec"]["template"]["spec"]["containers"][0]
                  for obj in built["base"] if obj["kind"] == "Deployment"}
    redis, mlflow = containers[cluster_manifests.REDIS], containers[cluster_manifests.MLFLOW]
    assert redis["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]  # the kubelet expands it from the env
    # Not optional: without the Secret the container does not start, rather than start without a password.
    assert secret_env(redis) == {"REDIS_PASSWORD": {"name": cluster.AUTH_SECRET, "key": "SLIPWAY_FEAST_REDIS_PASSWORD"}}
    assert mlflow["args"][-2:] == ["--app-name", "basic-auth"] and mlflow["workingDir"] == "/mlflow"
    assert {name: ref for name, ref in secret_env(mlflow).items() if ref["name"] == cluster.AUTH_SECRET} == {
        "MLFLOW_AUTH_ADMIN_USERNAME": {"name": cluster.AUTH_SECRET, "key": "MLFLOW_TRACKING_USERNAME"},
        "MLFLOW_AUTH_ADMIN_PASSWORD": {"name": cluster.AUTH_SECRET, "key": "MLFLOW_TRACKING_PASSWORD"},
        "MLFLOW_FLASK_SERVER_SECRET_KEY": {"name": cluster.AUTH_SECRET, "key": "MLFLOW_FLASK_SERVER_SECRET_KEY"}}


def test_every_client_pod_reads_the_credentials_as_optional_env(built: dict[str, list[dict[str, Any]]]) -> None:
    templates = {obj["kind"]: obj for obj in built["templates"]}
    trainjob = templates["TrainJob"]["spec"]["trainer"]
    [trial] = templates["Experiment"]["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    pytorch = [replica["template"]["spec"]["containers"][0]
               for replica in templates["PyTorchJob"]["spec"]["pytorchReplicaSpecs"].values()]
    for container in [trainjob, trial, *pytorch]:
        assert {name: ref for name, ref in secret_env(container).items() if ref["name"] == cluster.AUTH_SECRET} == {
            key: {"name": cluster.AUTH_SECRET, "key": key, "optional": True} for key in cluster.MLFLOW_AUTH_KEYS}


def kubelet_expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """`args` as the kubelet runs them: each $(NAME) replaced by the variable's value."""
    expanded = []
    for arg in args:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        expanded.append(arg)
    return expanded


@pytest.mark.servers
def test_the_bases_redis_refuses_a_client_without_the_password_and_serves_feast_with_it(tmp_path: Path) -> None:
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.exceptions import AuthenticationError

    from slipway.components.feature_store import StoreConfig

    [deployment, _] = kubernetes.client.ApiClient().sanitize_for_serialization(cluster_manifests.feast_redis())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    password = "kind-redis-password"
    options = kubelet_expanded(container["args"], {"REDIS_PASSWORD": password})
    with running_redis(tmp_path, options) as (address, _):
        host, port = address.rsplit(":", 1)
        with pytest.raises(AuthenticationError, match="Authentication required"):
            redis.Redis(host=host, port=int(port), retry=None).ping()
        config = StoreConfig.from_env(tmp_path / "repo", {"SLIPWAY_FEAST_REDIS": address,
                                                           "SLIPWAY_FEAST_REDIS_PASSWORD": password})
        # The client Feast makes from the connection string, for every online read and write.
        assert RedisOnlineStore()._get_client(config.repo_config("slipway").online_store).ping()


def test_a_redis_password_that_feasts_connection_string_would_split_is_refused_by_name(tmp_path: Path) -> None:
    from slipway.components.feature_store import FeatureStoreError, StoreConfig

    with pytest.raises(FeatureStoreError) as caught:
        StoreConfig.from_env(tmp_path, {"SLIPWAY_FEAST_REDIS": "r:6379", "SLIPWAY_FEAST_REDIS_PASSWORD": "a,b"})
    assert str(caught.value) == ("SLIPWAY_FEAST_REDIS_PASSWORD: Feast's Redis connection string splits its options "
                                 "at ',', so the password cannot hold one: choose another")
    assert "secret-pw" not in repr(StoreConfig(tmp_path, redis_password="secret-pw")), "a password in a log line"


@pytest.mark.servers
def test_the_bases_mlflow_refuses_a_client_without_credentials_and_serves_one_with_the_secrets(
        tmp_path: Path) -> None:
    import httpx
    from mlflow.tracking import MlflowClient

    deployment = kubernetes.client.ApiClient().sanitize_for_serialization(cluster_manifests.mlflow()[1])
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    secret = {"MLFLOW_TRACKING_USERNAME": "slipway", "MLFLOW_TRACKING_PASSWORD": "kind-mlflow-password",
              "MLFLOW_FLASK_SERVER_SECRET_KEY": "kind-mlflow-csrf-key"}
    env = {variable["name"]: variable.get("value") or secret.get(variable["valueFrom"].get("secretKeyRef", {})
                                                                 .get("key", ""), "")
           for variable in container["env"]}
    env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{tmp_path}/mlflow.db"  # the volume, here
    port = free_port()
    args = container["args"]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:], *args]
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(command, env={**os.environ, **{k: v for k, v in env.items() if v}},
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)  # cwd: the workingDir
    base = f"http://localhost:{port}"  # a host MLFLOW_SERVER_ALLOWED_HOSTS lists
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "MLflow did not answer /health within 90 s"
            time.sleep(0.5)
        refused = httpx.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1})
        assert refused.status_code == 401
        # MLflow's own client sends the credentials it finds in MLFLOW_TRACKING_USERNAME/PASSWORD, as every step
        # has them from the Secret.
        with pytest.MonkeyPatch.context() as patch:
            for key in cluster.MLFLOW_AUTH_KEYS:
                patch.setenv(key, secret[key])
            experiment = MlflowClient(tracking_uri=base).create_experiment("slipway-auth-check")
            assert MlflowClient(tracking_uri=base).get_experiment(experiment).name == "slipway-auth-check"
        assert (tmp_path / "basic_auth.db").is_file(), "the auth database is on the volume, beside mlflow.db"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("SLIPWAY_FEAST_REDIS", "feast-redis.kubeflow.svc.cluster.local", "is not HOST:PORT"),
    ("MLFLOW_TRACKING_URI", "mlflow.kubeflow:5000", "is not an http(s) URL with a host"),
    ("SLIPWAY_FEAST_REGISTRY", "/feast/registry.db", "is not a registry the transformer's pod can read"),
])
def test_the_config_map_refuses_an_address_that_breaks_its_rule_naming_the_key(key: str, value: str, rule: str) -> None:
    with pytest.raises(ValueError) as caught:
        cluster_manifests.config_map({**cluster_manifests.CONFIG_DEFAULTS, key: value})
    assert str(caught.value).startswith(f"slipway-config {key}: {value!r} {rule}")

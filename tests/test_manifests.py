"""manifests/: every kustomization builds with `kubectl kustomize`, and every object it builds is valid.

What is verified how. No cluster runs here (REFERENCE.md), so an object's validity is checked against
the schemas the API server would use: InferenceServices, TrainJobs and PyTorchJobs against the real CRDs
in ../shared/crds (tests/crd_schema.py), Katib Experiments against the rules of Katib's admission
webhook (their CRD carries no schema; tests/katib_webhook.py), and every core object (RBAC,
ConfigMap, Secret, ServiceAccount, Deployment, Service, PersistentVolumeClaim) against the upstream
Kubernetes OpenAPI schema of the `kubernetes` client's version (kubernetes-validate, strict: an
unknown field is an error, as `kubectl apply --validate=strict` makes it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml

from slipway import cluster
from slipway.pipelines import cluster_manifests
from tests.crd_schema import crd_errors, crd_path
from tests.katib_webhook import webhook_errors

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
    # MLflow and Redis are named in the overlay's own namespace, where the base creates them.
    assert config["MLFLOW_TRACKING_URI"] == f"http://mlflow.{namespace}.svc.cluster.local:5000"
    assert config["SLIPWAY_FEAST_REDIS"] == f"feast-redis.{namespace}.svc.cluster.local:6379"
    [subject] = objects["RoleBinding", cluster_manifests.ROLE]["subjects"]
    assert subject["namespace"] == namespace, "the Role would bind a service account of another namespace"
    serving = objects["ServiceAccount", cluster.SERVING_ACCOUNT]
    assert serving["secrets"] == [{"name": cluster.STORAGE_SECRET}]


def test_kind_makes_the_storage_secret_with_exactly_the_keys_the_pipelines_read(
        built: dict[str, list[dict[str, Any]]]) -> None:
    [secret] = [obj for obj in built["overlays/kind"] if obj["kind"] == "Secret"]
    assert secret["metadata"]["name"] == cluster.STORAGE_SECRET  # no hash suffix: the IR names it exactly
    assert sorted(secret["data"]) == sorted(cluster.STORAGE_KEYS)
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio-service.kubeflow:9000"
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

"""The securityContext of every pod Slipway emits: what the Kubernetes Pod Security "restricted" profile asks.

A namespace labelled `pod-security.kubernetes.io/enforce: restricted` refuses a pod unless every
container runs as non-root, cannot escalate privileges, drops all capabilities and runs under the
RuntimeDefault (or a Localhost) seccomp profile (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
This module is the one place those settings are written; the builders of the InferenceService
(serving/inference_service.py), the TrainJob and PyTorchJob (components/training_jobs.py), the Katib
trials (components/katib_experiment.py) and the base's MLflow and Redis (pipelines/cluster_manifests.py)
all take them from here.

Both levels carry them, each for a reason:

- `container_context()` on every container Slipway writes: complete on its own, because a Knative
  revision (KServe's Serverless mode) refuses a pod-level securityContext unless the cluster enables
  `kubernetes.podspec-securitycontext`, while it accepts each of these container fields.
- `pod_context()` on every pod spec whose API takes one (Deployments, Jobs, a TrainJob's runtime
  patch, a PyTorchJob's replicas): it also covers the containers that others inject into our pods
  (Katib's metrics collector, a service mesh's sidecar), for the fields a pod can set.

The user and group are numeric, 1000: the serving image declares `USER 1000`; the core and train-gpu
images declare no user (they would run as root), and the kubelet refuses `runAsNonRoot` for an image
whose user is root or a name unless `runAsUser` says which non-root user to be.
"""

from __future__ import annotations

from kubernetes import client

RUN_AS_USER = 1000   # images/serving.Dockerfile's `USER 1000`; imposed on the images that declare none
RUN_AS_GROUP = 1000
SECCOMP_PROFILE = "RuntimeDefault"


def container_context() -> client.V1SecurityContext:
    """Restricted settings for one container: non-root 1000:1000, no privilege escalation, no capabilities."""
    return client.V1SecurityContext(
        run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_GROUP,
        allow_privilege_escalation=False, capabilities=client.V1Capabilities(drop=["ALL"]),
        seccomp_profile=client.V1SeccompProfile(type=SECCOMP_PROFILE))


def pod_context(fs_group: int | None = None) -> client.V1PodSecurityContext:
    """A pod's restricted settings (non-root 1000:1000, RuntimeDefault); `fs_group` owns the pod's volumes."""
    return client.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_GROUP, fs_group=fs_group,
        seccomp_profile=client.V1SeccompProfile(type=SECCOMP_PROFILE))


def as_json(context: client.V1SecurityContext | client.V1PodSecurityContext) -> dict[str, object]:
    """The context in the API's JSON shape (camelCase), for objects built as dicts or with another SDK's models."""
    return client.ApiClient().sanitize_for_serialization(context)

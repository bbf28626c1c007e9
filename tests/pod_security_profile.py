"""The Kubernetes Pod Security "restricted" profile, as a check on a pod spec in the API's JSON shape.

`restricted_violations(pod)` lists what the restricted profile (Pod Security Standards, policy version
v1.30: https://kubernetes.io/docs/concepts/security/pod-security-standards/) would refuse in `pod`, the
`spec` of a pod template, each as "<where>: <rule>". It checks, for the pod and every container,
init container and ephemeral container:

- baseline: no host namespaces (hostNetwork, hostPID, hostIPC), no privileged container, no hostPort,
  no hostPath volume, capabilities added only from the baseline's list, seccomp never Unconfined,
  procMount Default;
- restricted: volumes only of the restricted types (configMap, csi, downwardAPI, emptyDir, ephemeral,
  persistentVolumeClaim, projected, secret); `allowPrivilegeEscalation: false` on every container;
  `runAsNonRoot: true` on the pod or on every container, and false nowhere; `runAsUser` never 0;
  seccomp RuntimeDefault or Localhost on the pod or on every container; every container drops "ALL"
  and adds nothing but NET_BIND_SERVICE.

What it does not emulate: there is no admission controller here, so it sees only the spec it is given.
Containers that others inject at admission (KServe's storage initializer and agent, Knative's
queue-proxy, Katib's metrics collector, a service mesh's sidecar) and the merge of a TrainJob's runtime
patch into its ClusterTrainingRuntime are not checked; nor are the baseline's AppArmor, SELinux, sysctl
and Windows rules, nor the kubelet's own refusal of `runAsNonRoot` for an image whose user is root.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """What the restricted profile refuses in `pod` (a pod template's spec), "<where>: <rule>"; [] if nothing."""
    found = [f"pod: {field} is true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)} is not a restricted type")
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        found.append("pod: runAsUser is 0")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        found.append(f"pod: seccompProfile is {pod_seccomp}")
    containers = [container for field in ("initContainers", "containers", "ephemeralContainers")
                  for container in pod.get(field) or []]
    if not containers:
        found.append("pod: no containers")
    for container in containers:
        found += [f"container {container.get('name')}: {rule}"
                  for rule in _container_violations(container, pod_context)]
    return found


def _container_violations(container: Mapping[str, Any], pod_context: Mapping[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}
    found = []
    if context.get("privileged"):
        found.append("privileged is true")
    if any(port.get("hostPort") for port in container.get("ports") or []):
        found.append("a hostPort is set")
    if context.get("procMount", "Default") != "Default":
        found.append(f"procMount is {context['procMount']}")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation is not false")
    if context.get("runAsNonRoot") is False or not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
        found.append("runAsNonRoot is not true (on the container or the pod)")
    if context.get("runAsUser") == 0:
        found.append("runAsUser is 0")
    seccomp = (context.get("seccompProfile") or {}).get("type") or (pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        found.append(f"seccompProfile is {seccomp or 'unset'} (on the container and the pod), not RuntimeDefault")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append("capabilities do not drop ALL")
    added = set(capabilities.get("add") or [])
    if added - {"NET_BIND_SERVICE"}:
        beyond = "baseline's" if added - BASELINE_CAPABILITIES else "restricted profile's"
        found.append(f"capabilities add {sorted(added - {'NET_BIND_SERVICE'})}, beyond the {beyond}")
    return found


def pod_specs(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod specs an object carries (JSON shape): a Deployment's template, an InferenceService's
    components (KServe inlines the pod spec in each), a TrainJob's runtime patch, a PyTorchJob's replicas,
    a Katib Experiment's trial Job; [] for an object that runs no pod."""
    spec = obj.get("spec") or {}
    kind = obj["kind"]
    if kind in ("Deployment", "Job"):
        return [spec["template"]["spec"]]
    if kind == "InferenceService":
        components = [spec.get(name) for name in ("predictor", "transformer", "explainer")]
        return [c for c in components + [canary["predictor"] for canary in spec.get("canary") or []] if c]
    if kind == "TrainJob":
        return [job["template"]["spec"]["template"]["spec"] for patch in spec.get("runtimePatches") or []
                for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]
    if kind == "PyTorchJob":
        return [replica["template"]["spec"] for replica in spec["pytorchReplicaSpecs"].values()]
    if kind == "Experiment":
        return pod_specs(spec["trialTemplate"]["trialSpec"])
    return []

"""Rewrite KServe's `inferenceservice-config` ConfigMap for kind: Standard mode, no ingress.

Reads the ConfigMap as JSON on stdin (`kubectl get configmap inferenceservice-config -o json`) and
writes it back on stdout for `kubectl replace -f -`, changing only two of its JSON-valued keys:

- `deploy.defaultDeploymentMode = "Standard"`: a Deployment + Service per predictor, no Knative or
  Istio (Slipway's InferenceServices also name their mode in the `serving.kserve.io/deploymentMode`
  annotation; this makes the cluster default agree).
- `ingress.disableIngressCreation = true` and `ingress.enableGatewayApi = false`: kind has no ingress
  controller or Gateway; clients reach `<isvc>-predictor` by port-forward or in-cluster DNS.

`managedFields` is dropped so that the replace keeps the server's own field ownership.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def standard_mode(config_map: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap with Standard mode and no ingress; every other key as it was."""
    data = config_map.setdefault("data", {})
    deploy = json.loads(data.get("deploy") or "{}")
    deploy["defaultDeploymentMode"] = "Standard"
    data["deploy"] = json.dumps(deploy, indent=2)
    ingress = json.loads(data.get("ingress") or "{}")
    ingress["disableIngressCreation"] = True
    ingress["enableGatewayApi"] = False
    data["ingress"] = json.dumps(ingress, indent=2)
    config_map.get("metadata", {}).pop("managedFields", None)
    return config_map


if __name__ == "__main__":
    json.dump(standard_mode(json.load(sys.stdin)), sys.stdout, indent=2)
    sys.stdout.write("\n")

#!/usr/bin/env bash
# kind-up.sh: a local Kubeflow for Slipway on kind, with a local image registry.
#
# Creates (or reuses) the kind cluster "${CLUSTER_NAME:-slipway}" and installs, each waited for:
#   1. a `registry:2` container on localhost:5001, joined to the kind network (kind's local-registry
#      pattern: containerd config_path in scripts/kind/cluster.yaml, a hosts.toml per node, and the
#      `local-registry-hosting` ConfigMap in kube-public);
#   2. cert-manager (KServe's webhook certificates);
#   3. Kubeflow Pipelines, standalone, the `platform-agnostic` kustomize env (SeaweedFS as S3);
#   4. Katib, standalone (`katib-standalone`);
#   5. the Kubeflow Trainer v2 (`overlays/manager`, then `overlays/runtimes`: `torch-distributed`);
#   6. KServe in Standard (raw Deployment) mode. Serverless mode would need Knative Serving and a
#      network layer (Istio or Kourier) on a one-node cluster; Standard needs only cert-manager, and
#      Slipway's InferenceServices carry their mode in an annotation and canary with `spec.canary`,
#      which is Standard mode's. No ingress is created: clients port-forward to `<isvc>-predictor`.
#
# Written for (every version is a variable below; change them there):
#   kind v0.33.0, node image kindest/node:v1.34.11 (pinned by the digest in kind v0.33.0's notes)
#   registry 2.8.3, cert-manager v1.17.0, Kubeflow Pipelines 2.17.0, Katib v0.19.0,
#   Kubeflow Trainer v2.3.0, KServe v0.21.0.
# Versions match the SDKs in requirements/core.txt (kfp 2.17.0, kserve 0.21.0, kubeflow-katib-api
# 0.19.0, kubeflow-trainer-api 2.3.0). Needs: kind, docker (a running engine), kubectl, git (kubectl
# fetches the kustomize bases from GitHub), python3; about 8 GB of memory for the node.
#
# Usage: scripts/kind-up.sh [-h|--help]
# Environment: CLUSTER_NAME (default slipway), WAIT_TIMEOUT (per wait, default 900s).
# Rerunning is safe: an existing cluster or registry of the same name is reused, and every install
# is a `kubectl apply`. Remove it all with scripts/kind-down.sh.
set -euo pipefail

USAGE="Usage: scripts/kind-up.sh [-h|--help]

Create (or reuse) the kind cluster \$CLUSTER_NAME (default: slipway) with a local registry on
localhost:5001 and install pinned cert-manager, Kubeflow Pipelines, Katib, the Kubeflow Trainer
(torch-distributed runtime) and KServe (Standard mode), waiting for each to be ready.

Environment:
  CLUSTER_NAME   kind cluster name (default: slipway)
  WAIT_TIMEOUT   timeout of each readiness wait (default: 900s)

Requires kind, docker, kubectl, git and python3 on PATH. Remove with scripts/kind-down.sh."

KIND_VERSION="v0.33.0"
KIND_NODE_IMAGE="kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d"
REGISTRY_IMAGE="registry:2.8.3"
CERT_MANAGER_VERSION="v1.17.0"
KFP_VERSION="2.17.0"
KATIB_VERSION="v0.19.0"
TRAINER_VERSION="v2.3.0"
KSERVE_VERSION="v0.21.0"

CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
KFP_KUSTOMIZE="github.com/kubeflow/pipelines/manifests/kustomize"
KATIB_KUSTOMIZE="github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=${KATIB_VERSION}"
TRAINER_KUSTOMIZE="github.com/kubeflow/trainer.git/manifests/overlays"
KSERVE_RELEASE="https://github.com/kserve/kserve/releases/download/${KSERVE_VERSION}"

CLUSTER_NAME="${CLUSTER_NAME:-slipway}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-900s}"
REGISTRY_NAME="kind-registry"
REGISTRY_PORT="5001"  # images are tagged localhost:5001/...: fixed, not configurable
SCRIPT_DIR="$(cd "${BASH_SOURCE[0]%/*}" && pwd)"

case "${1:-}" in
  -h | --help) printf '%s\n' "$USAGE"; exit 0 ;;
  "") ;;
  *) printf 'kind-up.sh: unknown argument: %s\n\n%s\n' "$1" "$USAGE" >&2; exit 2 ;;
esac

missing=()
for tool in kind docker kubectl git python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  printf 'kind-up.sh: not found on PATH: %s (needs kind %s, docker, kubectl, git, python3)\n' \
    "${missing[*]}" "$KIND_VERSION" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "kind-up.sh: docker is installed but its engine does not answer (is the daemon running?)" >&2
  exit 1
fi
if [[ "$(kind version)" != *"kind ${KIND_VERSION} "* ]]; then
  echo "kind-up.sh: warning: written for kind ${KIND_VERSION}, found: $(kind version)" >&2
fi

log() { printf '\n==> %s\n' "$*"; }
k() { kubectl --context "kind-${CLUSTER_NAME}" "$@"; }

# retry ATTEMPTS DELAY_S COMMAND...: webhooks answer a little after their Deployment is Available.
retry() {
  local attempts="$1" delay="$2" i
  shift 2
  for ((i = 1; i <= attempts; i++)); do
    "$@" && return 0
    echo "attempt ${i}/${attempts} failed: $*; retrying in ${delay}s" >&2
    sleep "$delay"
  done
  return 1
}

# wait_available NAMESPACE: every Deployment in it reports Available.
wait_available() {
  k -n "$1" wait --for=condition=Available deployment --all --timeout="$WAIT_TIMEOUT"
}

log "local registry ${REGISTRY_NAME} on localhost:${REGISTRY_PORT} (${REGISTRY_IMAGE})"
case "$(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true)" in
  true) echo "reusing the running ${REGISTRY_NAME}" ;;
  false) docker start "$REGISTRY_NAME" >/dev/null ;;
  *) docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --network bridge \
       --name "$REGISTRY_NAME" "$REGISTRY_IMAGE" >/dev/null ;;
esac

log "kind cluster ${CLUSTER_NAME}"
clusters="$(kind get clusters 2>/dev/null || true)"
if grep -qx "$CLUSTER_NAME" <<<"$clusters"; then
  echo "reusing the existing cluster ${CLUSTER_NAME} (scripts/kind-down.sh removes it)"
else
  kind create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config "${SCRIPT_DIR}/kind/cluster.yaml" --wait 180s
fi

log "containerd on each node pulls localhost:${REGISTRY_PORT}/* from ${REGISTRY_NAME}"
if [[ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME")" == null ]]; then
  docker network connect kind "$REGISTRY_NAME"
fi
hosts_dir="/etc/containerd/certs.d/localhost:${REGISTRY_PORT}"
mapfile -t nodes < <(kind get nodes --name "$CLUSTER_NAME")
for node in "${nodes[@]}"; do
  docker exec "$node" mkdir -p "$hosts_dir"
  printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" |
    docker exec -i "$node" sh -c "cat > '${hosts_dir}/hosts.toml'"
done
k apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:${REGISTRY_PORT}"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF

log "cert-manager ${CERT_MANAGER_VERSION}"
k apply -f "$CERT_MANAGER_URL"
wait_available cert-manager

log "Kubeflow Pipelines ${KFP_VERSION} (standalone, platform-agnostic)"
k apply -k "${KFP_KUSTOMIZE}/cluster-scoped-resources?ref=${KFP_VERSION}"
k wait --for=condition=Established crd --all --timeout=120s
retry 3 10 k apply -k "${KFP_KUSTOMIZE}/env/platform-agnostic?ref=${KFP_VERSION}"
wait_available kubeflow

log "Katib ${KATIB_VERSION} (standalone)"
retry 3 10 k apply --server-side -k "$KATIB_KUSTOMIZE"
wait_available kubeflow

log "Kubeflow Trainer ${TRAINER_VERSION}"
k apply --server-side -k "${TRAINER_KUSTOMIZE}/manager?ref=${TRAINER_VERSION}"
wait_available kubeflow-system
retry 10 15 k apply --server-side -k "${TRAINER_KUSTOMIZE}/runtimes?ref=${TRAINER_VERSION}"
k get clustertrainingruntime torch-distributed

log "KServe ${KSERVE_VERSION} (Standard mode)"
k create namespace kserve --dry-run=client -o yaml | k apply -f -  # kserve.yaml carries no Namespace
k apply --server-side -f "${KSERVE_RELEASE}/kserve-crds.yaml"
k wait --for=condition=Established crd/inferenceservices.serving.kserve.io --timeout=120s
# --force-conflicts: on a rerun, take inferenceservice-config back from the `replace` below.
retry 10 15 k apply --server-side --force-conflicts -f "${KSERVE_RELEASE}/kserve.yaml"  # cert-manager's webhook
k -n kserve get configmap inferenceservice-config -o json |
  python3 "${SCRIPT_DIR}/kind/kserve_standard_mode.py" | k replace -f -
k -n kserve rollout restart deployment/kserve-controller-manager
k -n kserve rollout status deployment/kserve-controller-manager --timeout="$WAIT_TIMEOUT"
retry 10 15 k apply --server-side -f "${KSERVE_RELEASE}/kserve-cluster-resources.yaml"

log "ready: kind-${CLUSTER_NAME}"
cat <<EOF
  images:     docker push localhost:${REGISTRY_PORT}/<name>:<tag>  (pods pull the same reference)
  pipelines:  kubectl --context kind-${CLUSTER_NAME} -n kubeflow port-forward svc/ml-pipeline 8888:8888
  KFP UI:     kubectl --context kind-${CLUSTER_NAME} -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
  Katib UI:   kubectl --context kind-${CLUSTER_NAME} -n kubeflow port-forward svc/katib-ui 8081:80
  end to end: scripts/kind-e2e.sh      remove: scripts/kind-down.sh
EOF

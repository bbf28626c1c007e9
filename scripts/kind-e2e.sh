#!/usr/bin/env bash
# kind-e2e.sh: Slipway end to end on a local Kubeflow (kind), from images to a prediction.
#
#   0. scripts/kind-up.sh (reuses the cluster if it is up);
#   1. `make images IMAGE_REGISTRY=localhost:5001 IMAGE_TAG=e2e IMAGES=...`, then `docker push` of the core,
#      tfdv, drift and serving images to the local registry (train-gpu is neither built nor pushed: it
#      is a CUDA image of many GB and kind has no GPU);
#   2. `kubectl apply -k manifests/overlays/kind` (namespace kubeflow: pipeline-runner, slipway-config,
#      slipway-storage, MLflow, Feast's Redis);
#   3. `slipway compile` against those images (SLIPWAY_IMAGE_REGISTRY / SLIPWAY_IMAGE_TAG);
#   4. copies data/chicago_taxi/data.csv and data2.csv into KFP's object store (SeaweedFS behind
#      svc/minio-service, bucket mlpipeline), uploads the pipelines through a port-forward to
#      svc/ml-pipeline, and runs `training` (serving_target=kserve) to completion;
#   5. waits for the InferenceService chicago-taxi to be Ready;
#   6. sends one V1 prediction, a row of data.csv, through a port-forward to the predictor's Service
#      (chicago-taxi-predictor): one probability must come back;
#   7. runs `continuous_training` on data2.csv (the shifted batch: critical drift, so it retrains
#      and deploys), then checks the endpoint again;
#   8. deletes the cluster on exit, failure included, unless KEEP_CLUSTER=1.
#
# Usage: scripts/kind-e2e.sh [-h|--help]
# Environment: CLUSTER_NAME (default slipway), KEEP_CLUSTER=1 to keep the cluster,
#   RUN_TIMEOUT (seconds per pipeline run, default 3600), WAIT_TIMEOUT (per wait, default 900s).
# Needs what kind-up.sh needs, plus make, curl and the core environment (.venv/core: `make env`).
set -euo pipefail

USAGE="Usage: scripts/kind-e2e.sh [-h|--help]

Bring up the kind cluster (scripts/kind-up.sh), build and push Slipway's images to localhost:5001,
apply manifests/overlays/kind, compile and run the training pipeline on Kubeflow with KServe as the
serving target, check a prediction, run continuous_training on the drifted batch, then delete the
cluster (also on failure).

Environment:
  CLUSTER_NAME   kind cluster name (default: slipway)
  KEEP_CLUSTER   1 keeps the cluster at the end (default: delete it)
  RUN_TIMEOUT    seconds each pipeline run may take (default: 3600)
  WAIT_TIMEOUT   timeout of each readiness wait (default: 900s)

Requires kind, docker, kubectl, git, python3, make, curl and .venv/core (make env)."

CLUSTER_NAME="${CLUSTER_NAME:-slipway}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
RUN_TIMEOUT="${RUN_TIMEOUT:-3600}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-900s}"
IMAGE_REGISTRY="localhost:5001"
IMAGE_TAG="e2e"  # fixed: with KEEP_CLUSTER=1, a rerun's pods may reuse the node's cached e2e images
PUSHED_RUNTIMES=(core tfdv drift serving)  # train-gpu: built by `make images`, not pushed
NAMESPACE="kubeflow"
MODEL_NAME="chicago_taxi"
ISVC_NAME="${MODEL_NAME//_/-}"
DATA_BUCKET="mlpipeline"  # KFP's own bucket in its SeaweedFS (svc/minio-service)
DATA_PREFIX="slipway-e2e"
KFP_PORT=8888      # local end of the port-forward to svc/ml-pipeline (its HTTP API port)
S3_PORT=19000      # ... to svc/minio-service:9000
PREDICT_PORT=18080 # ... to svc/<isvc>-predictor:80
KFP_HOST="http://localhost:${KFP_PORT}"

REPO_ROOT="$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)"
PYTHON="${REPO_ROOT}/.venv/core/bin/python"
SLIPWAY="${REPO_ROOT}/.venv/core/bin/slipway"

case "${1:-}" in
  -h | --help) printf '%s\n' "$USAGE"; exit 0 ;;
  "") ;;
  *) printf 'kind-e2e.sh: unknown argument: %s\n\n%s\n' "$1" "$USAGE" >&2; exit 2 ;;
esac

missing=()
for tool in kind docker kubectl git python3 make curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  printf 'kind-e2e.sh: not found on PATH: %s\n' "${missing[*]}" >&2
  exit 1
fi
if [[ ! -x "$SLIPWAY" ]]; then
  echo "kind-e2e.sh: ${SLIPWAY} not found: build the core environment first (make env)" >&2
  exit 1
fi

cd "$REPO_ROOT"
log() { printf '\n==> %s\n' "$*"; }
k() { kubectl --context "kind-${CLUSTER_NAME}" "$@"; }

forwards=()
teardown() {
  local status=$?
  if ((${#forwards[@]})); then
    kill "${forwards[@]}" 2>/dev/null || true
  fi
  if [[ "$KEEP_CLUSTER" == 1 ]]; then
    log "keeping kind-${CLUSTER_NAME} (KEEP_CLUSTER=1); remove it with scripts/kind-down.sh"
  else
    log "deleting kind-${CLUSTER_NAME} (KEEP_CLUSTER=1 keeps it)"
    CLUSTER_NAME="$CLUSTER_NAME" scripts/kind-down.sh || true
  fi
  exit "$status"
}
trap teardown EXIT

# forward LOCAL_PORT TARGET REMOTE_PORT: a background port-forward, waited for until it accepts.
forward() {
  local port="$1" target="$2" remote="$3" i
  k -n "$NAMESPACE" port-forward "$target" "${port}:${remote}" >/dev/null &
  forwards+=("$!")
  for ((i = 0; i < 30; i++)); do
    if (: <"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  echo "kind-e2e.sh: port-forward to ${target} on localhost:${port} did not open" >&2
  return 1
}

# predictor_service: the Service in front of the ISVC's predictor pods. Usually <isvc>-predictor;
# after a Standard-mode canary is promoted it is named after that canary, so ask by label.
predictor_service() {
  local found
  found="$(k -n "$NAMESPACE" get service -o name \
    -l "serving.kserve.io/inferenceservice=${ISVC_NAME},component=predictor")"
  found="${found%%$'\n'*}"
  echo "${found:-service/${ISVC_NAME}-predictor}"
}

# predict: one V1 request with the first row of data.csv (less the label); the answer must be
# one probability.
predict() {
  local request answer
  request="$("$PYTHON" -c 'import json, sys, pandas as pd
row = pd.read_csv(sys.argv[1], nrows=1).drop(columns=["tips"])
print(json.dumps({"instances": json.loads(row.to_json(orient="records"))}))' data/chicago_taxi/data.csv)"
  answer="$(curl -sS --fail-with-body --max-time 60 -H 'Content-Type: application/json' -d "$request" \
    "http://localhost:${PREDICT_PORT}/v1/models/${MODEL_NAME}:predict")"
  echo "answer: ${answer}"
  "$PYTHON" -c 'import json, sys
p = json.loads(sys.argv[1]).get("predictions")
ok = isinstance(p, list) and len(p) == 1 and isinstance(p[0], (int, float)) and 0 <= p[0] <= 1
sys.exit(0 if ok else "expected one probability in predictions")' "$answer"
}

log "0. cluster"
CLUSTER_NAME="$CLUSTER_NAME" WAIT_TIMEOUT="$WAIT_TIMEOUT" scripts/kind-up.sh

log "1. images (${IMAGE_REGISTRY}, tag ${IMAGE_TAG})"
make images IMAGE_REGISTRY="$IMAGE_REGISTRY" IMAGE_TAG="$IMAGE_TAG" IMAGES="${PUSHED_RUNTIMES[*]}"
for runtime in "${PUSHED_RUNTIMES[@]}"; do
  docker push "${IMAGE_REGISTRY}/slipway-${runtime}:${IMAGE_TAG}"
done

log "2. Slipway's manifests (manifests/overlays/kind)"
k apply -k manifests/overlays/kind
k -n "$NAMESPACE" wait --for=condition=Available deployment --all --timeout="$WAIT_TIMEOUT"

log "3. compile against the pushed images"
SLIPWAY_IMAGE_REGISTRY="$IMAGE_REGISTRY" SLIPWAY_IMAGE_TAG="$IMAGE_TAG" \
  "$SLIPWAY" compile --output-dir dist

log "4. sample data into s3://${DATA_BUCKET}/${DATA_PREFIX}/, then the training run"
forward "$S3_PORT" svc/minio-service 9000
S3_ACCESS_KEY="$(k -n "$NAMESPACE" get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d)"
S3_SECRET_KEY="$(k -n "$NAMESPACE" get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d)"
export S3_ACCESS_KEY S3_SECRET_KEY
"$PYTHON" - "localhost:${S3_PORT}" "$DATA_BUCKET" "$DATA_PREFIX" \
  data/chicago_taxi/data.csv data/chicago_taxi/data2.csv <<'PY'
import os, sys
from pathlib import Path
from minio import Minio

endpoint, bucket, prefix, *files = sys.argv[1:]
client = Minio(endpoint, os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"], secure=False)
if not client.bucket_exists(bucket):
    client.make_bucket(bucket)
for path in map(Path, files):
    client.fput_object(bucket, f"{prefix}/{path.name}", str(path))
    print(f"uploaded s3://{bucket}/{prefix}/{path.name}")
PY
forward "$KFP_PORT" svc/ml-pipeline 8888
# Named as in `slipway compile` (continuous_training's own pipelineInfo.name is continuous-training).
for pipeline in training continuous_training; do
  "$SLIPWAY" upload "dist/${pipeline}.yaml" --name "$pipeline" --host "$KFP_HOST"
done
"$SLIPWAY" submit training --host "$KFP_HOST" \
  --set "source_uri=s3://${DATA_BUCKET}/${DATA_PREFIX}/data.csv" --set serving_target=kserve \
  --wait --timeout "$RUN_TIMEOUT"

log "5. InferenceService ${ISVC_NAME}"
k -n "$NAMESPACE" wait --for=condition=Ready "inferenceservice/${ISVC_NAME}" --timeout="$WAIT_TIMEOUT"

log "6. a V1 prediction"
forward "$PREDICT_PORT" "$(predictor_service)" 80
predict

log "7. continuous_training on the shifted batch (data2.csv: critical drift, retrain)"
"$SLIPWAY" submit continuous_training --host "$KFP_HOST" \
  --set "source_uri=s3://${DATA_BUCKET}/${DATA_PREFIX}/data2.csv" --set serving_target=kserve \
  --wait --timeout "$RUN_TIMEOUT"
k -n "$NAMESPACE" wait --for=condition=Ready "inferenceservice/${ISVC_NAME}" --timeout="$WAIT_TIMEOUT"
# The retrained model serves from new pods, maybe behind another Service: forward again.
kill "${forwards[-1]}" 2>/dev/null || true
wait "${forwards[-1]}" 2>/dev/null || true
forward "$PREDICT_PORT" "$(predictor_service)" 80
predict

log "end to end: passed"

#!/usr/bin/env bash
# kind-down.sh: delete the kind cluster that scripts/kind-up.sh made; with --registry, also the
# local registry container (kind-registry, localhost:5001) and the images pushed to it.
#
# Usage: scripts/kind-down.sh [--registry] [-h|--help]
# Environment: CLUSTER_NAME (default slipway). Deleting what is not there is not an error.
set -euo pipefail

USAGE="Usage: scripts/kind-down.sh [--registry] [-h|--help]

Delete the kind cluster \$CLUSTER_NAME (default: slipway). With --registry, also remove the
kind-registry container on localhost:5001 (and the images pushed to it)."

CLUSTER_NAME="${CLUSTER_NAME:-slipway}"
REGISTRY_NAME="kind-registry"
remove_registry=false

case "${1:-}" in
  -h | --help) printf '%s\n' "$USAGE"; exit 0 ;;
  --registry) remove_registry=true ;;
  "") ;;
  *) printf 'kind-down.sh: unknown argument: %s\n\n%s\n' "$1" "$USAGE" >&2; exit 2 ;;
esac

for tool in kind docker; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "kind-down.sh: ${tool} not found on PATH" >&2
    exit 1
  fi
done

kind delete cluster --name "$CLUSTER_NAME"
if [[ "$remove_registry" == true ]]; then
  docker rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true
  echo "removed ${REGISTRY_NAME}"
fi

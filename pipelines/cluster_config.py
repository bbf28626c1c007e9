"""Gives every task of the pipeline being defined the cluster's settings (`slipway.cluster`), as optional env.

Each pipeline calls `attach_cluster_config()` last: the ConfigMap's keys and the keys of the storage and
auth Secrets become environment variables of every task on Kubeflow (kfp-kubernetes records them in the IR's
Kubernetes platform spec); kfp.local ignores platform config, so a local run reads the local
environment as before. All are optional: a cluster without a Secret (Workload Identity; an MLflow or
Redis of its own without authentication) or without some key still runs, with the variable unset.
"""

from kfp import kubernetes
from kfp.dsl import pipeline_context

from slipway import cluster


def attach_cluster_config() -> None:
    """Attaches `slipway-config`, `slipway-storage` and `slipway-auth` as env to every task added so far."""
    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    if pipeline is None:
        raise RuntimeError("attach_cluster_config() is called inside a @dsl.pipeline function, after its tasks")
    for task in pipeline.tasks.values():
        kubernetes.use_config_map_as_env(task, cluster.CONFIG_MAP, {key: key for key in cluster.CONFIG_KEYS},
                                         optional=True)
        kubernetes.use_secret_as_env(task, cluster.STORAGE_SECRET, {key: key for key in cluster.STORAGE_KEYS},
                                     optional=True)
        kubernetes.use_secret_as_env(task, cluster.AUTH_SECRET, {key: key for key in cluster.AUTH_KEYS}, optional=True)

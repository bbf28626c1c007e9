"""What a Kubeflow cluster provides to Slipway's steps, by name: the one place the pipelines and the manifests share.

Every step of every pipeline reads its cluster settings from environment variables (the same ones a
user sets locally), filled on Kubeflow from two objects that `manifests/` creates:

- the ConfigMap `slipway-config`: where MLflow, the Feast registry and Redis, and the S3 API endpoint are
  (`CONFIG_KEYS`, each key the variable's own name);
- the Secret `slipway-storage`: the object-storage keys (`STORAGE_KEYS`), referenced by name, never
  written into a pipeline or a manifest. On GKE with Workload Identity there is no Secret, and none is
  needed: both are attached to each task as optional, so a missing object or key leaves the variable unset.
- the Secret `slipway-auth`: the credentials of the base's MLflow (basic auth) and Redis (`requirepass`),
  `AUTH_KEYS`, each key the variable's own name: MLflow's client reads MLFLOW_TRACKING_USERNAME and
  MLFLOW_TRACKING_PASSWORD itself, the Feast connection takes SLIPWAY_FEAST_REDIS_PASSWORD
  (components/feature_store.py). The servers require it; their clients read it as optional, so a
  cluster's own MLflow or Redis without authentication still works.

The pipelines attach all three to every task (`slipway.pipelines.cluster_config`); the distributed training
step hands the same variables and Secrets on to its TrainJob or PyTorchJob, the tune step to its Katib trials.
"""

NAMESPACE = "kubeflow"
# Kubeflow Pipelines (standalone) runs every task's pod as this service account.
PIPELINE_RUNNER = "pipeline-runner"
# InferenceServices run as this service account: KServe's storage initializer pulls the model with the
# object-storage Secret listed on it.
SERVING_ACCOUNT = "slipway-serving"
CONFIG_MAP = "slipway-config"
STORAGE_SECRET = "slipway-storage"
AUTH_SECRET = "slipway-auth"

CONFIG_KEYS = (
    "MLFLOW_TRACKING_URI",          # the MLflow server: tracking and the model registry
    "MLFLOW_S3_ENDPOINT_URL",       # where MLflow's artifact store (s3://) is served
    "AWS_ENDPOINT_URL",             # the S3 API endpoint for slipway.storage, boto3 and Feast
    "AWS_REGION",
    "SLIPWAY_FEAST_REGISTRY",       # the Feast registry, on object storage
    "SLIPWAY_FEAST_ONLINE_STORE",   # `redis` on a cluster
    "SLIPWAY_FEAST_REDIS",          # host:port of the online store
    "SLIPWAY_SERVING_DEPLOYMENT_MODE",  # a new InferenceService's mode: Serverless (Knative, the default) or Standard
)
STORAGE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_AUTH_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
AUTH_KEYS = (*MLFLOW_AUTH_KEYS, "SLIPWAY_FEAST_REDIS_PASSWORD")

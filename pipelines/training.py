"""The `training` pipeline: from a raw source to a served model, deployed only if blessed and canaried.

Read it top to bottom to follow one row of data: `ingest` types and time-splits the source;
`statistics`, `schema` and `validate` check both splits with TFDV (TFX's StatisticsGen, SchemaGen
and ExampleValidator) and stop the run on anomalies before anything else happens; `feature_tables`
computes each entity's windowed aggregates of earlier trips (Feast's offline store), `feast_apply`
registers the feature views, `training_set` joins every trip of each split with its features as of
the trip's own time (point in time, no later), and `materialize` loads the newest features into the
online store that serving reads. `tune` searches the hyperparameters (an Optuna study here, a Katib
Experiment on Kubeflow, or off) on a time holdout of the train training set, and `train` fits the
model with the best of them on the whole train training set, `evaluate` measures it on the eval
training set (the future), `bless` compares it with the registry's champion on that same split,
`register` records it as the `challenger` with its lineage and model card, and only a blessed model
goes on to `deploy`: served by a real KServe model server, smoke-tested, canaried against the
champion on live traffic, and made `champion` only if the canary passes.
"""

from typing import NamedTuple

from kfp import dsl

from slipway.components.blessing import BlessingPolicy
from slipway.components.catalog import ingest, schema, statistics, validate
from slipway.components.search_space import DEFAULT_SEARCH_SPACE
from slipway.components.train_config import DEFAULT_PROCESSES, TrainConfig
from slipway.pipelines.cluster_config import attach_cluster_config
from slipway.pipelines.steps import train_and_deploy
from slipway.problem import DEFAULT_PROBLEM
from slipway.serving.canary import AnalysisPolicy
from slipway.serving.deploy import LocalDeployConfig

DEFAULT_THRESHOLD = 0.5
CANARY_STEPS = LocalDeployConfig.steps


class TrainingOutputs(NamedTuple):
    statistics_report: dsl.HTML
    anomalies: dsl.Markdown
    tuning_trials: dsl.Markdown
    best_params: dsl.Metrics
    model: dsl.Model
    train_metrics: dsl.Metrics
    eval_metrics: dsl.Metrics
    eval_report: dsl.HTML
    model_card: dsl.Markdown
    decision: str
    model_uri: str


@dsl.pipeline(
    name="training",
    description="Ingest a CSV/Parquet source, join each trip with its point-in-time Feast features (and "
                "materialize them for serving), train a model with DDP (tracked in MLflow), evaluate it on a "
                "time-split eval set, bless it against the registry's champion, register it in MLflow, and "
                "if blessed serve it with KServe's model server and canary it against the champion before "
                "promoting it.",
)
def training(
    source_uri: str,
    problem: str = DEFAULT_PROBLEM,
    pinned_schema: str = "",
    tuner: str = "optuna",
    search_space: str = DEFAULT_SEARCH_SPACE,
    max_trials: int = 0,
    architecture: str = TrainConfig.architecture,
    hidden_units: list = list(TrainConfig.hidden_units),  # noqa: B006 - KFP records the default in the IR
    dropout: float = TrainConfig.dropout,
    epochs: int = TrainConfig.epochs,
    learning_rate: float = TrainConfig.learning_rate,
    batch_size: int = TrainConfig.batch_size,
    weight_decay: float = TrainConfig.weight_decay,
    patience: int = TrainConfig.patience,
    seed: int = TrainConfig.seed,
    processes: int = DEFAULT_PROCESSES,
    launcher: str = "torchrun",
    num_nodes: int = 1,
    gpus_per_node: int = 0,
    credentials_secret: str = "",
    tracking_uri: str = "",
    feature_repo: str = "",
    threshold: float = DEFAULT_THRESHOLD,
    model_name: str = "",
    min_auc: float = BlessingPolicy.min_auc,
    max_auc_drop: float = BlessingPolicy.max_auc_drop,
    canary_steps: list = list(CANARY_STEPS),  # noqa: B006 - KFP records the default in the IR
    canary_min_requests: int = AnalysisPolicy.min_requests,
    traffic_rps: float = LocalDeployConfig.traffic_rps,
    serving_target: str = "local",
) -> TrainingOutputs:
    """`pinned_schema` is a reviewed schema.pbtxt (path or URI) to validate against instead of the one inferred from
    the train split; `tuner` is `optuna` (a study in the task), `katib` (a Katib Experiment) or `off`, searching
    `search_space` (a packaged name or a YAML path) within `max_trials` (0: the space's budget), the other
    hyperparameters being the base that unsearched fields keep; `launcher` is `torchrun` (in the task) or, on
    Kubeflow, `trainjob`, `pytorchjob` or `auto`: a job of `num_nodes` nodes with `gpus_per_node` GPUs each, which
    reads object storage with the keys of the Secret `credentials_secret` (empty: `slipway-storage`); `feature_repo`
    is the Feast store's folder (empty: SLIPWAY_FEAST_* from the environment, else an embedded store under the
    pipeline root, shared by runs like the MLflow registry); `model_name` is the registered model (empty: the
    problem's name); `min_auc` and `max_auc_drop` are the blessing gate's minimum AUC and the AUC drop from the
    champion it tolerates; `canary_steps` are the percentages of traffic the canary takes in turn, each judged on at
    least `canary_min_requests` canary requests of eval rows replayed at `traffic_rps`; `serving_target` is `local` (a
    KServe model server in the deploy task) or, on Kubeflow, `kserve` (an InferenceService)."""
    ingested = ingest(source_uri=source_uri, problem=problem)
    # The source behind a URI can change while the URI stays the same (`latest.csv`): never
    # let Kubeflow's cache answer for a fresh read.
    ingested.set_caching_options(False)
    # Gate everything downstream on the data: TFDV statistics, a curated (or pinned) schema, anomalies.
    stats = statistics(train_data=ingested.outputs["train_data"], eval_data=ingested.outputs["eval_data"],
                       problem=problem)
    inferred = schema(statistics=stats.outputs["statistics"], problem=problem, pinned_schema=pinned_schema)
    validated = validate(statistics=stats.outputs["statistics"], schema=inferred.outputs["schema"], problem=problem)
    steps = train_and_deploy(
        ingested=ingested, inferred=inferred, validated=validated, problem=problem, tuner=tuner,
        search_space=search_space, max_trials=max_trials, architecture=architecture, hidden_units=hidden_units,
        dropout=dropout, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
        weight_decay=weight_decay, patience=patience, seed=seed, processes=processes, launcher=launcher,
        num_nodes=num_nodes, gpus_per_node=gpus_per_node, credentials_secret=credentials_secret,
        tracking_uri=tracking_uri,
        feature_repo=feature_repo, threshold=threshold, model_name=model_name, min_auc=min_auc,
        max_auc_drop=max_auc_drop, canary_steps=canary_steps, canary_min_requests=canary_min_requests,
        traffic_rps=traffic_rps, serving_target=serving_target)
    attach_cluster_config()
    return TrainingOutputs(
        statistics_report=stats.outputs["report"],
        anomalies=validated.outputs["summary"],
        tuning_trials=steps.tuned.outputs["trials"],
        best_params=steps.tuned.outputs["best_params"],
        model=steps.trained.outputs["model"],
        train_metrics=steps.trained.outputs["metrics"],
        eval_metrics=steps.evaluated.outputs["metrics"],
        eval_report=steps.evaluated.outputs["report"],
        model_card=steps.registered.outputs["model_card"],
        decision=steps.blessed.outputs["Output"],
        model_uri=steps.registered.outputs["model_uri"],
    )

"""The `continuous_training` pipeline: retrain, bless and canary a new model when the data has moved or the model
got worse.

A new batch arrives (a CSV/Parquet source by URI). `champion` finds the model now serving and, from
its lineage in the registry, the training set it was fitted on, the schema its data passed and its
eval AUC. `ingest` types and time-splits the batch; `statistics`, `schema` (the champion's, pinned)
and `validate` stop the run on anomalies; `drift` measures every feature of the batch against the
champion's training data (PSI and a KS or Chi-squared test, DESIGN.md §6), and the champion's scores
on both (its `prediction` row). `retrain_trigger` decides: at `critical` drift, or when the
champion's live AUC (late labels joined to its prediction log, components/feedback.py) fell more
than `max_auc_drop_percent` below its eval AUC. Only then does the run go on, inside `dsl.If`, to
the very steps of the `training` pipeline on the new batch (`pipelines/steps.py`: features, tune,
train, evaluate, bless against the champion, register, and the canaried deploy of a blessed model).
A `warning` is reported in the drift step's Metrics and HTML report, not acted on.
"""

from typing import NamedTuple

from kfp import dsl

from slipway.components.blessing import BlessingPolicy
from slipway.components.catalog import champion, drift, ingest, retrain_trigger, schema, statistics, validate
from slipway.components.drift_detection import DriftConfig
from slipway.components.feedback import NO_RETRAINING, FeedbackPolicy
from slipway.components.search_space import DEFAULT_SEARCH_SPACE
from slipway.components.train_config import DEFAULT_PROCESSES, TrainConfig
from slipway.pipelines.cluster_config import attach_cluster_config
from slipway.pipelines.steps import train_and_deploy
from slipway.pipelines.training import CANARY_STEPS, DEFAULT_THRESHOLD
from slipway.problem import DEFAULT_PROBLEM
from slipway.serving.canary import AnalysisPolicy
from slipway.serving.deploy import LocalDeployConfig

RETRAIN_AT = "critical"


class ContinuousTrainingOutputs(NamedTuple):
    drift_level: str
    retrain: str
    feedback: dsl.Metrics
    drift_report: dsl.HTML
    drift_metrics: dsl.Metrics
    anomalies: dsl.Markdown


@dsl.pipeline(
    name="continuous-training",
    description="Validate a new batch against the champion's schema and measure its drift from the champion's "
                "training data; at critical drift, retrain on the batch with the training pipeline's steps, bless "
                "the new model against the champion and canary-deploy it.",
)
def continuous_training(
    source_uri: str,
    problem: str = DEFAULT_PROBLEM,
    model_name: str = "",
    tracking_uri: str = "",
    feature_repo: str = "",
    drift_alpha: float = DriftConfig.alpha,
    drift_correction: str = DriftConfig.correction,
    prediction_log: str = "",
    labels_uri: str = "",
    max_auc_drop_percent: float = FeedbackPolicy.max_drop_percent,
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
    threshold: float = DEFAULT_THRESHOLD,
    min_auc: float = BlessingPolicy.min_auc,
    max_auc_drop: float = BlessingPolicy.max_auc_drop,
    canary_steps: list = list(CANARY_STEPS),  # noqa: B006 - KFP records the default in the IR
    canary_min_requests: int = AnalysisPolicy.min_requests,
    traffic_rps: float = LocalDeployConfig.traffic_rps,
    serving_target: str = "local",
) -> ContinuousTrainingOutputs:
    """`source_uri` is the new batch; `model_name` the registered model whose champion is compared and
    challenged (empty: the problem's name); `drift_alpha` and `drift_correction` (`bonferroni` or `fdr`) are
    the drift tests' significance and correction. With `prediction_log` (the champion's, a local path or a URI)
    and `labels_uri` (request ids and outcomes), a live AUC more than `max_auc_drop_percent` below the champion's
    eval AUC also retrains. The other parameters are the `training` pipeline's."""
    registry = {"tracking_uri": tracking_uri, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER}
    # The champion, like the batch behind a URI, can change between runs: never cached.
    serving = champion(problem=problem, model_name=model_name, **registry).set_caching_options(False)
    ingested = ingest(source_uri=source_uri, problem=problem).set_caching_options(False)
    stats = statistics(train_data=ingested.outputs["train_data"], eval_data=ingested.outputs["eval_data"],
                       problem=problem)
    inferred = schema(statistics=stats.outputs["statistics"], problem=problem,
                      pinned_schema=serving.outputs["schema_uri"])
    validated = validate(statistics=stats.outputs["statistics"], schema=inferred.outputs["schema"], problem=problem)
    batch = dsl.importer(artifact_uri=source_uri, artifact_class=dsl.Dataset, reimport=True,
                         metadata={"source": source_uri})
    drifted = drift(reference=serving.outputs["reference"], model=serving.outputs["model"], current=batch.output,
                    problem=problem, alpha=drift_alpha,
                    correction=drift_correction).after(validated).set_caching_options(False)
    trigger = retrain_trigger(drift_level=drifted.outputs["Output"], retrain_at=RETRAIN_AT,
                              baseline_auc=serving.outputs["eval_auc"], prediction_log=prediction_log,
                              labels_uri=labels_uri, max_auc_drop_percent=max_auc_drop_percent
                              ).set_caching_options(False)  # the labels file grows behind the same URI
    with dsl.If(trigger.outputs["Output"] != NO_RETRAINING, name="retrain"):
        train_and_deploy(
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
    return ContinuousTrainingOutputs(drift_level=drifted.outputs["Output"], retrain=trigger.outputs["Output"],
                                     feedback=trigger.outputs["feedback"], drift_report=drifted.outputs["report"],
                                     drift_metrics=drifted.outputs["metrics"], anomalies=validated.outputs["summary"])

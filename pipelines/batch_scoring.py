"""The `batch_scoring` pipeline: score a batch with the champion, in bulk, and judge its drift from the training data.

`champion` resolves the registry's `champion` alias once, to a version (`models:/NAME/VERSION`),
and hands on the training set that version was fitted on. `importer` makes the batch at `source_uri`
(CSV or Parquet, a file or a Parquet directory) a Dataset. `batch_predict` joins each row's
point-in-time Feast features, as the training sets were joined (no skew), scores every row with
that version in chunks, and writes the predictions (each row with its model version and this run's
id) all at once or not at all, the unscorable rows to `rejects` with their reasons. `drift` then
reads the predictions as it reads any batch, and as the online monitor reads served traffic: every
feature against the champion's training data, and the logged scores against the champion's scores
on that data (the `prediction` row).
"""

from typing import NamedTuple

from kfp import dsl

from slipway.components.catalog import batch_predict, champion, drift
from slipway.components.drift_detection import DriftConfig
from slipway.pipelines.cluster_config import attach_cluster_config
from slipway.problem import DEFAULT_PROBLEM


class BatchScoringOutputs(NamedTuple):
    predictions: dsl.Dataset
    rejects: dsl.Dataset
    scoring_metrics: dsl.Metrics
    model_version: str
    drift_level: str
    drift_report: dsl.HTML
    drift_metrics: dsl.Metrics


@dsl.pipeline(
    name="batch-scoring",
    description="Score a batch with the registry's champion, each row with its point-in-time Feast features, into "
                "an atomically written Parquet dataset of predictions and rejects; then measure the predictions' "
                "drift from the champion's training data.",
)
def batch_scoring(
    source_uri: str,
    problem: str = DEFAULT_PROBLEM,
    model_name: str = "",
    tracking_uri: str = "",
    feature_repo: str = "",
    join_features: bool = True,
    drift_alpha: float = DriftConfig.alpha,
    drift_correction: str = DriftConfig.correction,
) -> BatchScoringOutputs:
    """`source_uri` is the batch (on Kubeflow an object-storage URI the importer can read: gs://, s3://,
    minio://); `model_name` the registered model whose champion scores it (empty: the problem's name);
    `join_features` false when the batch already holds the Feast features. `feature_repo` and `tracking_uri` as
    in the `training` pipeline; `drift_alpha` and `drift_correction` as in `continuous_training`."""
    registry = {"tracking_uri": tracking_uri, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER}
    # The champion and the batch behind a URI can change between runs: never cached.
    serving = champion(problem=problem, model_name=model_name, **registry).set_caching_options(False)
    batch = dsl.importer(artifact_uri=source_uri, artifact_class=dsl.Dataset, reimport=True,
                         metadata={"source": source_uri})
    scored = batch_predict(data=batch.output, model_uri=serving.outputs["model_uri"], problem=problem,
                           join_features=join_features, feature_repo=feature_repo,
                           pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **registry).set_caching_options(False)
    drifted = drift(reference=serving.outputs["reference"], model=serving.outputs["model"],
                    current=scored.outputs["predictions"], problem=problem, alpha=drift_alpha,
                    correction=drift_correction)
    attach_cluster_config()
    return BatchScoringOutputs(predictions=scored.outputs["predictions"], rejects=scored.outputs["rejects"],
                               scoring_metrics=scored.outputs["metrics"],
                               model_version=scored.outputs["model_version"],
                               drift_level=drifted.outputs["Output"], drift_report=drifted.outputs["report"],
                               drift_metrics=drifted.outputs["metrics"])

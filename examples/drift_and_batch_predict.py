"""Example: score a batch with your own model and measure its drift, with only two of Slipway's components.

No ingest, no registry lookup: three `dsl.importer`s bring in what the user already has, a batch of
trips that holds the model's features (CSV or Parquet), the training data the model was fitted on
(Parquet, as the `own-ingest` example's `train_data`), and the model's folder (a Slipway model:
safetensors weights and their JSON, as `train` writes it). `batch_predict` scores every row of the
batch with that model into Parquet predictions (and the rows it cannot score into rejects); `drift`
then measures how far the batch has moved from the training data, per feature and in the model's
scores, and returns `none`, `warning` or `critical`.

    python examples/drift_and_batch_predict.py drift_and_batch_predict.yaml     # compiles to KFP IR
"""

import sys
from typing import NamedTuple

from kfp import compiler, dsl

from slipway.components import batch_predict, drift
from slipway.pipelines.cluster_config import attach_cluster_config


class ScoringOutputs(NamedTuple):
    predictions: dsl.Dataset
    rejects: dsl.Dataset
    scoring_metrics: dsl.Metrics
    drift_level: str
    drift_report: dsl.HTML
    drift_metrics: dsl.Metrics


@dsl.pipeline(
    name="drift-and-batch-predict",
    description="Score a batch with a model of your own and measure the batch's drift from that model's training "
                "data, in every feature and in the model's scores.",
)
def drift_and_batch_predict(
    data_uri: str,
    reference_uri: str,
    model_uri: str,
    problem: str,
    tracking_uri: str = "",
    drift_alpha: float = 0.05,
    drift_correction: str = "bonferroni",
) -> ScoringOutputs:
    """`data_uri` is the batch to score, with the model's features in its columns; `reference_uri` the Parquet file
    the model was trained on; `model_uri` the model's folder (on Kubeflow an object-storage URI the importer can
    read: gs://, s3://, minio://); `problem` the problem YAML's path or URI, such as examples/taxi_tips_problem.yaml.
    `drift_alpha` is the significance level of the per-feature tests, `drift_correction` how their p-values are
    corrected for testing many features (`bonferroni` or `fdr`)."""
    # The files behind these URIs can change while the URIs stay the same: import them afresh on every run.
    batch = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset, reimport=True,
                         metadata={"source": data_uri}).set_display_name("batch")
    reference = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Dataset, reimport=True,
                             metadata={"source": reference_uri}).set_display_name("reference")
    model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=True,
                         metadata={"model_uri": model_uri}).set_display_name("model")
    # The batch holds the features already (join_features=False): no Feast store is read.
    scored = batch_predict(data=batch.output, model_uri=model_uri, problem=problem, join_features=False,
                           feature_repo="", tracking_uri=tracking_uri, pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
                           pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    # The predictions carry the scores the model gave: drift compares them with its scores on the reference.
    drifted = drift(reference=reference.output, model=model.output, current=scored.outputs["predictions"],
                    problem=problem, alpha=drift_alpha, correction=drift_correction)
    # On Kubeflow every task gets the cluster's settings (MLflow, object storage) as env; kfp.local ignores this.
    attach_cluster_config()
    return ScoringOutputs(predictions=scored.outputs["predictions"], rejects=scored.outputs["rejects"],
                          scoring_metrics=scored.outputs["metrics"], drift_level=drifted.outputs["Output"],
                          drift_report=drifted.outputs["report"], drift_metrics=drifted.outputs["metrics"])


if __name__ == "__main__":
    compiler.Compiler().compile(drift_and_batch_predict, sys.argv[1] if len(sys.argv) > 1 else
                                "drift_and_batch_predict.yaml")

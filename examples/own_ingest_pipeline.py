"""Example: your own ingest step feeding Slipway's validate -> train -> deploy.

`clean_trips` is the step a user writes: it reads their CSV with pandas, cleans it by their own
rules, types the columns, computes the label and cuts train/eval Parquet Datasets by time, the
newest trips being the eval split. Everything after it is Slipway's: TFDV `statistics`, `schema`
and `validate` gate the data; `train` fits the model on the train split, `evaluate` measures it on
the eval split, `bless` compares it with the registry's champion, `register` records it, and only a
blessed model goes on to `deploy` (a real KServe model server, smoke-tested and canaried against
the champion, promoted only if the canary passes).

The problem is `examples/taxi_tips_problem.yaml`, which has no `feature_store` section: the model
reads the cleaned columns directly, so no Feast steps sit between validation and training.

    python examples/own_ingest_pipeline.py own_ingest.yaml     # compiles to KFP IR
"""

import sys
from typing import NamedTuple

from kfp import compiler, dsl

from slipway import runtimes
from slipway.components import bless, deploy, evaluate, register, schema, statistics, train, validate
from slipway.pipelines.cluster_config import attach_cluster_config


# The user's own step. It runs on Slipway's core image, which has pandas, kfp and Slipway, so it needs
# no pip install; on an image of your own without kfp, leave install_kfp_package at its default (True).
@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def clean_trips(
    raw: dsl.Input[dsl.Dataset],
    problem: str,
    train_data: dsl.Output[dsl.Dataset],
    eval_data: dsl.Output[dsl.Dataset],
):
    """Reads the raw trips CSV, drops the trips we cannot learn from, types the columns as the problem
    declares them, adds the label and writes the oldest trips as train, the newest as eval (Parquet)."""
    import hashlib
    import math

    import pandas as pd

    from slipway.expression import evaluate
    from slipway.problem import load_problem

    loaded = load_problem(problem)
    with open(raw.path, "rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    trips = pd.read_csv(raw.path)
    rows_read = len(trips)

    # Our own cleaning rules: a free trip cannot tip a share of its fare, a trip without a logged duration is a
    # meter fault, and a trip logged twice counts once.
    trips = trips[(trips["fare"] > 0) & trips["tips"].notna() & trips["trip_seconds"].notna()].drop_duplicates()

    # The types the problem declares: nullable integers, floats, strings, and the event time in UTC.
    dtypes = {"integer": "Int64", "float": "float64", "string": "string"}
    for column, kind in loaded.columns.items():
        if kind == "timestamp":
            trips[column] = pd.to_datetime(trips[column], unit=loaded.timestamp.unit, utc=True)
        else:
            trips[column] = trips[column].astype(dtypes[kind])
    trips = trips[list(loaded.columns)]
    # The problem's label expression, evaluated as data (never pandas' eval: a problem file must not run code).
    trips[loaded.label.name] = evaluate(loaded.label.expression, trips).astype("int64")

    # Train on the past, evaluate on the future: no trip time is in both splits.
    time = loaded.timestamp.column
    trips = trips.sort_values(time, kind="mergesort")
    boundary = trips[time].iloc[len(trips) - math.ceil(len(trips) * loaded.eval_fraction)]
    splits = {"train": trips[trips[time] < boundary], "eval": trips[trips[time] >= boundary]}
    for name, artifact in (("train", train_data), ("eval", eval_data)):
        splits[name].to_parquet(artifact.path, index=False)
        # `sha256` becomes the model's data lineage in MLflow and in the registry.
        artifact.metadata.update({"source": raw.uri, "sha256": sha256, "split": name, "rows": len(splits[name]),
                                  "rows_read": rows_read, "split_timestamp": boundary.isoformat()})


class OwnIngestOutputs(NamedTuple):
    train_data: dsl.Dataset
    eval_data: dsl.Dataset
    anomalies: dsl.Markdown
    model: dsl.Model
    eval_metrics: dsl.Metrics
    model_card: dsl.Markdown
    decision: str
    model_uri: str


@dsl.pipeline(
    name="own-ingest",
    description="A user's own ingest and cleaning of a trips CSV, then Slipway's TFDV validation, training, "
                "evaluation, blessing, registration and canaried deployment.",
)
def own_ingest(
    source_uri: str,
    problem: str,
    epochs: int = 2,
    processes: int = 1,
    model_name: str = "",
    tracking_uri: str = "",
    min_auc: float = 0.7,
    serving_target: str = "local",
) -> OwnIngestOutputs:
    """`source_uri` is the trips CSV (on Kubeflow an object-storage URI the importer can read); `problem` a problem
    YAML's path or URI, such as examples/taxi_tips_problem.yaml; `epochs` and `processes` are kept small so that a
    local run takes about a minute. `model_name` empty registers the model under the problem's name."""
    run = {"tracking_uri": tracking_uri, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER}
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    # The source behind a URI can change while the URI stays the same: never take it from the cache.
    source = dsl.importer(artifact_uri=source_uri, artifact_class=dsl.Dataset, reimport=True,
                          metadata={"source": source_uri})
    cleaned = clean_trips(raw=source.output, problem=problem).set_caching_options(False)
    train_data, eval_data = cleaned.outputs["train_data"], cleaned.outputs["eval_data"]

    # Slipway's data gate: TFDV statistics of both splits, a schema curated from the problem, anomalies stop the run.
    stats = statistics(train_data=train_data, eval_data=eval_data, problem=problem)
    inferred = schema(statistics=stats.outputs["statistics"], problem=problem, pinned_schema="")
    validated = validate(statistics=stats.outputs["statistics"], schema=inferred.outputs["schema"], problem=problem)

    # Training waits for validation: nothing is trained on data that failed it.
    # The hyperparameters not set here are train's defaults (TrainConfig's); few epochs take smaller batches.
    trained = train(train_data=train_data, eval_data=eval_data, problem=problem, epochs=epochs, batch_size=256,
                    processes=processes, pipeline_run_id=run_id, **run).after(validated)
    evaluated = evaluate(model=trained.outputs["model"], eval_data=eval_data, problem=problem, threshold=0.5)
    # The registry's champion can change between runs while these inputs stay the same: never cached.
    blessed = bless(evaluation=evaluated.outputs["evaluation"], eval_data=eval_data, problem=problem,
                    model_name=model_name, min_auc=min_auc, max_auc_drop=0.01, **run).set_caching_options(False)
    registered = register(
        model=trained.outputs["model"], train_data=train_data, eval_data=eval_data,
        evaluation=evaluated.outputs["evaluation"], blessing=blessed.outputs["blessing"],
        schema=inferred.outputs["schema"], problem=problem, model_name=model_name, pipeline_run_id=run_id, **run,
    ).set_caching_options(False)
    with dsl.If(blessed.outputs["Output"] == "blessed", name="blessed"):
        deploy(eval_data=eval_data, problem=problem, model_name=model_name, version=registered.outputs["version"],
               canary_steps=[10, 50, 100], canary_min_requests=200, traffic_rps=50.0,
               serving_target=serving_target, **run).set_caching_options(False)
    # On Kubeflow every task gets the cluster's settings (MLflow, object storage) as env; kfp.local ignores this.
    attach_cluster_config()
    return OwnIngestOutputs(train_data=train_data, eval_data=eval_data, anomalies=validated.outputs["summary"],
                            model=trained.outputs["model"], eval_metrics=evaluated.outputs["metrics"],
                            model_card=registered.outputs["model_card"], decision=blessed.outputs["Output"],
                            model_uri=registered.outputs["model_uri"])


if __name__ == "__main__":
    compiler.Compiler().compile(own_ingest, sys.argv[1] if len(sys.argv) > 1 else "own_ingest.yaml")

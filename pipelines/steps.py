"""The steps from validated data to a deployed model, shared by the `training` and `continuous_training` pipelines.

`train_and_deploy` adds them to the pipeline being defined: the feature tables and their Feast
registration and materialization, the point-in-time training sets, `tune`, `train`, `evaluate`,
`bless`, `register`, and, inside `dsl.If(blessed)`, the canaried `deploy`. Both pipelines call it,
so what a scheduled retraining runs is exactly what a first training runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kfp import dsl

from slipway.components.blessing import BLESSED
from slipway.components.catalog import (
    bless,
    deploy,
    evaluate,
    feast_apply,
    feature_tables,
    materialize,
    register,
    train,
    training_set,
    tune,
)
from slipway.components.training_jobs import JobResources


@dataclasses.dataclass(frozen=True)
class TrainingTasks:
    """The tasks whose outputs a pipeline returns."""

    tuned: Any
    trained: Any
    evaluated: Any
    blessed: Any
    registered: Any


def train_and_deploy(
    *,
    ingested: Any,
    inferred: Any,
    validated: Any,
    problem: Any,
    tuner: Any,
    search_space: Any,
    max_trials: Any,
    architecture: Any,
    hidden_units: Any,
    dropout: Any,
    epochs: Any,
    learning_rate: Any,
    batch_size: Any,
    weight_decay: Any,
    patience: Any,
    seed: Any,
    processes: Any,
    launcher: Any,
    num_nodes: Any,
    gpus_per_node: Any,
    credentials_secret: Any,
    tracking_uri: Any,
    feature_repo: Any,
    threshold: Any,
    model_name: Any,
    min_auc: Any,
    max_auc_drop: Any,
    canary_steps: Any,
    canary_min_requests: Any,
    traffic_rps: Any,
    serving_target: Any,
) -> TrainingTasks:
    """Adds the steps after validation to the pipeline being defined: `ingested` is the ingest task, `inferred`
    the schema task and `validated` the validate task, which everything here waits for; the rest are the
    pipeline's parameters of the same names."""
    tables = feature_tables(train_data=ingested.outputs["train_data"], eval_data=ingested.outputs["eval_data"],
                            problem=problem).after(validated)
    store = {"feature_repo": feature_repo, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER}
    # The registry and the online store live outside the run: never cached.
    applied = feast_apply(tables=tables.outputs["tables"], problem=problem, **store).set_caching_options(False)
    materialize(tables=tables.outputs["tables"], problem=problem, registry=applied.output,
                **store).set_caching_options(False)
    # The training sets read the tables alone, not the registry: they run beside feast_apply and materialize.
    train_set = training_set(trips=ingested.outputs["train_data"], tables=tables.outputs["tables"],
                             problem=problem).set_display_name("train-set")
    eval_set = training_set(trips=ingested.outputs["eval_data"], tables=tables.outputs["tables"],
                            problem=problem).set_display_name("eval-set")
    # From here on the model sees the splits with their features, never the raw ones.
    train_data, eval_data = train_set.outputs["features"], eval_set.outputs["features"]
    hyperparameters = {"architecture": architecture, "hidden_units": hidden_units, "dropout": dropout,
                       "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
                       "weight_decay": weight_decay, "patience": patience}
    tuned = tune(train_data=train_data, problem=problem, tuner=tuner, search_space=search_space,
                 max_trials=max_trials, seed=seed, credentials_secret=credentials_secret, tracking_uri=tracking_uri,
                 pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                 **hyperparameters)
    trained = train(
        train_data=train_data,
        eval_data=eval_data,
        problem=problem,
        # The tuned values where the space searched a field, the pipeline's own elsewhere (or all, tuner=off).
        **{name: tuned.outputs[name] for name in hyperparameters},
        seed=seed,
        processes=processes,
        launcher=launcher,
        num_nodes=num_nodes,
        credentials_secret=credentials_secret,
        tracking_uri=tracking_uri,
        pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    # GPUs for each node of the TrainJob/PyTorchJob the task submits (its TaskConfig), not for the task's own pod.
    trained.set_accelerator_type(JobResources.gpu_resource).set_accelerator_limit(gpus_per_node)
    evaluated = evaluate(
        model=trained.outputs["model"],
        eval_data=eval_data,
        problem=problem,
        threshold=threshold,
    )
    registry = {"tracking_uri": tracking_uri, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER}
    # The champion can change between runs while every input here stays the same: never cached.
    blessed = bless(
        evaluation=evaluated.outputs["evaluation"],
        eval_data=eval_data,
        problem=problem,
        model_name=model_name,
        min_auc=min_auc,
        max_auc_drop=max_auc_drop,
        **registry,
    ).set_caching_options(False)
    registered = register(
        model=trained.outputs["model"],
        train_data=train_data,
        eval_data=eval_data,
        evaluation=evaluated.outputs["evaluation"],
        blessing=blessed.outputs["blessing"],
        schema=inferred.outputs["schema"],
        problem=problem,
        model_name=model_name,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        **registry,
    ).set_caching_options(False)
    with dsl.If(blessed.outputs["Output"] == BLESSED, name="blessed"):
        deploy(eval_data=eval_data, problem=problem, model_name=model_name,
               version=registered.outputs["version"], canary_steps=canary_steps,
               canary_min_requests=canary_min_requests, traffic_rps=traffic_rps, serving_target=serving_target,
               **registry).set_caching_options(False)
    return TrainingTasks(tuned=tuned, trained=trained, evaluated=evaluated, blessed=blessed, registered=registered)

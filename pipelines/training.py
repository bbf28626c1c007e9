"""The `training` pipeline: from a raw source to an evaluated model.

Read it top to bottom to follow one row of data: `ingest` types and time-splits the source,
`train` fits the model on the train split, `evaluate` judges it on the eval split (the future).
Later steps (validate, features, tune, register, deploy: DESIGN.md §1) slot in between
without changing these steps' contracts.
"""

from typing import NamedTuple

from kfp import dsl

from slipway.components.catalog import evaluate, ingest, train
from slipway.components.train_config import DEFAULT_PROCESSES, TrainConfig
from slipway.problem import DEFAULT_PROBLEM

DEFAULT_THRESHOLD = 0.5


class TrainingOutputs(NamedTuple):
    model: dsl.Model
    train_metrics: dsl.Metrics
    eval_metrics: dsl.Metrics


@dsl.pipeline(
    name="training",
    description="Ingest a CSV/Parquet source, train a model with DDP (tracked in MLflow) and evaluate it on a "
                "time-split eval set.",
)
def training(
    source_uri: str,
    problem: str = DEFAULT_PROBLEM,
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
    credentials_secret: str = "",
    tracking_uri: str = "",
    threshold: float = DEFAULT_THRESHOLD,
) -> TrainingOutputs:
    ingested = ingest(source_uri=source_uri, problem=problem)
    # The source behind a URI can change while the URI stays the same (`latest.csv`): never
    # let Kubeflow's cache answer for a fresh read.
    ingested.set_caching_options(False)
    trained = train(
        train_data=ingested.outputs["train_data"],
        eval_data=ingested.outputs["eval_data"],
        problem=problem,
        architecture=architecture,
        hidden_units=hidden_units,
        dropout=dropout,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        processes=processes,
        launcher=launcher,
        num_nodes=num_nodes,
        credentials_secret=credentials_secret,
        tracking_uri=tracking_uri,
        pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    evaluated = evaluate(
        model=trained.outputs["model"],
        eval_data=ingested.outputs["eval_data"],
        threshold=threshold,
    )
    return TrainingOutputs(
        model=trained.outputs["model"],
        train_metrics=trained.outputs["metrics"],
        eval_metrics=evaluated.outputs["metrics"],
    )

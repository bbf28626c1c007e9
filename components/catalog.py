"""The Slipway component catalogue: every `@dsl.component`, each a thin wrapper over library code.

A wrapper maps typed KFP artifacts and parameters onto one library call and records the result
as artifact metadata; all logic and all tests of logic live in the library modules beside this
one (`ingestion`, `baseline`, `evaluation`, ...). Bodies import what they need inside the
function, because KFP ships a component's body alone.

Why the wrappers live apart from the library: inside a running task KFP sets `_KFP_RUNTIME=true`,
and `kfp.dsl` then defines no `component` decorator, so a library module that also declared a
component could not be imported by a component body.

Every component runs on its runtime's image (`slipway.runtimes`) and is built with
`install_kfp_package=False`: the images carry kfp, and kfp.local then runs a task without a
pip install (about 0.1 s a task instead of about 1 s).
"""

from kfp import dsl

from slipway import runtimes


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def ingest(
    source_uri: str,
    problem: str,
    train_data: dsl.Output[dsl.Dataset],
    eval_data: dsl.Output[dsl.Dataset],
):
    """Reads a CSV/Parquet source by URI into typed train/eval Parquet Datasets, split by time."""
    from pathlib import Path

    from slipway import logs
    from slipway.components.ingestion import ingest_source
    from slipway.problem import load_problem

    logs.configure()
    result = ingest_source(source_uri, load_problem(problem), Path(train_data.path), Path(eval_data.path))
    train_data.metadata.update(result.metadata("train"))
    eval_data.metadata.update(result.metadata("eval"))


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def train(
    train_data: dsl.Input[dsl.Dataset],
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """Trains the baseline logistic regression; writes a safetensors + JSON Model and training Metrics."""
    from pathlib import Path

    from slipway import logs
    from slipway.components.baseline import TrainConfig, train_baseline
    from slipway.problem import load_problem

    logs.configure()
    config = TrainConfig(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed)
    lineage = {"train_data": train_data.uri, "data_sha256": train_data.metadata.get("sha256")}
    result = train_baseline(Path(train_data.path), Path(eval_data.path), load_problem(problem), config,
                            Path(model.path), lineage)
    model.metadata.update({"framework": "pytorch", "format": "safetensors", "architecture": "logistic_regression"})
    for name in ("train_loss", "eval_auc", "rows_per_second"):
        metrics.log_metric(name, round(getattr(result, name), 6))
    metrics.log_metric("train_rows", result.train_rows)


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    eval_data: dsl.Input[dsl.Dataset],
    threshold: float,
    metrics: dsl.Output[dsl.Metrics],
    classification_metrics: dsl.Output[dsl.ClassificationMetrics],
):
    """Evaluates a Model on the eval Dataset: scalar Metrics plus ROC curve and confusion matrix."""
    from pathlib import Path

    from slipway import logs
    from slipway.components.evaluation import evaluate_model

    logs.configure()
    result = evaluate_model(Path(model.path), Path(eval_data.path), threshold)
    for name, value in result.scalars().items():
        metrics.log_metric(name, round(value, 6))
    classification_metrics.log_roc_curve(result.roc_fpr, result.roc_tpr, result.roc_thresholds)
    classification_metrics.log_confusion_matrix(result.confusion_categories, result.confusion_matrix)

"""The Slipway component catalogue: every `@dsl.component`, each a thin wrapper over library code.

A wrapper maps typed KFP artifacts and parameters onto one library call and records the result
as artifact metadata; all logic and all tests of logic live in the library modules beside this
one (`ingestion`, `trainer`, `evaluation`, ...). Bodies import what they need inside the
function, because KFP ships a component's body alone.

Why the wrappers live apart from the library: inside a running task KFP sets `_KFP_RUNTIME=true`,
and `kfp.dsl` then defines no `component` decorator, so a library module that also declared a
component could not be imported by a component body.

Every component runs on its runtime's image (`slipway.runtimes`) and is built with
`install_kfp_package=False`: the images carry kfp, and kfp.local then runs a task without a
pip install (about 0.1 s a task instead of about 1 s).
"""

from typing import NamedTuple

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


# The validation steps run on the `tfdv` image on Kubeflow; locally their bodies run in core and call
# components/data_validation.py in the tfdv environment through slipway.runtime_call (DESIGN.md §3).
@dsl.component(base_image=runtimes.TFDV_IMAGE, install_kfp_package=False)
def statistics(
    train_data: dsl.Input[dsl.Dataset],
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    statistics: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
):
    """TFDV statistics of the train and eval splits (TFX's `Split-<split>/FeatureStats.pb` layout, each a
    DatasetFeatureStatisticsList) and a self-contained Facets Overview page comparing them."""
    from slipway import logs, runtime_call, runtimes

    logs.configure()
    result = runtime_call.call(runtimes.TFDV, "slipway.components.data_validation:generate_statistics",
                               splits={"train": train_data.path, "eval": eval_data.path},
                               output_dir=statistics.path, html_path=report.path, problem=problem)
    statistics.metadata.update({"format": "DatasetFeatureStatisticsList", "layout": "Split-<split>/FeatureStats.pb",
                                "splits": sorted(result["splits"]),
                                **{f"{split}_rows": info["rows"] for split, info in result["splits"].items()}})


@dsl.component(base_image=runtimes.TFDV_IMAGE, install_kfp_package=False)
def schema(
    statistics: dsl.Input[dsl.Artifact],
    problem: str,
    pinned_schema: str,
    schema: dsl.Output[dsl.Artifact],
):
    """Infers a schema from the train statistics and curates it from the problem's `validation` section, or
    uses the reviewed `pinned_schema` (a schema.pbtxt path or URI) after checking it parses."""
    import tempfile
    from pathlib import Path

    from slipway import logs, runtime_call, runtimes
    from slipway.storage import download, scheme_of

    logs.configure()
    with tempfile.TemporaryDirectory(prefix="slipway-schema-") as tmp:
        pinned = pinned_schema
        if pinned_schema and scheme_of(pinned_schema) != "file":
            pinned = str(Path(tmp) / "schema.pbtxt")
            download(pinned_schema, Path(pinned))
        result = runtime_call.call(runtimes.TFDV, "slipway.components.data_validation:infer_schema",
                                   statistics_dir=statistics.path, split="train", schema_path=schema.path,
                                   problem=problem, pinned_schema=pinned)
    schema.metadata.update({"format": "schema.pbtxt", "features": result["features"],
                            "source": pinned_schema or "inferred from the train statistics"})


@dsl.component(base_image=runtimes.TFDV_IMAGE, install_kfp_package=False)
def validate(
    statistics: dsl.Input[dsl.Artifact],
    schema: dsl.Input[dsl.Artifact],
    problem: str,
    anomalies: dsl.Output[dsl.Artifact],
    summary: dsl.Output[dsl.Markdown],
    metrics: dsl.Output[dsl.Metrics],
):
    """Validates the eval split's statistics against the schema and its drift from the train split (TFX's
    ExampleValidator): an anomalies.pbtxt, a Markdown list of the anomalies and their count by severity.
    Anomalies fail the step, naming the features, unless the problem sets validation.fail_on_anomalies: false."""
    import logging
    from pathlib import Path

    from slipway import logs, runtime_call, runtimes
    from slipway.components.validation_report import ValidationResult, gate
    from slipway.problem import load_problem

    logs.configure()
    result = ValidationResult.from_json(runtime_call.call(
        runtimes.TFDV, "slipway.components.data_validation:validate_statistics",
        statistics_dir=statistics.path, split="eval", schema_path=schema.path, anomalies_path=anomalies.path,
        problem=problem, baseline_dir=statistics.path, baseline_split="train", comparison="drift"))
    Path(summary.path).write_text(result.markdown())
    for severity, count in result.counts().items():
        metrics.log_metric(f"anomalies_{severity}", count)
    anomalies.metadata.update({"format": "anomalies.pbtxt", "features": result.features})
    logging.getLogger("slipway.validate").info(result.headline())
    gate(result, load_problem(problem).validation.fail_on_anomalies)


@dsl.component(
    base_image=runtimes.CORE_IMAGE,
    install_kfp_package=False,
    # Resources, tolerations and node selector set on the task (`.set_accelerator_limit(1)`, ...) reach the
    # body, which gives them to each node of the TrainJob/PyTorchJob, not to the task's own pod: that pod only
    # submits and waits, and a GPU held by it would sit idle. Env set on the task reaches both.
    task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES,
        dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
        dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    ],
)
def train(
    train_data: dsl.Input[dsl.Dataset],
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    pipeline_root: str,
    pipeline_run_id: str,
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    # TrainConfig's defaults, written out: KFP ships this function's source alone, so a default must be a literal
    # (tests/test_component_yamls.py keeps them equal to TrainConfig's).
    architecture: str = "mlp",
    hidden_units: list = [64, 32],  # noqa: B006 - KFP records the default in the IR
    dropout: float = 0.1,
    epochs: int = 20,
    learning_rate: float = 0.006,
    batch_size: int = 1024,
    weight_decay: float = 0.0001,
    patience: int = 4,
    seed: int = 0,
    processes: int = 2,
    launcher: str = "torchrun",
    num_nodes: int = 1,
    credentials_secret: str = "",
    tracking_uri: str = "",
    task_config: dsl.TaskConfig = None,
) -> NamedTuple("TrainOutputs", [("mlflow_run_id", str)]):
    """Trains the model with DDP, tracked in MLflow; writes a safetensors + JSON Model and training Metrics.

    `launcher`: `torchrun` runs `processes` processes in this task; `trainjob`, `pytorchjob` or `auto`
    submit a Kubeflow Trainer TrainJob / Training Operator PyTorchJob of `num_nodes` nodes that reads
    and writes the artifacts by URI, on the train-gpu image when the task asks for GPUs (they go to each
    node), with the cluster's settings and the task's env (`credentials_secret` names the object-storage
    Secret, default `slipway-storage`). An empty `tracking_uri` means MLFLOW_TRACKING_URI, else an
    embedded SQLite store under the pipeline root.
    """
    from pathlib import Path

    from slipway import logs
    from slipway.components import training_jobs
    from slipway.components.launcher import cluster_job_spec, run_cluster_training, run_local_training
    from slipway.components.tracking import TrackingConfig
    from slipway.components.train_config import TrainConfig
    from slipway.components.trainer import Lineage, trainer_arguments
    from slipway.metric_values import require_finite

    logs.configure()
    config = TrainConfig(architecture=architecture, hidden_units=tuple(int(u) for u in hidden_units), dropout=dropout,
                         epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                         weight_decay=weight_decay, patience=patience, seed=seed)
    tracking = TrackingConfig.resolve(tracking_uri, pipeline_root)
    lineage = Lineage(data_sha256=train_data.metadata.get("sha256"), pipeline_run_id=pipeline_run_id,
                      train_data=train_data.uri)
    if launcher == "torchrun":
        if training_jobs.resources_from_task_config(task_config).gpus:
            raise ValueError("the task asks for GPUs, which go to a TrainJob/PyTorchJob's nodes: set launcher to "
                             "trainjob, pytorchjob or auto (torchrun trains in this task's pod, on CPU)")
        checkpoints = Path(model.path).parent / "checkpoints"
        result = run_local_training(trainer_arguments(train_data.path, eval_data.path, model.path, str(checkpoints),
                                                      problem, config, tracking, lineage), processes)
    else:
        result_uri = f"{model.uri}.result.json"
        args = trainer_arguments(train_data.uri, eval_data.uri, model.uri, "/tmp/slipway-checkpoints", problem,
                                 config, tracking, lineage)
        spec = cluster_job_spec(training_jobs.job_name("slipway-train", f"{pipeline_run_id}/{model.uri}"), args,
                                result_uri, num_nodes=num_nodes, processes=processes, task_config=task_config,
                                tracking_uri=tracking.tracking_uri, credentials_secret=credentials_secret)
        result = run_cluster_training(launcher, spec, result_uri)
    require_finite({"eval_auc": result.eval_auc, "train_loss": result.train_loss}, "train",
                   "the training diverged (try a lower learning_rate) or never improved on its first eval AUC")
    model.metadata.update({"framework": "pytorch", "format": "safetensors", "architecture": architecture,
                           "mlflow_run_id": result.mlflow_run_id, "mlflow_tracking_uri": tracking.tracking_uri})
    metrics.log_metric("eval_auc", round(result.eval_auc, 6))
    metrics.log_metric("train_loss", round(result.train_loss, 6))
    metrics.log_metric("rows_per_second", round(result.rows_per_second, 1))
    for name in ("best_epoch", "epochs_run", "train_rows", "world_size"):
        metrics.log_metric(name, getattr(result, name))
    return (result.mlflow_run_id or "",)


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def tune(
    train_data: dsl.Input[dsl.Dataset],
    problem: str,
    pipeline_root: str,
    pipeline_run_id: str,
    trials: dsl.Output[dsl.Markdown],
    best_params: dsl.Output[dsl.Metrics],
    # Literals, as `train`'s (tests/test_component_yamls.py keeps them equal to TrainConfig's and the packaged space).
    tuner: str = "optuna",
    search_space: str = "default",
    max_trials: int = 0,
    architecture: str = "mlp",
    hidden_units: list = [64, 32],  # noqa: B006 - KFP records the default in the IR
    dropout: float = 0.1,
    epochs: int = 20,
    learning_rate: float = 0.006,
    batch_size: int = 1024,
    weight_decay: float = 0.0001,
    patience: int = 4,
    seed: int = 0,
    credentials_secret: str = "",
    tracking_uri: str = "",
) -> NamedTuple("TunedConfig", [("architecture", str), ("hidden_units", list), ("dropout", float), ("epochs", int),
                                ("learning_rate", float), ("batch_size", int), ("weight_decay", float),
                                ("patience", int)]):
    """Searches the hyperparameters that `train` then uses: the given ones, with every searched field replaced
    by the best trial's value. Trials fit on the train split's older rows and are judged on its newest.

    `tuner`: `optuna` runs the search space as a study in this task (each trial an MLflow child run of the
    study's run); `katib` runs it as a Katib Experiment (trials on the core image, data by URI under this
    step's artifacts, `credentials_secret` for object storage) and follows it; `off` hands the given
    hyperparameters on. `search_space` is a packaged name or a YAML path; `max_trials` > 0 overrides its budget.
    """
    import dataclasses
    from pathlib import Path

    from slipway import logs
    from slipway.components.train_config import TrainConfig
    from slipway.components.tuners import checked_tuner, untuned
    from slipway.metric_values import finite_metrics

    logs.configure()
    base = TrainConfig(architecture=architecture, hidden_units=tuple(int(u) for u in hidden_units), dropout=dropout,
                       epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, weight_decay=weight_decay,
                       patience=patience, seed=seed)
    if checked_tuner(tuner) == "off":
        # Nothing to search: none of Optuna, MLflow, torch or Kubernetes is imported (seconds of start-up).
        outcome = untuned(base)
    else:
        import tempfile

        from slipway import runtimes
        from slipway.components import custom_objects, training_jobs
        from slipway.components.search_space import load_search_space
        from slipway.components.tracking import TrackingConfig
        from slipway.components.trainer import Lineage
        from slipway.components.tuning import KatibTarget, tune_training
        from slipway.problem import load_problem

        space = load_search_space(search_space)
        if max_trials > 0:
            space = space.with_max_trials(max_trials)
        katib, api = None, None
        if tuner == "katib":
            katib = KatibTarget(image=runtimes.CORE_IMAGE, namespace=custom_objects.pod_namespace(),
                                experiment_name=training_jobs.job_name("slipway-tune",
                                                                       f"{pipeline_run_id}/{trials.uri}"),
                                storage_uri=f"{trials.uri}.katib", problem=problem,
                                credentials_secret=credentials_secret)
            api = custom_objects.kube_client()
        with tempfile.TemporaryDirectory(prefix="slipway-tune-") as workdir:
            outcome = tune_training(
                tuner, space, Path(train_data.path), load_problem(problem), Path(workdir), base,
                TrackingConfig.resolve(tracking_uri, pipeline_root),
                Lineage(data_sha256=train_data.metadata.get("sha256"), pipeline_run_id=pipeline_run_id,
                        train_data=train_data.uri), katib, api)
    Path(trials.path).write_text(outcome.markdown)
    for name, value in finite_metrics(outcome.metrics, "tune").items():
        best_params.log_metric(name, value)
    chosen = dataclasses.asdict(outcome.config)
    return (chosen["architecture"], list(chosen["hidden_units"]), chosen["dropout"], chosen["epochs"],
            chosen["learning_rate"], chosen["batch_size"], chosen["weight_decay"], chosen["patience"])


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    threshold: float,
    metrics: dsl.Output[dsl.Metrics],
    classification_metrics: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.HTML],
    evaluation: dsl.Output[dsl.Artifact],
):
    """Evaluates a Model on the eval Dataset: Metrics, ROC and confusion matrix, an HTML report with
    calibration and per-slice metrics, and the full evaluation as JSON for the blessing gate and model card."""
    from pathlib import Path

    from slipway import logs
    from slipway.components.evaluation import evaluate_model, save_evaluation
    from slipway.components.evaluation_report import write_report
    from slipway.metric_values import finite_metrics
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    result = evaluate_model(Path(model.path), Path(eval_data.path), loaded, threshold)
    for name, value in finite_metrics(result.scalars(), "evaluate").items():
        metrics.log_metric(name, round(value, 6))
    classification_metrics.log_roc_curve(result.roc_fpr, result.roc_tpr, result.roc_thresholds)
    classification_metrics.log_confusion_matrix(result.confusion_categories, result.confusion_matrix)
    write_report(result, Path(report.path), title=f"{loaded.name}: evaluation on {eval_data.uri}")
    save_evaluation(result, Path(evaluation.path))
    evaluation.metadata.update({"auc": result.auc, "rows": result.rows, "eval_data": eval_data.uri})


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def bless(
    evaluation: dsl.Input[dsl.Artifact],
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    model_name: str,
    min_auc: float,
    max_auc_drop: float,
    tracking_uri: str,
    pipeline_root: str,
    blessing: dsl.Output[dsl.Artifact],
    blessing_report: dsl.Output[dsl.Markdown],
) -> str:
    """The gate: AUC at least `min_auc` and at most `max_auc_drop` below the registry's champion, which is
    scored here on the same eval Dataset. Returns the decision, `blessed` or `refused`, for the pipeline to
    branch on; the reasons are in the `blessing` JSON and the `blessing_report` Markdown.

    The decision is the single, unnamed output (`Output`) on purpose: kfp.local 2.17 resolves a `dsl.If`
    on a task's `Output` but not on a named output of a NamedTuple.
    """
    from pathlib import Path

    from slipway import logs
    from slipway.components.blessing import BlessingPolicy, bless, save_decision
    from slipway.components.evaluation import load_evaluation
    from slipway.components.registration import registered_model_name
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    registry = ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, pipeline_root).tracking_uri)
    decision = bless(load_evaluation(Path(evaluation.path)), Path(eval_data.path), loaded,
                     BlessingPolicy(min_auc=min_auc, max_auc_drop=max_auc_drop), registry,
                     registered_model_name(model_name, loaded))
    save_decision(decision, Path(blessing.path))
    blessing.metadata.update({"decision": decision.label, "champion_version": decision.champion_version or ""})
    Path(blessing_report.path).write_text(decision.markdown())
    return decision.label


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def register(
    model: dsl.Input[dsl.Model],
    train_data: dsl.Input[dsl.Dataset],
    eval_data: dsl.Input[dsl.Dataset],
    evaluation: dsl.Input[dsl.Artifact],
    blessing: dsl.Input[dsl.Artifact],
    schema: dsl.Input[dsl.Artifact],
    problem: str,
    model_name: str,
    tracking_uri: str,
    pipeline_root: str,
    pipeline_run_id: str,
    model_card: dsl.Output[dsl.Markdown],
) -> NamedTuple("RegisterOutputs", [("model_uri", str), ("version", str)]):
    """Registers the Model as a new MLflow version (alias `challenger`), blessed or not, with lineage tags
    and a model card, which is also logged beside the weights. `model_uri` is `models:/name/version`."""
    from pathlib import Path

    from slipway import logs
    from slipway.components.blessing import load_decision
    from slipway.components.evaluation import load_evaluation
    from slipway.components.registration import DataLineage, register_model, registered_model_name
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    registry = ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, pipeline_root).tracking_uri)
    data = DataLineage(train_uri=train_data.uri, eval_uri=eval_data.uri, data_sha256=train_data.metadata.get("sha256"),
                       schema_uri=schema.uri, pipeline_run_id=pipeline_run_id)
    version, card = register_model(registry, registered_model_name(model_name, loaded), Path(model.path), loaded,
                                   load_evaluation(Path(evaluation.path)), load_decision(Path(blessing.path)), data)
    Path(model_card.path).write_text(card)
    model_card.metadata.update({"model_uri": version.uri})
    return (version.uri, version.version)


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def promote(
    problem: str,
    model_name: str,
    version: str,
    tracking_uri: str,
    pipeline_root: str,
) -> NamedTuple("PromoteOutputs", [("previous_champion", str)]):
    """Moves the `champion` alias to `version`; the champion it replaces is recorded for rollback."""
    from slipway import logs
    from slipway.components.registration import registered_model_name
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig
    from slipway.problem import load_problem

    logs.configure()
    registry = ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, pipeline_root).tracking_uri)
    move = registry.promote(registered_model_name(model_name, load_problem(problem)), version)
    return (move.previous or "",)


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def deploy(
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    model_name: str,
    version: str,
    canary_steps: list,
    canary_min_requests: int,
    traffic_rps: float,
    tracking_uri: str,
    pipeline_root: str,
    report: dsl.Output[dsl.Markdown],
    rollout: dsl.Output[dsl.Artifact],
    serving_target: str = "local",
) -> str:
    """Deploys registered `version` on `serving_target`: "local", a real KServe model server in this task, or
    "kserve", a KServe InferenceService in this pod's namespace (serving/cluster_deploy.py). Either way it
    smoke-tests the model, canaries it against the champion on replayed eval traffic (`canary_steps` percent, at
    least `canary_min_requests` canary requests a step) and promotes it to champion only if every step passes.
    Returns `promoted` or `rolled_back`."""
    import json
    import tempfile
    from pathlib import Path

    import pandas as pd

    from slipway import logs
    from slipway.components.registration import registered_model_name
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig
    from slipway.problem import load_problem
    from slipway.serving.canary import AnalysisPolicy
    from slipway.serving.cluster_deploy import checked_serving_target, deploy_to
    from slipway.serving.deploy import LocalDeployConfig

    logs.configure()
    checked_serving_target(serving_target)
    name = registered_model_name(model_name, load_problem(problem))
    registry = ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, pipeline_root).tracking_uri)
    config = LocalDeployConfig(name=name, steps=tuple(int(p) for p in canary_steps), traffic_rps=traffic_rps,
                               policy=AnalysisPolicy(min_requests=canary_min_requests))
    with tempfile.TemporaryDirectory(prefix="slipway-deploy-") as workdir:
        result = deploy_to(serving_target, registry, name, version, pd.read_parquet(eval_data.path), config,
                           Path(workdir))
    Path(report.path).write_text(result.markdown())
    Path(rollout.path).write_text(json.dumps({"outcome": result.outcome, "model_uri": f"models:/{name}/{version}",
                                              "canary": result.rollout.to_dict() if result.rollout else None},
                                             indent=2))
    rollout.metadata.update({"outcome": result.outcome, "model_uri": f"models:/{name}/{version}"})
    return result.outcome


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def champion(
    problem: str,
    model_name: str,
    tracking_uri: str,
    pipeline_root: str,
    reference: dsl.Output[dsl.Dataset],
    model: dsl.Output[dsl.Model],
) -> NamedTuple("Champion", [("model_uri", str), ("schema_uri", str), ("eval_auc", float)]):
    """The registry's champion: its model (the registered artifact's files) as a Model, which drift scores both
    sides with, and the training set it was fitted on (from its lineage tags) as a Dataset, the reference that drift
    is measured against. `schema_uri` is the schema its data was validated against, `eval_auc` its AUC on its eval
    split when registered (0.0 when not recorded), the baseline its live AUC is judged against."""
    import shutil
    import tempfile
    from pathlib import Path

    from slipway import logs
    from slipway.components.registration import champion_lineage, registered_model_name
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig
    from slipway.problem import load_problem
    from slipway.storage import download

    logs.configure()
    registry = ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, pipeline_root).tracking_uri)
    lineage = champion_lineage(registry, registered_model_name(model_name, load_problem(problem)))
    sha256 = download(lineage.train_data, Path(reference.path))
    reference.metadata.update({"model_uri": lineage.model_uri, "source": lineage.train_data, "sha256": sha256})
    with tempfile.TemporaryDirectory(prefix="slipway-champion-") as tmp:
        shutil.copytree(registry.download(registry.resolve(lineage.model_uri), Path(tmp)), Path(model.path),
                        dirs_exist_ok=True)
    model.metadata.update({"model_uri": lineage.model_uri})
    return (lineage.model_uri, lineage.schema_uri, lineage.eval_auc or 0.0)


# On Kubeflow the drift step runs on the `drift` image (alibi-detect in-process); locally its body runs in core
# and calls components/drift_detectors.py in the drift environment through slipway.runtime_call.
@dsl.component(base_image=runtimes.DRIFT_IMAGE, install_kfp_package=False)
def drift(
    reference: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    current: dsl.Input[dsl.Dataset],
    problem: str,
    alpha: float,
    correction: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
) -> str:
    """How far `current` (a CSV/Parquet file, or `batch_predict`'s predictions) has moved from `reference` (CSV or
    Parquet, with the features `model` reads: its training set, as `champion` gives it), per
    feature and in `model`'s scores (the `prediction` row): PSI and a KS or Chi-squared test (alibi-detect),
    p-values corrected (`bonferroni` or `fdr`) at `alpha`. Writes per-feature PSI and p-values as Metrics and an
    HTML report with each feature's shares per bin; returns the level, `none`, `warning` or `critical`, for the
    pipeline to branch on. Predictions are judged as the online monitor judges served traffic: their logged scores
    against `model`'s on the reference. A raw batch without the Feast features the model reads cannot be scored:
    `prediction` says so, and which."""
    import logging
    import tempfile
    from pathlib import Path

    from slipway import logs
    from slipway.components.drift_detection import DriftConfig, current_table, detect_drift, drift_table
    from slipway.components.drift_report import write_drift_report
    from slipway.components.model_artifact import load_model
    from slipway.metric_values import finite_metrics
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    scorer = load_model(Path(model.path))
    with tempfile.TemporaryDirectory(prefix="slipway-drift-") as tmp:
        baseline = drift_table(reference.path, loaded, Path(tmp) / "reference.parquet", "reference",
                               extra=scorer.preprocessing.numeric)
        table, logged = current_table(current.path, loaded, Path(tmp) / "current.parquet",
                                      extra=scorer.preprocessing.numeric)
        result = detect_drift(baseline, table, loaded.features.numeric, loaded.features.categorical,
                              DriftConfig(alpha=alpha, correction=correction), model=scorer,
                              model_name=f"the champion ({model.metadata.get('model_uri') or model.uri})",
                              current_scores=logged)
    for name, value in finite_metrics(result.metrics(), "drift").items():
        metrics.log_metric(name, value)
    source = current.metadata.get("source") or current.uri
    write_drift_report(result, Path(report.path), f"Drift of {source} from the champion's training data")
    logging.getLogger("slipway.drift").info("drift: %s\n%s", result.level, result.table())
    return result.level


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def batch_predict(
    data: dsl.Input[dsl.Dataset],
    model_uri: str,
    problem: str,
    join_features: bool,
    feature_repo: str,
    tracking_uri: str,
    pipeline_root: str,
    pipeline_run_id: str,
    predictions: dsl.Output[dsl.Dataset],
    rejects: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
) -> NamedTuple("BatchPredictOutputs", [("model_version", str)]):
    """Scores every row of `data` (CSV or Parquet) with the model at `model_uri` (`models:/NAME@champion`, a
    registry version, or an s3://, gs:// or local model folder), streaming it in chunks, into `predictions`: Parquet
    parts, each row with its `score`, `model_version` and `run_id` (`pipeline_run_id`), written all at once or not at
    all. With `join_features`, each row first gets its point-in-time Feast features as of its own timestamp, the
    training sets' join (`feature_repo` empty: SLIPWAY_FEAST_* from the environment, else the embedded store under
    the pipeline root); without it, `data` holds them already. Rows that cannot be scored go to `rejects` with a
    `reason`; counts, per reason too, go to `metrics`. `tracking_uri` is the registry's, as for `register`."""
    import contextlib
    import shutil

    from slipway import logs
    from slipway.components import feature_store
    from slipway.components.batch_prediction import feature_join, predict_batch
    from slipway.components.tracking import TrackingConfig
    from slipway.problem import load_problem

    logs.configure()
    with contextlib.ExitStack() as stack:
        join = None
        if join_features:
            config = feature_store.StoreConfig.for_pipeline(feature_repo, pipeline_root)
            join = stack.enter_context(feature_join(config, load_problem(problem)))
        result = predict_batch(data.path, model_uri, predictions.path, run_id=pipeline_run_id, join=join,
                               tracking_uri=TrackingConfig.resolve(tracking_uri, pipeline_root).tracking_uri)
    shutil.copyfile(result.rejects, rejects.path)
    predictions.metadata.update({"format": "parquet-dataset", "model_uri": model_uri,
                                 "model_version": result.model_version, "run_id": result.run_id,
                                 "rows": result.scored, "parts": result.parts,
                                 "source": data.metadata.get("source") or data.uri})
    rejects.metadata.update({"format": "parquet", "rows": result.rejected, "reasons": result.rejects_by_reason})
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    return (result.model_version,)


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def retrain_trigger(
    drift_level: str,
    retrain_at: str,
    baseline_auc: float,
    prediction_log: str,
    labels_uri: str,
    max_auc_drop_percent: float,
    feedback: dsl.Output[dsl.Metrics],
) -> str:
    """Whether the continuous-training run retrains, and why: at `retrain_at` drift, or when the champion's live AUC
    (late labels at `labels_uri` joined by request id to its `prediction_log`) fell more than `max_auc_drop_percent`
    below `baseline_auc`, its eval AUC at registration. Returns `none`, or the reasons (`critical drift`, `live AUC
    drop`) joined by ` and `. Without a log and labels, drift alone decides; the live AUC goes into `feedback`."""
    import logging

    from slipway import logs
    from slipway.components.feedback import NO_RETRAINING, FeedbackPolicy, judge_live_performance, retrain_reason
    from slipway.metric_values import finite_metrics

    logs.configure()
    performance = None
    if prediction_log and labels_uri:
        if not baseline_auc:
            raise ValueError("baseline_auc is 0: the champion's registry version records no eval AUC "
                             "(slipway.eval.auc), so its live AUC has nothing to be judged against")
        performance = judge_live_performance(prediction_log, labels_uri, baseline_auc,
                                             FeedbackPolicy(max_drop_percent=max_auc_drop_percent))
        for name, value in finite_metrics(performance.metrics(), "retrain_trigger").items():
            feedback.log_metric(name, value)
        logging.getLogger("slipway.feedback").info("%s", performance.summary())
    reason = retrain_reason(drift_level, performance, retrain_at)
    feedback.log_metric("retrain", float(reason != NO_RETRAINING))
    logging.getLogger("slipway.feedback").info("retrain: %s", reason)
    return reason


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def feature_tables(
    train_data: dsl.Input[dsl.Dataset],
    eval_data: dsl.Input[dsl.Dataset],
    problem: str,
    tables: dsl.Output[dsl.Artifact],
):
    """The batch feature step: per-entity, time-windowed aggregates of every trip (train and eval), each from
    trips strictly before its own time, as one Parquet table per entity (Feast's offline store)."""
    from pathlib import Path

    from slipway import logs
    from slipway.components.feature_aggregates import feature_columns, write_feature_tables
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    written = write_feature_tables([Path(train_data.path), Path(eval_data.path)], loaded, Path(tables.path))
    tables.metadata.update({"entities": sorted(written), "features": feature_columns(loaded)})


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def feast_apply(
    tables: dsl.Input[dsl.Artifact],
    problem: str,
    feature_repo: str,
    pipeline_root: str,
) -> str:
    """Registers the problem's Feast entities and feature views over `tables`; returns the registry location.
    `feature_repo` empty: SLIPWAY_FEAST_* from the environment, else an embedded store under the pipeline root."""
    from pathlib import Path

    from slipway import logs
    from slipway.components import feature_store
    from slipway.components.feature_aggregates import feature_table_paths
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    config = feature_store.StoreConfig.for_pipeline(feature_repo, pipeline_root)
    store = feature_store.open_store(config, loaded)
    feature_store.apply(store, loaded, feature_table_paths(loaded, Path(tables.path)))
    return config.registry_location


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def materialize(
    tables: dsl.Input[dsl.Artifact],
    problem: str,
    registry: str,
    feature_repo: str,
    pipeline_root: str,
):
    """Loads the newest feature rows, up to the latest trip in `tables`, into the online store (incremental).
    `registry` (feast_apply's answer) orders this step after the views are registered."""
    from pathlib import Path

    import pandas as pd

    from slipway import logs
    from slipway.components import feature_store
    from slipway.components.feature_aggregates import EVENT_TIMESTAMP, feature_table_paths
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    config = feature_store.StoreConfig.for_pipeline(feature_repo, pipeline_root)
    end = max(pd.read_parquet(path, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP].max()
              for path in feature_table_paths(loaded, Path(tables.path)).values())
    feature_store.materialize(feature_store.open_store(config, loaded), end.to_pydatetime())


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def training_set(
    trips: dsl.Input[dsl.Dataset],
    tables: dsl.Input[dsl.Artifact],
    problem: str,
    features: dsl.Output[dsl.Dataset],
):
    """The trips with every feature of `tables` (feature_tables' artifact) joined as of each trip's own time (point
    in time, no later), as a Dataset, joined on DuckDB a chunk at a time (bounded memory); rows whose entity's latest
    feature row is older than the TTL are dropped, as Feast's file store did. The views are read from the problem as
    feast_apply registers them, so this step neither imports Feast nor waits for its registry."""
    from pathlib import Path

    from slipway import logs
    from slipway.components import feature_store
    from slipway.problem import load_problem

    logs.configure()
    loaded = load_problem(problem)
    with feature_store.point_in_time_join_from_tables(loaded, Path(tables.path)) as join:
        rows, kept, columns = feature_store.write_joined_training_set(join, loaded, Path(trips.path),
                                                                      Path(features.path))
    # The trips' own lineage (source, sha256, split) carries over: the model's lineage reads it from here.
    features.metadata.update({**trips.metadata, "rows": kept, "dropped_rows": rows - kept, "columns": columns,
                              "features": feature_store.feature_refs(loaded)})

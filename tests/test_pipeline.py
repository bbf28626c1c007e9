"""The training pipeline compiles to KFP IR that Kubeflow accepts, and that IR runs locally on real data."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2
from mlflow.tracking import MlflowClient

from slipway import runtimes
from slipway.components.batch_scoring import read_predictions
from slipway.components.model_artifact import load_model
from slipway.components.tracking import TrackingConfig
from slipway.pipelines.cli import _summary
from slipway.pipelines.compile import compile_pipelines
from slipway.pipelines.local import LocalRun, run_local
from slipway.sample_data import SAMPLE_FILES
from slipway.serving.deploy import json_instances
from slipway.serving.prediction_log import PredictionLogConfig, PredictionLogger


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [path] = compile_pipelines(tmp_path_factory.mktemp("dist"), ["training"])
    return path


def pipeline_ir(path: Path) -> dict:
    """A compiled pipeline's IR: the file's first document (the second is its Kubernetes platform spec)."""
    return next(yaml.safe_load_all(path.read_text()))


def test_the_ir_parses_strictly_as_a_kfp_pipeline_spec(compiled: Path) -> None:
    # ParseDict refuses any field the PipelineSpec proto does not define.
    spec = json_format.ParseDict(pipeline_ir(compiled), pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "training"
    assert set(spec.root.input_definitions.parameters) == {
        "source_uri", "problem", "pinned_schema", "tuner", "search_space", "max_trials", "architecture",
        "hidden_units", "dropout", "epochs", "learning_rate", "batch_size", "weight_decay", "patience", "seed",
        "processes", "launcher", "num_nodes", "gpus_per_node", "credentials_secret", "tracking_uri", "feature_repo",
        "threshold", "model_name", "min_auc", "max_auc_drop", "canary_steps", "canary_min_requests", "traffic_rps",
        "serving_target"}
    assert set(spec.root.output_definitions.artifacts) == {
        "statistics_report", "anomalies", "tuning_trials", "best_params", "model", "train_metrics", "eval_metrics",
        "eval_report", "model_card"}
    assert set(spec.root.output_definitions.parameters) == {"decision", "model_uri"}


def test_the_dag_runs_ingest_train_evaluate_bless_register_and_deploys_only_when_blessed(compiled: Path) -> None:
    spec = json_format.ParseDict(pipeline_ir(compiled), pipeline_spec_pb2.PipelineSpec())
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"ingest", "statistics", "schema", "validate", "feature-tables", "feast-apply", "materialize",
                          "training-set", "training-set-2",
                          "tune", "train", "evaluate", "bless", "register", "condition-1"}
    # Validation gates everything after ingest: the feature tables (and so all else) wait for it.
    assert set(tasks["statistics"].dependent_tasks) == {"ingest"}
    assert set(tasks["validate"].dependent_tasks) == {"statistics", "schema"}
    assert set(tasks["feature-tables"].dependent_tasks) == {"ingest", "validate"}
    assert tasks["register"].inputs.artifacts["schema"].task_output_artifact.producer_task == "schema"
    assert set(tasks["feast-apply"].dependent_tasks) == {"feature-tables"}
    assert set(tasks["materialize"].dependent_tasks) == {"feature-tables", "feast-apply"}
    # The training sets join the feature tables without Feast's registry: they run beside feast_apply.
    assert set(tasks["training-set"].dependent_tasks) == {"ingest", "feature-tables"}
    assert set(tasks["training-set-2"].dependent_tasks) == {"ingest", "feature-tables"}
    # Tuning sees the train training set only (its own time holdout inside); the eval set judges the model alone.
    assert set(tasks["tune"].dependent_tasks) == {"training-set"}
    assert set(tasks["train"].dependent_tasks) == {"training-set", "training-set-2", "tune"}
    for name in ("architecture", "hidden_units", "dropout", "epochs", "learning_rate", "batch_size", "weight_decay",
                 "patience"):
        tuned = tasks["train"].inputs.parameters[name].task_output_parameter
        assert (tuned.producer_task, tuned.output_parameter_key) == ("tune", name)
    assert set(tasks["evaluate"].dependent_tasks) == {"training-set-2", "train"}
    # The model only ever sees the splits joined with their point-in-time features, never the raw ones.
    sets = {task: tasks[task].inputs.artifacts["trips"].task_output_artifact.output_artifact_key
            for task in ("training-set", "training-set-2")}
    assert sets == {"training-set": "train_data", "training-set-2": "eval_data"}
    assert tasks["train"].inputs.artifacts["train_data"].task_output_artifact.producer_task == "training-set"
    evaluate_inputs = tasks["evaluate"].inputs.artifacts
    assert evaluate_inputs["eval_data"].task_output_artifact.producer_task == "training-set-2"
    assert evaluate_inputs["model"].task_output_artifact.producer_task == "train"
    assert tasks["bless"].inputs.artifacts["evaluation"].task_output_artifact.producer_task == "evaluate"
    assert tasks["register"].inputs.artifacts["blessing"].task_output_artifact.producer_task == "bless"
    condition = tasks["condition-1"]
    assert condition.trigger_policy.condition == "inputs.parameter_values['pipelinechannel--bless-Output'] == 'blessed'"
    assert set(spec.components[condition.component_ref.name].dag.tasks) == {"deploy"}


def test_train_forwards_the_tasks_gpus_to_the_cluster_jobs_nodes_and_keeps_none_for_its_own_pod(
        compiled: Path) -> None:
    ir = pipeline_ir(compiled)
    component = ir["components"]["comp-train"]
    assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    forwarded = {p["field"]: p.get("applyToTask", False) for p in component["taskConfigPassthroughs"]}
    # Resources go to the job's nodes only (the task's pod just waits); env reaches both.
    assert forwarded == {"RESOURCES": False, "KUBERNETES_TOLERATIONS": False, "KUBERNETES_NODE_SELECTOR": False,
                         "ENV": True}
    accelerator = ir["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}"
    assert ir["root"]["inputDefinitions"]["parameters"]["gpus_per_node"]["defaultValue"] == 0


def test_ingest_is_never_cached_because_its_source_can_change_behind_the_same_uri(compiled: Path) -> None:
    spec = json_format.ParseDict(pipeline_ir(compiled), pipeline_spec_pb2.PipelineSpec())
    assert spec.root.dag.tasks["ingest"].caching_options.enable_cache is False
    assert spec.root.dag.tasks["train"].caching_options.enable_cache is True
    # The registries (MLflow's, Feast's) and the online store change between runs while their inputs stay the same.
    for task in ("bless", "register", "feast-apply", "materialize"):
        assert spec.root.dag.tasks[task].caching_options.enable_cache is False, task
    # A training set is its trips and feature tables joined, nothing outside the run: a cache may answer for it.
    for task in ("training-set", "training-set-2"):
        assert spec.root.dag.tasks[task].caching_options.enable_cache is True, task


def test_every_executor_runs_its_runtimes_image_without_installing_anything(compiled: Path) -> None:
    executors = pipeline_ir(compiled)["deploymentSpec"]["executors"]
    assert len(executors) == 15
    tfdv_steps = {"exec-statistics", "exec-schema", "exec-validate"}
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == (runtimes.TFDV_IMAGE if name in tfdv_steps else runtimes.CORE_IMAGE), name
        command = " ".join(container["command"])
        assert "kfp.dsl.executor_main" in command, name
        assert "pip install" not in command, f"{name} would pip-install at run time"


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by this module's runs: the embedded MLflow registry under it carries the champion between them."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def first_run(compiled: Path, taxi_csv: Path, pipeline_root: Path) -> LocalRun:
    pipeline = components.load_component_from_file(str(compiled))
    return run_local(pipeline, {"source_uri": str(taxi_csv), "epochs": 3, "max_trials": 3}, pipeline_root)


@pytest.fixture(scope="module")
def worse_run(first_run: LocalRun, compiled: Path, taxi_csv: Path, pipeline_root: Path, tmp_path_factory) -> LocalRun:
    """A second run whose train period has its tips shuffled between trips: a deliberately worse challenger,
    judged on the very same eval rows as the champion (the eval period is left as it was)."""
    frame = pd.read_csv(taxi_csv)
    split = pd.read_parquet(first_run.run_dir / "ingest" / "eval_data")["trip_start_timestamp"].min()
    in_train = pd.to_datetime(frame["trip_start_timestamp"], unit="s", utc=True) < split
    shuffled = frame["tips"][in_train].sample(frac=1.0, random_state=0).to_numpy()
    frame.loc[in_train, "tips"] = shuffled
    source = tmp_path_factory.mktemp("shuffled") / "data.csv"
    frame.to_csv(source, index=False)
    pipeline = components.load_component_from_file(str(compiled))
    return run_local(pipeline, {"source_uri": str(source), "epochs": 3, "tuner": "off"}, pipeline_root)


def registry_client(pipeline_root: Path) -> MlflowClient:
    return MlflowClient(TrackingConfig.embedded(pipeline_root / "mlflow").tracking_uri)


@pytest.mark.pipeline
def test_the_compiled_yaml_runs_locally_and_reports_auc_on_the_future(first_run: LocalRun, pipeline_root: Path) -> None:
    run = first_run
    metrics = run.outputs["eval_metrics"].metadata
    assert metrics["rows"] == 2002  # the time-split eval set of data.csv
    assert metrics["auc"] > 0.85
    assert 0 < metrics["log_loss"] < 0.5
    model = load_model(Path(run.outputs["model"].path))
    assert model.metadata["lineage"]["data_sha256"] == SAMPLE_FILES["data.csv"]
    assert run.run_dir is not None and (run.run_dir / "ingest" / "train_data").is_file()
    assert run.outputs["train_metrics"].metadata["world_size"] == 2  # DDP with the default 2 processes
    assert "data:image/png;base64," in Path(run.outputs["eval_report"].path).read_text()
    # Validated before anything else: a Facets page of both splits, and no anomalies on the sample.
    assert "<facets-overview" in Path(run.outputs["statistics_report"].path).read_text()
    assert "no anomalies in 2,002 rows" in Path(run.outputs["anomalies"].path).read_text()
    assert (run.run_dir / "statistics" / "statistics" / "Split-train" / "FeatureStats.pb").is_file()

    # The run was tracked in the embedded MLflow store under the pipeline root.
    tracked = registry_client(pipeline_root).get_run(model.metadata["lineage"]["mlflow_run_id"])
    assert tracked.data.params["epochs"] == "3" and tracked.data.params["world_size"] == "2"
    assert tracked.data.tags["slipway.data_sha256"] == SAMPLE_FILES["data.csv"]
    assert tracked.data.tags["slipway.pipeline_run_id"]
    assert tracked.info.status == "FINISHED"

    # Tuned first: three trials on the train split's holdout, and the final model trained with the best of them.
    trials = Path(run.outputs["tuning_trials"].path).read_text()
    assert "Optuna study (tpe, 3 trials: 3 complete" in trials and "the eval split never chose" in trials
    best = run.outputs["best_params"].metadata
    assert float(tracked.data.params["learning_rate"]) == pytest.approx(best["best_learning_rate"], rel=1e-9)
    assert int(tracked.data.params["batch_size"]) == best["best_batch_size"]


@pytest.mark.pipeline
def test_the_first_model_is_blessed_registered_with_its_lineage_and_promoted(
    first_run: LocalRun, pipeline_root: Path
) -> None:
    assert first_run.outputs["decision"] == "blessed"
    assert first_run.outputs["model_uri"] == "models:/chicago_taxi/1"
    client = registry_client(pipeline_root)
    champion = client.get_model_version_by_alias("chicago_taxi", "champion")
    assert str(champion.version) == "1" and set(champion.aliases) == {"champion", "challenger"}
    model = load_model(Path(first_run.outputs["model"].path))
    assert champion.run_id == model.metadata["lineage"]["mlflow_run_id"]
    tags = champion.tags
    assert tags["slipway.data_sha256"] == SAMPLE_FILES["data.csv"]
    run_tags = client.get_run(champion.run_id).data.tags
    assert tags["slipway.pipeline_run_id"] and tags["slipway.pipeline_run_id"] == run_tags["slipway.pipeline_run_id"]
    assert tags["slipway.git_commit"] == run_tags["slipway.git_commit"]
    assert tags["slipway.param.epochs"] == "3"
    assert tags["slipway.schema_uri"] == str(first_run.run_dir / "schema" / "schema")
    assert float(tags["slipway.eval.auc"]) == pytest.approx(first_run.outputs["eval_metrics"].metadata["auc"], abs=1e-6)
    card = Path(first_run.outputs["model_card"].path).read_text()
    assert card.startswith("# Model card: models:/chicago_taxi/1")
    assert "**Decision: blessed**" in card and "### `payment_type`" in card
    # Deployed: served by a real model server and smoke-tested; with no champion before it, promoted on that.
    rollout = json.loads((first_run.run_dir / "deploy" / "rollout").read_text())
    assert rollout == {"outcome": "promoted", "model_uri": "models:/chicago_taxi/1", "canary": None}
    assert "smoke test: 8 eval rows answered" in (first_run.run_dir / "deploy" / "report").read_text()


@pytest.mark.pipeline
def test_slipway_run_summarises_the_run_with_eval_auc_the_artifacts_and_how_to_undo_the_promotion(
        first_run: LocalRun, pipeline_root: Path) -> None:
    """What `slipway run training` prints after the run (the CLI's own summary of this very run; the command's
    failure path is in test_cli.py): the pipeline's own full run is not repeated there."""
    summary = _summary(first_run, {"source_uri": "data.csv", "epochs": 3}, pipeline_root)
    assert "Pipeline 'training' succeeded" in summary and "  epochs = 3" in summary
    auc = float(re.search(r"eval_metrics: .*\bauc ([0-9.]+)", summary).group(1))
    assert auc == pytest.approx(first_run.outputs["eval_metrics"].metadata["auc"], abs=1e-4)
    assert Path(re.search(r"^  model: (.+)$", summary, re.M).group(1)) == Path(first_run.outputs["model"].path)
    assert "decision: blessed" in summary and "registered: models:/chicago_taxi/1" in summary
    undo = re.search(r"undo with: slipway (rollback .+)$", summary, re.M).group(1).split()
    assert undo[undo.index("--tracking-uri") + 1] == TrackingConfig.embedded(pipeline_root / "mlflow").tracking_uri


# --- batch_scoring: the champion scores a batch in bulk, and its predictions feed drift ------------------------------
# Here, before the shuffled challenger's run re-applies its feature tables to the shared Feast store.


@pytest.fixture(scope="module")
def batch_compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [path] = compile_pipelines(tmp_path_factory.mktemp("dist-batch"), ["batch_scoring"])
    return path


def test_batch_scoring_resolves_the_champion_once_and_its_predictions_are_what_drift_reads(
        batch_compiled: Path) -> None:
    spec = json_format.ParseDict(pipeline_ir(batch_compiled), pipeline_spec_pb2.PipelineSpec())
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"champion", "importer", "batch-predict", "drift"}
    predict = tasks["batch-predict"]
    # The version the alias named when the run started, for every row, and for drift's `prediction` row too.
    assert predict.inputs.parameters["model_uri"].task_output_parameter.output_parameter_key == "model_uri"
    assert tasks["drift"].inputs.artifacts["model"].task_output_artifact.producer_task == "champion"
    assert predict.inputs.artifacts["data"].task_output_artifact.producer_task == "importer"
    current = tasks["drift"].inputs.artifacts["current"].task_output_artifact
    assert (current.producer_task, current.output_artifact_key) == ("batch-predict", "predictions")
    # The batch and the champion can change behind the same names: neither is taken from the cache.
    assert not predict.caching_options.enable_cache and not tasks["champion"].caching_options.enable_cache
    assert pipeline_ir(batch_compiled)["deploymentSpec"]["executors"]["exec-importer"]["importer"]["reimport"]


@pytest.mark.pipeline
def test_batch_scoring_scores_every_trip_with_the_champion_as_it_scored_its_eval_set(
        first_run: LocalRun, batch_compiled: Path, taxi_csv: Path, pipeline_root: Path) -> None:
    """The raw trips, joined to their point-in-time Feast features in the pipeline, score exactly as the champion
    scored its registered eval set (no skew); every row names the version and the run; drift reads the log."""
    run = run_local(components.load_component_from_file(str(batch_compiled)), {"source_uri": str(taxi_csv)},
                    pipeline_root)
    predictions = read_predictions(run.outputs["predictions"].path)
    rejects = pd.read_parquet(run.outputs["rejects"].path)
    counts = run.outputs["scoring_metrics"].metadata
    assert counts["rows_in"] == len(pd.read_csv(taxi_csv)) == counts["scored"] + counts["rejected"]
    assert (counts["scored"], counts["rejected"]) == (len(predictions), len(rejects))
    assert run.outputs["model_version"] == "1"
    assert set(predictions["model_version"]) == {"1"}
    assert predictions["run_id"].nunique() == 1 and predictions["run_id"].iloc[0]

    version = registry_client(pipeline_root).get_model_version_by_alias("chicago_taxi", "champion")
    eval_set = pd.read_parquet(version.tags["slipway.eval_data"])
    starts = pd.to_datetime(predictions["trip_start_timestamp"], unit="s", utc=True)
    in_eval = predictions[starts >= eval_set["trip_start_timestamp"].min()]
    expected = load_model(Path(first_run.outputs["model"].path)).predict_proba(eval_set)
    np.testing.assert_allclose(np.sort(in_eval["score"].to_numpy()), np.sort(expected), atol=1e-5)

    assert run.outputs["drift_level"] == "none"
    assert "psi_prediction" in run.outputs["drift_metrics"].metadata
    assert "the champion (models:/chicago_taxi/1)" in Path(run.outputs["drift_report"].path).read_text()


@pytest.mark.pipeline
def test_a_challenger_trained_on_shuffled_labels_is_refused_and_the_champion_does_not_move(
    worse_run: LocalRun, pipeline_root: Path
) -> None:
    assert worse_run.outputs["decision"] == "refused"
    assert worse_run.outputs["model_uri"] == "models:/chicago_taxi/2"
    client = registry_client(pipeline_root)
    assert str(client.get_model_version_by_alias("chicago_taxi", "champion").version) == "1"
    challenger = client.get_model_version_by_alias("chicago_taxi", "challenger")
    assert str(challenger.version) == "2" and challenger.tags["slipway.decision"] == "refused"
    reasons = challenger.tags["slipway.decision_reasons"]
    assert "regresses from champion version 1's" in reasons, reasons
    assert float(challenger.tags["slipway.eval.auc"]) < 0.7
    # The gate scored the champion on this run's eval rows: the same trips, so nearly the AUC of its own run;
    # not exactly, because their tip-rate features now aggregate this run's shuffled tips of the days before.
    blessing = json.loads((worse_run.run_dir / "bless" / "blessing").read_text())
    assert blessing["champion_version"] == "1"
    assert blessing["champion_auc"] == pytest.approx(float(
        client.get_model_version("chicago_taxi", "1").tags["slipway.eval.auc"]), abs=1e-3)
    assert not (worse_run.run_dir / "deploy").exists(), "a refused model must never be deployed"
    assert "must not be deployed" in Path(worse_run.outputs["model_card"].path).read_text()


@pytest.mark.pipeline
def test_anomalous_data_stops_the_run_at_validate_naming_the_features(compiled: Path, taxi_csv: Path,
                                                                      tmp_path: Path) -> None:
    """A source whose newest trips pay with an unknown payment type: the eval split fails validation, and
    nothing after it runs (no feature tables, no training)."""
    frame = pd.read_csv(taxi_csv)
    newest = frame["trip_start_timestamp"] >= frame["trip_start_timestamp"].quantile(0.9)
    frame.loc[newest, "payment_type"] = "Bitcoin"
    source = tmp_path / "data.csv"
    frame.to_csv(source, index=False)
    pipeline = components.load_component_from_file(str(compiled))
    with pytest.raises(RuntimeError, match="validate"):
        run_local(pipeline, {"source_uri": str(source), "epochs": 1}, tmp_path / "runs")
    [run_dir] = (tmp_path / "runs").glob("training-*")
    summary = (run_dir / "validate" / "summary").read_text()
    assert "`payment_type` | Unexpected string values" in summary and "Bitcoin" in summary
    assert not (run_dir / "feature-tables").exists() and not (run_dir / "train").exists()


# --- continuous_training: drift decides whether the training steps run at all ------------------------------------


@pytest.fixture(scope="module")
def continuous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [path] = compile_pipelines(tmp_path_factory.mktemp("dist-ct"), ["continuous_training"])
    return path


def test_continuous_training_retrains_only_inside_the_critical_drift_branch(continuous: Path) -> None:
    spec = json_format.ParseDict(pipeline_ir(continuous), pipeline_spec_pb2.PipelineSpec())
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"champion", "ingest", "statistics", "schema", "validate", "importer", "drift",
                          "retrain-trigger", "condition-1"}
    # The batch is validated against the champion's own schema, and measured against its training data.
    assert tasks["schema"].inputs.parameters["pinned_schema"].task_output_parameter.producer_task == "champion"
    assert tasks["drift"].inputs.artifacts["reference"].task_output_artifact.producer_task == "champion"
    assert tasks["drift"].inputs.artifacts["current"].task_output_artifact.producer_task == "importer"
    assert set(tasks["drift"].dependent_tasks) == {"champion", "importer", "validate"}
    # Critical drift or the champion's live AUC below its own eval AUC decides; the branch runs on either.
    trigger = tasks["retrain-trigger"].inputs.parameters
    assert trigger["drift_level"].task_output_parameter.producer_task == "drift"
    assert trigger["baseline_auc"].task_output_parameter.output_parameter_key == "eval_auc"
    critical = tasks["condition-1"]
    assert critical.trigger_policy.condition == (
        "inputs.parameter_values['pipelinechannel--retrain-trigger-Output'] != 'none'")
    retraining = spec.components[critical.component_ref.name].dag.tasks
    assert {"tune", "train", "evaluate", "bless", "register"} <= set(retraining)
    blessed = [t for name, t in retraining.items() if name.startswith("condition-")]
    assert len(blessed) == 1 and set(spec.components[blessed[0].component_ref.name].dag.tasks) == {"deploy"}
    executors = pipeline_ir(continuous)["deploymentSpec"]["executors"]
    assert executors["exec-drift"]["container"]["image"] == runtimes.DRIFT_IMAGE


@pytest.mark.pipeline
def test_an_unshifted_batch_stops_at_drift_and_the_champion_stays(
    first_run: LocalRun, continuous: Path, taxi_csv: Path, pipeline_root: Path, tmp_path: Path
) -> None:
    """A resample of the champion's own source: drift `none`, and the champion's live AUC on labelled traffic (its
    own eval rows, served and logged, with their true outcomes) is its registered eval AUC: nothing is trained,
    registered or deployed."""
    batch = tmp_path / "batch.csv"
    pd.read_csv(taxi_csv).sample(frac=1.0, replace=True, random_state=3).to_csv(batch, index=False)
    version = registry_client(pipeline_root).get_model_version_by_alias("chicago_taxi", "champion")
    prediction_log, labels = served_with_outcomes(first_run.run_dir / "train" / "model",
                                                  Path(version.tags["slipway.eval_data"]), tmp_path)
    run = run_local(components.load_component_from_file(str(continuous)),
                    {"source_uri": str(batch), "prediction_log": str(prediction_log), "labels_uri": str(labels)},
                    pipeline_root)
    assert run.outputs["drift_level"] == "none"
    assert run.outputs["retrain"] == "none"
    feedback = run.outputs["feedback"].metadata
    assert feedback["live_auc"] == pytest.approx(float(version.tags["slipway.eval.auc"]), abs=1e-5)
    assert feedback["performance_dropped"] == 0 and feedback["retrain"] == 0
    assert run.outputs["drift_metrics"].metadata["drift_level"] == 0
    assert "<strong>Drift: none</strong>" in Path(run.outputs["drift_report"].path).read_text()
    assert not (run.run_dir / "train").exists() and not (run.run_dir / "register").exists()
    champion_after = registry_client(pipeline_root).get_model_version_by_alias("chicago_taxi", "champion").version
    assert champion_after == version.version


def served_with_outcomes(model_dir: Path, eval_set: Path, out: Path) -> tuple[Path, Path]:
    """The model's answers to its eval rows, one request each, in a prediction log (the real logger), and the rows'
    true outcomes as a labels file: traffic whose live AUC is the model's eval AUC."""
    rows = pd.read_parquet(eval_set)
    scores = load_model(model_dir).predict_proba(rows)
    ids = [f"request-{index}" for index in range(len(rows))]
    with PredictionLogger(PredictionLogConfig(path=out / "predictions.jsonl", inference_service="taxi")) as logger:
        for request_id, row, score in zip(ids, json_instances(rows), scores, strict=True):
            logger.log(request_id, "chicago_taxi", {"instances": [row]}, {"predictions": [float(score)]})
    pd.DataFrame({"request_id": ids, "outcome": rows["tip_over_20pct"]}).to_csv(out / "labels.csv", index=False)
    return out / "predictions.jsonl", out / "labels.csv"

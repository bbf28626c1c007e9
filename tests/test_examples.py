"""The examples/ pipelines, written as a user would write them: each compiles from its own `__main__` to the DAG it
describes, and the own-ingest one runs locally on the taxi sample, from the user's ingest to a promoted model."""

import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2
from mlflow.tracking import MlflowClient

from slipway import cluster, runtimes
from slipway.components.model_artifact import load_model
from slipway.components.tracking import TrackingConfig
from slipway.pipelines.local import LocalRun, run_local
from slipway.problem import load_problem
from slipway.sample_data import SAMPLE_FILES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROBLEM = EXAMPLES / "taxi_tips_problem.yaml"


def compile_example(script: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> pipeline_spec_pb2.PipelineSpec:
    """Runs the example as `python examples/<script> <out>` does (in this process), and parses what it wrote as a
    PipelineSpec, strictly: a field the proto does not define fails."""
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), str(out)])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return json_format.ParseDict(next(yaml.safe_load_all(out.read_text())), pipeline_spec_pb2.PipelineSpec())


def producer(task: pipeline_spec_pb2.PipelineTaskSpec, name: str) -> tuple[str, str]:
    """(producer task, output key) of an artifact input."""
    output = task.inputs.artifacts[name].task_output_artifact
    return output.producer_task, output.output_artifact_key


def test_the_users_problem_is_the_packaged_taxi_problem_without_its_feature_store() -> None:
    mine, packaged = load_problem(str(PROBLEM)), load_problem("chicago_taxi")
    assert mine.name == "taxi_tips" and mine.feature_store is None and packaged.feature_store is not None
    for field in ("columns", "timestamp", "label", "features", "eval_fraction", "evaluation", "validation"):
        assert getattr(mine, field) == getattr(packaged, field), field


# --- (a) own-ingest: the user's ingest, then Slipway's validate -> train -> evaluate -> bless -> register -> deploy


@pytest.fixture(scope="module")
def own_ingest_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("own-ingest") / "own_ingest.yaml"


@pytest.fixture(scope="module")
def own_ingest_spec(own_ingest_yaml: Path) -> pipeline_spec_pb2.PipelineSpec:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return compile_example("own_ingest_pipeline.py", own_ingest_yaml, monkeypatch)


def test_own_ingest_feeds_the_users_splits_to_slipways_gate_and_trains_only_after_validation(
        own_ingest_spec: pipeline_spec_pb2.PipelineSpec) -> None:
    spec = own_ingest_spec
    assert spec.pipeline_info.name == "own-ingest"
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"importer", "clean-trips", "statistics", "schema", "validate", "train", "evaluate", "bless",
                          "register", "condition-1"}
    assert producer(tasks["clean-trips"], "raw") == ("importer", "artifact")
    # Both of the user's splits go through TFDV, and the model sees exactly those splits.
    assert producer(tasks["statistics"], "train_data") == ("clean-trips", "train_data")
    assert producer(tasks["statistics"], "eval_data") == ("clean-trips", "eval_data")
    assert set(tasks["validate"].dependent_tasks) == {"statistics", "schema"}
    assert set(tasks["train"].dependent_tasks) == {"clean-trips", "validate"}
    assert producer(tasks["train"], "train_data") == ("clean-trips", "train_data")
    assert producer(tasks["evaluate"], "eval_data") == ("clean-trips", "eval_data")
    assert producer(tasks["evaluate"], "model") == ("train", "model")
    assert producer(tasks["register"], "blessing") == ("bless", "blessing")
    assert producer(tasks["register"], "schema") == ("schema", "schema")
    condition = tasks["condition-1"]
    assert condition.trigger_policy.condition == "inputs.parameter_values['pipelinechannel--bless-Output'] == 'blessed'"
    [deploy] = spec.components[condition.component_ref.name].dag.tasks.values()
    assert deploy.component_ref.name == "comp-deploy"
    # The source, the registry and the endpoint can change behind the same inputs: none is taken from the cache.
    for name in ("clean-trips", "bless", "register"):
        assert not tasks[name].caching_options.enable_cache, name
    # Small defaults, so that a first local run takes about a minute.
    defaults = spec.root.input_definitions.parameters
    assert (defaults["epochs"].default_value.number_value, defaults["processes"].default_value.number_value) == (2, 1)


def test_the_users_step_runs_on_the_core_image_without_installing_anything(own_ingest_yaml: Path,
                                                                           own_ingest_spec) -> None:
    executors = next(yaml.safe_load_all(own_ingest_yaml.read_text()))["deploymentSpec"]["executors"]
    container = executors["exec-clean-trips"]["container"]
    assert container["image"] == runtimes.CORE_IMAGE
    assert "pip install" not in " ".join(container["command"])
    assert executors["exec-validate"]["container"]["image"] == runtimes.TFDV_IMAGE


def test_every_task_of_both_examples_gets_the_clusters_settings_on_kubeflow(own_ingest_yaml: Path, own_ingest_spec,
                                                                            tmp_path: Path, monkeypatch) -> None:
    compile_example("drift_and_batch_predict.py", tmp_path / "scoring.yaml", monkeypatch)
    for path, tasks in ((own_ingest_yaml, ("clean-trips", "train", "register", "deploy")),
                        (tmp_path / "scoring.yaml", ("batch-predict", "drift"))):
        [_, platform] = yaml.safe_load_all(path.read_text())
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for task in tasks:
            env = executors[f"exec-{task}"]
            assert env["configMapAsEnv"][0]["configMapName"] == cluster.CONFIG_MAP, (path.name, task)
            assert env["secretAsEnv"][0]["secretName"] == cluster.STORAGE_SECRET, (path.name, task)


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def own_ingest_run(own_ingest_yaml: Path, own_ingest_spec, taxi_csv: Path, pipeline_root: Path) -> LocalRun:
    """The compiled YAML, run locally on the sample with its own defaults (2 epochs, 1 process)."""
    pipeline = components.load_component_from_file(str(own_ingest_yaml))
    return run_local(pipeline, {"source_uri": str(taxi_csv), "problem": str(PROBLEM)}, pipeline_root)


@pytest.mark.pipeline
def test_own_ingest_runs_locally_from_the_users_splits_to_a_promoted_first_model(
        own_ingest_run: LocalRun, taxi_csv: Path, pipeline_root: Path) -> None:
    run, problem = own_ingest_run, load_problem(str(PROBLEM))
    # The user's splits: their cleaning applied, typed as the problem declares, the newest trips in eval.
    raw = pd.read_csv(taxi_csv)
    kept = ((raw["fare"] > 0) & raw["tips"].notna() & raw["trip_seconds"].notna()).sum()
    train, evaluation = (pd.read_parquet(run.outputs[name].path) for name in ("train_data", "eval_data"))
    assert len(train) + len(evaluation) == kept < len(raw)
    assert len(evaluation) == pytest.approx(kept * problem.eval_fraction, abs=5)
    assert train["trip_start_timestamp"].max() < evaluation["trip_start_timestamp"].min()
    assert str(train["trip_start_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (train["pickup_community_area"].dtype, train["payment_type"].dtype) == ("Int64", "string")
    assert set(train["tip_over_20pct"]) == {0, 1} and train["tip_over_20pct"].dtype == "int64"
    assert (train["fare"] > 0).all()
    metadata = run.outputs["eval_data"].metadata
    assert (metadata["split"], metadata["rows"], metadata["sha256"]) == ("eval", len(evaluation),
                                                                         SAMPLE_FILES["data.csv"])

    # Slipway's gate passed on them, and the model trained on them judged on the future.
    assert f"no anomalies in {len(evaluation):,} rows" in Path(run.outputs["anomalies"].path).read_text()
    eval_metrics = run.outputs["eval_metrics"].metadata
    assert eval_metrics["rows"] == len(evaluation)
    assert eval_metrics["auc"] > 0.85
    assert 0 < eval_metrics["log_loss"] < 0.5
    model = load_model(Path(run.outputs["model"].path))
    assert model.metadata["lineage"]["data_sha256"] == SAMPLE_FILES["data.csv"]  # the user's metadata, carried on

    # Registered under the user's problem's name, blessed, and with no champion before it promoted on its smoke test.
    assert (run.outputs["decision"], run.outputs["model_uri"]) == ("blessed", "models:/taxi_tips/1")
    rollout = json.loads((run.run_dir / "deploy" / "rollout").read_text())
    assert rollout == {"outcome": "promoted", "model_uri": "models:/taxi_tips/1", "canary": None}
    client = MlflowClient(TrackingConfig.embedded(pipeline_root / "mlflow").tracking_uri)
    champion = client.get_model_version_by_alias("taxi_tips", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["slipway.data_sha256"] == SAMPLE_FILES["data.csv"]
    assert float(champion.tags["slipway.eval.auc"]) == pytest.approx(eval_metrics["auc"], abs=1e-6)


# --- (b) drift-and-batch-predict: the user's batch, reference and model, scored and measured


def test_drift_and_batch_predict_scores_the_users_batch_with_their_model_and_drift_reads_the_predictions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compile_example("drift_and_batch_predict.py", tmp_path / "scoring.yaml", monkeypatch)
    assert spec.pipeline_info.name == "drift-and-batch-predict"
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"importer", "importer-2", "importer-3", "batch-predict", "drift"}
    imported = {name: tasks[name].inputs.parameters["uri"].component_input_parameter
                for name in ("importer", "importer-2", "importer-3")}
    assert imported == {"importer": "data_uri", "importer-2": "reference_uri", "importer-3": "model_uri"}
    predict = tasks["batch-predict"]
    assert producer(predict, "data") == ("importer", "artifact")
    # The same model scores the batch and, in drift, the reference; the batch already holds its features.
    assert predict.inputs.parameters["model_uri"].component_input_parameter == "model_uri"
    assert predict.inputs.parameters["join_features"].runtime_value.constant.bool_value is False
    assert not predict.caching_options.enable_cache
    drift = tasks["drift"]
    assert producer(drift, "current") == ("batch-predict", "predictions")
    assert producer(drift, "reference") == ("importer-2", "artifact")
    assert producer(drift, "model") == ("importer-3", "artifact")
    ir = next(yaml.safe_load_all((tmp_path / "scoring.yaml").read_text()))
    importers = {name: executor["importer"] for name, executor in ir["deploymentSpec"]["executors"].items()
                 if "importer" in executor}
    assert {name: spec["typeSchema"]["schemaTitle"] for name, spec in importers.items()} == {
        "exec-importer": "system.Dataset", "exec-importer-2": "system.Dataset", "exec-importer-3": "system.Model"}
    assert all(spec["reimport"] for spec in importers.values())
    assert ir["deploymentSpec"]["executors"]["exec-drift"]["container"]["image"] == runtimes.DRIFT_IMAGE

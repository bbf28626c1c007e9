"""The training pipeline compiles to KFP IR that Kubeflow accepts, and that IR runs locally on real data."""

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2
from mlflow.tracking import MlflowClient

from slipway import runtimes
from slipway.components.model_artifact import load_model
from slipway.components.tracking import TrackingConfig
from slipway.pipelines.compile import compile_pipelines
from slipway.pipelines.local import run_local
from slipway.sample_data import SAMPLE_FILES


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [path] = compile_pipelines(tmp_path_factory.mktemp("dist"), ["training"])
    return path


def test_the_ir_parses_strictly_as_a_kfp_pipeline_spec(compiled: Path) -> None:
    # ParseDict refuses any field the PipelineSpec proto does not define.
    spec = json_format.ParseDict(yaml.safe_load(compiled.read_text()), pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "training"
    assert set(spec.root.input_definitions.parameters) == {
        "source_uri", "problem", "architecture", "hidden_units", "dropout", "epochs", "learning_rate", "batch_size",
        "weight_decay", "patience", "seed", "processes", "launcher", "num_nodes", "credentials_secret", "tracking_uri",
        "threshold"}
    assert set(spec.root.output_definitions.artifacts) == {"model", "train_metrics", "eval_metrics"}


def test_the_dag_runs_ingest_then_train_then_evaluate(compiled: Path) -> None:
    spec = json_format.ParseDict(yaml.safe_load(compiled.read_text()), pipeline_spec_pb2.PipelineSpec())
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"ingest", "train", "evaluate"}
    assert list(tasks["train"].dependent_tasks) == ["ingest"]
    assert set(tasks["evaluate"].dependent_tasks) == {"ingest", "train"}
    evaluate_inputs = tasks["evaluate"].inputs.artifacts
    assert evaluate_inputs["eval_data"].task_output_artifact.producer_task == "ingest"
    assert evaluate_inputs["model"].task_output_artifact.producer_task == "train"


def test_train_receives_the_tasks_resources_to_forward_to_a_cluster_job(compiled: Path) -> None:
    component = yaml.safe_load(compiled.read_text())["components"]["comp-train"]
    assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    forwarded = {p["field"]: p.get("applyToTask", False) for p in component["taskConfigPassthroughs"]}
    assert forwarded == {"RESOURCES": True, "KUBERNETES_TOLERATIONS": True, "KUBERNETES_NODE_SELECTOR": True}


def test_ingest_is_never_cached_because_its_source_can_change_behind_the_same_uri(compiled: Path) -> None:
    spec = json_format.ParseDict(yaml.safe_load(compiled.read_text()), pipeline_spec_pb2.PipelineSpec())
    assert spec.root.dag.tasks["ingest"].caching_options.enable_cache is False
    assert spec.root.dag.tasks["train"].caching_options.enable_cache is True


def test_every_executor_runs_the_core_image_without_installing_anything(compiled: Path) -> None:
    executors = yaml.safe_load(compiled.read_text())["deploymentSpec"]["executors"]
    assert len(executors) == 3
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == runtimes.CORE_IMAGE, name
        command = " ".join(container["command"])
        assert "kfp.dsl.executor_main" in command, name
        assert "pip install" not in command, f"{name} would pip-install at run time"


@pytest.mark.pipeline
def test_the_compiled_yaml_runs_locally_and_reports_auc_on_the_future(
    compiled: Path, taxi_csv: Path, tmp_path: Path
) -> None:
    pipeline = components.load_component_from_file(str(compiled))
    run = run_local(pipeline, {"source_uri": str(taxi_csv), "epochs": 3}, tmp_path / "runs")

    metrics = run.outputs["eval_metrics"].metadata
    assert metrics["rows"] == 2002  # the time-split eval set of data.csv
    assert metrics["auc"] > 0.85
    assert 0 < metrics["log_loss"] < 0.5
    model = load_model(Path(run.outputs["model"].path))
    assert model.metadata["lineage"]["data_sha256"] == SAMPLE_FILES["data.csv"]
    assert run.run_dir is not None and (run.run_dir / "ingest" / "train_data").is_file()
    assert run.outputs["train_metrics"].metadata["world_size"] == 2  # DDP with the default 2 processes

    # The run was tracked in the embedded MLflow store under the pipeline root.
    tracked = MlflowClient(TrackingConfig.embedded(tmp_path / "runs" / "mlflow").tracking_uri).get_run(
        model.metadata["lineage"]["mlflow_run_id"])
    assert tracked.data.params["epochs"] == "3" and tracked.data.params["world_size"] == "2"
    assert tracked.data.tags["slipway.data_sha256"] == SAMPLE_FILES["data.csv"]
    assert tracked.data.tags["slipway.pipeline_run_id"]
    assert tracked.info.status == "FINISHED"

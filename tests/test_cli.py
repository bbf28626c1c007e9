"""The `slipway` CLI: what a user types, what they read back, and the exit codes."""

import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from slipway.components.model_artifact import load_model
from slipway.components.tracking import TrackingConfig
from slipway.pipelines.catalog import PIPELINES
from slipway.pipelines.cli import PIPELINE_NAMES, cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_the_cli_lists_every_pipeline_of_the_catalogue() -> None:
    assert PIPELINE_NAMES == tuple(sorted(PIPELINES))


def test_an_unknown_pipeline_is_a_usage_error_that_lists_the_valid_ones() -> None:
    result = invoke("run", "nightly")
    assert result.exit_code == 2
    assert "'nightly' is not 'training'" in result.output


def test_an_unknown_set_key_lists_every_valid_parameter_with_its_type_and_default() -> None:
    result = invoke("run", "training", "--set", "epoch=5")
    assert result.exit_code == 2
    assert "'epoch' is not a parameter of pipeline 'training'" in result.output
    assert "epochs (integer, default 20)" in result.output
    assert "learning_rate (float, default 0.003)" in result.output
    assert "hidden_units (list, default [64, 32])" in result.output


@pytest.mark.parametrize(("assignment", "message"), [
    ("epochs=five", "epochs='five': expected integer"),
    ("epochs", "'epochs' is not key=value"),
    ("source_uri=data.csv", "give the source with --data"),
])
def test_a_bad_set_value_is_a_usage_error_that_says_why(assignment: str, message: str) -> None:
    result = invoke("run", "training", "--set", assignment)
    assert result.exit_code == 2
    assert message in result.output


def test_compile_writes_one_ir_file_per_pipeline(tmp_path: Path) -> None:
    result = invoke("compile", "--output-dir", str(tmp_path / "dist"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [f"{name}.yaml" for name in sorted(PIPELINES)]


def test_version_names_the_core_image_and_the_key_libraries() -> None:
    result = invoke("version")
    assert result.exit_code == 0
    assert re.search(r"^core image ghcr\.io/slipway-ml/slipway-core:\d+\.\d+\.\d+$", result.output, re.M)
    assert re.search(r"^kfp 2\.17\.0$", result.output, re.M)


@pytest.mark.pipeline
def test_run_training_prints_a_summary_with_eval_auc_and_the_artifacts(taxi_csv: Path, tmp_path: Path) -> None:
    result = invoke("run", "training", "--data", str(taxi_csv), "--set", "epochs=2",
                    "--pipeline-root", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "Pipeline 'training' succeeded" in result.output
    auc = float(re.search(r"eval_metrics: .*\bauc ([0-9.]+)", result.output).group(1))
    assert auc > 0.85
    model_dir = Path(re.search(r"^  model: (.+)$", result.output, re.M).group(1))
    assert (model_dir / "model.safetensors").is_file()


@pytest.mark.pipeline
def test_a_failing_step_exits_1_and_names_the_failed_task(tmp_path: Path) -> None:
    result = invoke("run", "training", "--data", str(tmp_path / "missing.csv"),
                    "--pipeline-root", str(tmp_path / "runs"))
    assert result.exit_code == 1
    assert "Inner task failed: 'ingest'" in result.output


def test_train_trains_outside_a_pipeline_and_tracks_the_run(taxi_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "first"
    result = invoke("train", "--data", str(taxi_csv), "--processes", "1", "--epochs", "2", "--hidden-units", "16",
                    "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    assert re.search(r"Trained mlp with 1 process\(es\) on cpu: eval AUC 0\.9\d+ at epoch \d of 2", result.output)
    run_id = re.search(r"MLflow run (\w+) in ", result.output).group(1)
    run = MlflowClient(TrackingConfig.embedded(tmp_path / "runs" / "mlflow").tracking_uri).get_run(run_id)
    assert run.data.params["hidden_units"] == "(16,)"
    assert load_model(out / "model").metadata["lineage"]["mlflow_run_id"] == run_id


@pytest.mark.parametrize(("args", "message"), [
    (["--hidden-units", "64,wide"], "invalid literal for int() with base 10: 'wide'"),
    (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--processes", "0"], "0 is not in the range x>=1"),
])
def test_train_refuses_bad_options_as_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke("train", "--output-dir", str(tmp_path), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not any(tmp_path.iterdir()), "nothing is written before the options are known to be good"


def test_train_on_a_source_without_a_problem_column_names_the_file_and_column(taxi_csv: Path, tmp_path: Path) -> None:
    source = tmp_path / "no_fare.csv"
    pd.read_csv(taxi_csv).drop(columns=["fare"]).head(50).to_csv(source, index=False)
    result = invoke("train", "--data", str(source), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert str(source) in result.output and "fare" in result.output

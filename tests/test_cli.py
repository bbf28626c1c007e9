"""The `slipway` CLI: what a user types, what they read back, and the exit codes."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from slipway.components import COMPONENTS
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
    assert "'nightly' is not one of 'batch_scoring', 'continuous_training', 'training'" in result.output


def test_an_unknown_set_key_lists_every_valid_parameter_with_its_type_and_default() -> None:
    result = invoke("run", "training", "--set", "epoch=5")
    assert result.exit_code == 2
    assert "'epoch' is not a parameter of pipeline 'training'" in result.output
    assert "epochs (integer, default 20)" in result.output
    assert "learning_rate (float, default 0.006)" in result.output
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
    assert sorted(p.name for p in (tmp_path / "dist").glob("*.yaml")) == [f"{name}.yaml" for name in sorted(PIPELINES)]
    # Beside the pipelines, every component as a standalone component YAML (tests/test_component_yamls.py).
    assert sorted(p.stem for p in (tmp_path / "dist" / "components").iterdir()) == sorted(COMPONENTS)


def test_version_names_the_runtime_images_and_the_key_libraries() -> None:
    result = invoke("version")
    assert result.exit_code == 0
    assert re.search(r"^core image ghcr\.io/slipway-ml/slipway-core:\d+\.\d+\.\d+$", result.output, re.M)
    tfdv = r"^tfdv image ghcr\.io/slipway-ml/slipway-tfdv:\d+\.\d+\.\d+ \(locally .*/\.venv/tfdv/bin/python\)$"
    assert re.search(tfdv, result.output, re.M)
    for runtime in ("serving", "train-gpu"):
        assert re.search(rf"^{runtime} image ghcr\.io/slipway-ml/slipway-{runtime}:\d+\.\d+\.\d+$", result.output, re.M)
    assert re.search(r"^kfp 2\.17\.0$", result.output, re.M)


@pytest.mark.pipeline
def test_a_failing_step_exits_1_and_its_last_line_names_the_failed_task_and_why(tmp_path: Path) -> None:
    result = invoke("run", "training", "--data", str(tmp_path / "missing.csv"),
                    "--pipeline-root", str(tmp_path / "runs"))
    assert result.exit_code == 1
    # The step's own reason, repeated on the last line: the task's traceback above can be pages long.
    assert result.output.splitlines()[-1] == ("Error: Pipeline 'training' finished with status FAILURE. Inner task "
                                              f"failed: 'ingest': StorageError: {tmp_path / 'missing.csv'} not found")


def test_train_trains_outside_a_pipeline_and_tracks_the_run(taxi_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "first"
    result = invoke("train", "--data", str(taxi_csv), "--processes", "1", "--epochs", "2", "--hidden-units", "16",
                    "--batch-size", "256", "--output-dir", str(out))
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


@pytest.fixture
def registry_uri(tmp_path: Path, taxi_model: Path) -> str:
    """An embedded registry holding the taxi model as versions 1 and 2, version 1 the champion."""
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrainingRun

    config = TrackingConfig.embedded(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    with TrainingRun.start(config, "train", {}, {}) as run:
        run.log_model_dir(taxi_model)
    registry = ModelRegistry.connect(config.tracking_uri)
    registry.register("taxi", run.run_id, {})
    registry.register("taxi", run.run_id, {})
    registry.promote("taxi", "1")
    return config.tracking_uri


def test_promote_then_rollback_move_the_champion_and_say_so(registry_uri: str) -> None:
    result = invoke("promote", "--model", "taxi", "--version", "2", "--tracking-uri", registry_uri)
    assert result.exit_code == 0, result.output
    assert "taxi: champion moved from version 1 to version 2" in result.output
    result = invoke("rollback", "--model", "taxi", "--tracking-uri", registry_uri)
    assert result.exit_code == 0, result.output
    assert "taxi: champion moved from version 2 to version 1" in result.output
    assert str(MlflowClient(registry_uri).get_model_version_by_alias("taxi", "champion").version) == "1"


def test_promoting_a_missing_version_exits_1_listing_the_versions(registry_uri: str) -> None:
    result = invoke("promote", "--model", "taxi", "--version", "9", "--tracking-uri", registry_uri)
    assert result.exit_code == 1
    assert "registered model 'taxi' has no version '9'; versions: ['1', '2']" in result.output


def test_rollback_without_a_previous_champion_exits_1_and_moves_nothing(registry_uri: str) -> None:
    result = invoke("rollback", "--model", "taxi", "--tracking-uri", registry_uri)
    assert result.exit_code == 1
    assert "there is no previous champion to roll back to" in result.output
    assert str(MlflowClient(registry_uri).get_model_version_by_alias("taxi", "champion").version) == "1"


def test_estimate_prints_its_arithmetic_from_a_profile(tmp_path: Path) -> None:
    from slipway.capacity import BatchLatency, LatencyProfile, save_profile

    profile = tmp_path / "profile.json"
    save_profile(LatencyProfile("cpu", "hand-made", (BatchLatency(1, 10.0, 20.0), BatchLatency(8, 16.0, 24.0))),
                 profile)
    result = invoke("estimate", "--qps", "100", "--p99-ms", "100", "--utilisation", "0.5", "--max-batch-wait-ms", "80",
                    "--profile", str(profile))
    assert result.exit_code == 0, result.output
    assert "replicas = ceil(100 qps × 10.00 ms ÷ 0.50) = ceil(2.00) = 2" in result.output
    # Batches of 8 fill in 7 ÷ 100/s = 70 ms (under the 80 ms wait), then take 24 ms at p99: 94 ms.
    assert "p99 ≈ 70.00 ms wait + 24.00 ms batch-8 p99 = 94.00 ms <= 100 ms target" in result.output
    assert "Recommended: 1 replica with batching" in result.output


def test_estimate_measures_the_registrys_champion_when_given_no_profile(registry_uri: str, tmp_path: Path) -> None:
    saved = tmp_path / "measured.json"
    result = invoke("estimate", "--qps", "50", "--p99-ms", "500", "--model", "models:/taxi@champion",
                    "--tracking-uri", registry_uri, "--save-profile", str(saved))
    assert result.exit_code == 0, result.output
    assert re.search(r"service time s = batch-1 p50 = [0-9.]+ ms", result.output)
    assert json.loads(saved.read_text())["batches"][0]["batch_size"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--qps", "0", "--p99-ms", "50"], "--qps must be > 0"),
    (["--qps", "10", "--p99-ms", "50", "--utilisation", "1.5"], "--utilisation must be in (0, 1]"),
])
def test_estimate_refuses_bad_targets_naming_the_flag(args: list[str], message: str, tmp_path: Path) -> None:
    from slipway.capacity import BatchLatency, LatencyProfile, save_profile

    profile = tmp_path / "profile.json"
    save_profile(LatencyProfile("cpu", "hand-made", (BatchLatency(1, 1.0, 2.0),)), profile)
    result = invoke("estimate", *args, "--profile", str(profile))
    assert result.exit_code == 2
    assert message in result.output


def test_estimate_without_a_champion_says_how_to_get_one(tmp_path: Path) -> None:
    (tmp_path / "mlflow").mkdir()
    uri = TrackingConfig.embedded(tmp_path / "mlflow").tracking_uri
    result = invoke("estimate", "--qps", "10", "--p99-ms", "50", "--tracking-uri", uri)
    assert result.exit_code == 1
    assert "models:/chicago_taxi@champion: no version of 'chicago_taxi' holds the alias 'champion'" in result.output
    assert "make run" in result.output


def test_manifests_writes_an_inference_service_and_its_canary_that_kserves_crd_accepts(tmp_path: Path) -> None:
    import yaml
    from crd_schema import crd_path, validate_against_crd

    result = invoke("manifests", "inference-service", "--model", "s3://models/chicago_taxi/4", "--stable", "s3://models/chicago_taxi/3",
                    "--canary", "10", "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    stable, canary = (yaml.safe_load((tmp_path / name).read_text()) for name in ("chicago-taxi.yaml",
                                                                                 "chicago-taxi-canary.yaml"))
    for manifest in (stable, canary):
        validate_against_crd(manifest, crd_path("serving.kserve.io_inferenceservices.yaml"))
    container = stable["spec"]["predictor"]["containers"][0]
    assert container["command"] == ["slipway", "serve"]
    assert {"name": "STORAGE_URI", "value": "s3://models/chicago_taxi/3"} in container["env"]
    new = canary["spec"]["predictor"]
    assert new["canaryTrafficPercent"] == 10
    assert {"name": "STORAGE_URI", "value": "s3://models/chicago_taxi/4"} in new["containers"][0]["env"]


def test_manifests_with_a_feature_store_put_the_feast_transformer_in_front(tmp_path: Path) -> None:
    import yaml
    from crd_schema import crd_path, validate_against_crd

    result = invoke("manifests", "inference-service", "--model", "s3://models/chicago_taxi/4",
                    "--feast-redis", "feast-redis:6379", "--feast-registry", "s3://features/registry.db",
                    "--fallback-score", "0.3",
                    "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load((tmp_path / "chicago-taxi.yaml").read_text())
    validate_against_crd(manifest, crd_path("serving.kserve.io_inferenceservices.yaml"))
    [transformer] = manifest["spec"]["transformer"]["containers"]
    assert transformer["command"] == ["slipway", "transform"]
    assert transformer["args"] == ["--model_name", "chicago_taxi", "--fallback-score", "0.3"]
    assert {"name": "SLIPWAY_FEAST_REDIS", "value": "feast-redis:6379"} in transformer["env"]
    assert {"name": "SLIPWAY_FEAST_REGISTRY", "value": "s3://features/registry.db"} in transformer["env"]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "s3://models/m", "--feast-redis", "r:6379"], "--feast-redis and --feast-registry go together"),
    (["--model", "/data/model"], "'/data/model' is not a model location; use s3://, gs://, pvc://"),
    (["--model", "s3://models/m", "--canary", "10"], "--canary and --stable go together"),
    (["--model", "s3://models/m", "--name", "Taxi_Tips"], "'Taxi_Tips' is not a valid InferenceService name"),
])
def test_manifests_refuses_what_kserve_could_not_serve(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke("manifests", "inference-service", *args, "--output-dir", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.output
    assert not list(tmp_path.iterdir()), "nothing is written for a refused manifest"


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "--http-port", "0"], "http_port must be a TCP port, got 0"),
    (["transform", "--predictor-host", "localhost:8080", "--grpc-port", "70000"], "grpc_port must be a TCP port"),
    (["transform", "--predictor-host", "localhost:8080", "--max-payload-bytes", "10"],
     "max_payload_bytes must be at least 1024, got 10"),
])
def test_servers_refuse_impossible_ports_and_limits_before_starting(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_tune_runs_a_study_of_real_trials_and_writes_the_best_parameters(tmp_path: Path) -> None:
    result = invoke("tune", "--max-trials", "2", "--epochs", "1", "--output-dir", str(tmp_path / "tune"))
    assert result.exit_code == 0, result.output
    assert "2 trials (tpe): 2 complete, 0 pruned, 0 fail" in result.output
    best = json.loads((tmp_path / "tune" / "best_params.json").read_text())
    assert set(best["params"]) == {"learning_rate", "weight_decay", "dropout", "batch_size", "hidden_units"}
    assert f"best: holdout AUC {best['holdout_auc']:.4f}" in result.output and 0.5 < best["holdout_auc"] <= 1
    # The eval split (2,002 trips) stays out of the search: trials are judged on the train split's newest fifth.
    assert "judged on its newest 1,601, the holdout" in result.output


def test_tune_refuses_a_broken_search_space_before_any_trial(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  dropout: {type: double, min: 0.4, max: 0.1}\n")
    result = invoke("tune", "--search-space", str(space), "--output-dir", str(tmp_path / "tune"))
    assert result.exit_code == 2
    assert "parameters.dropout: the feasible space is empty: min 0.4 must be less than max 0.1" in result.output
    assert not (tmp_path / "tune").exists()


def test_manifests_experiment_prints_an_experiment_katibs_webhook_admits(tmp_path: Path) -> None:
    import yaml
    from katib_webhook import webhook_errors

    result = invoke("manifests", "experiment", "--train-data", "s3://runs/7/fit.parquet", "--eval-data",
                    "s3://runs/7/holdout.parquet", "--output-uri", "s3://runs/7/trials/", "--max-trials", "8",
                    "--epochs", "5", "--credentials-secret", "mlpipeline-s3")
    assert result.exit_code == 0, result.output
    experiment = yaml.safe_load(result.output)
    assert webhook_errors(experiment) == []
    assert (experiment["metadata"]["name"], experiment["spec"]["maxTrialCount"]) == ("slipway-tune", 8)
    [container] = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    script = container["command"][2]
    assert "--train s3://runs/7/fit.parquet" in script and "--epochs 5" in script
    assert "--model-dir 's3://runs/7/trials/${trialSpec.Name}/model'" in script
    assert "--learning-rate ${trialParameters.learningRate}" in script


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "Taxi_Tune"], "experiment name 'Taxi_Tune': expected lower case letters"),
    (["--search-space", "nosuch"], "Invalid value for --search-space"),
])
def test_manifests_experiment_refuses_what_katib_would_refuse(args: list[str], message: str) -> None:
    result = invoke("manifests", "experiment", "--train-data", "s3://b/fit", "--eval-data", "s3://b/holdout",
                    "--output-uri", "s3://b/trials", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_drift_exits_with_the_level_and_prints_the_worst_features_first(taxi_csv: Path, tmp_path: Path) -> None:
    from slipway.sample_data import fetch_sample

    result = invoke("drift", "--reference", str(taxi_csv), "--current", str(fetch_sample()["data2.csv"]),
                    "--mmd-rows", "0", "--report", str(tmp_path / "drift.html"))
    assert result.exit_code == 2, result.output  # critical
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("feature "))
    assert lines[header + 1].split()[0] in {"pickup_longitude", "pickup_latitude", "pickup_community_area"}
    assert lines[-1] == "drift: critical"
    page = (tmp_path / "drift.html").read_text()
    assert "<strong>Drift: critical</strong>" in page and page.count("data:image/png;base64,") == 14
    same = invoke("drift", "--reference", str(taxi_csv), "--current", str(taxi_csv), "--mmd-rows", "0")
    assert same.exit_code == 0 and same.output.splitlines()[-1] == "drift: none"


def test_drift_names_the_column_the_current_data_lacks_and_exits_3(taxi_csv: Path, tmp_path: Path) -> None:
    import pandas as pd

    pd.read_csv(taxi_csv).drop(columns=["company"]).to_csv(tmp_path / "batch.csv", index=False)
    result = invoke("drift", "--reference", str(taxi_csv), "--current", str(tmp_path / "batch.csv"))
    assert result.exit_code == 3
    assert "the current data:" in result.output and "missing column(s) ['company']" in result.output

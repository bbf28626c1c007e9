"""Local tuning: the search space as an Optuna study whose trials are the real trainer on the sample's training
sets, each logged to MLflow as a child of the study's run."""

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import S3_BUCKET
from mlflow.tracking import MlflowClient

from slipway.components.search_space import SEARCH_SPACES_DIR, parse_search_space
from slipway.components.tracking import TrackingConfig
from slipway.components.train_config import TrainConfig
from slipway.components.tuning import KatibTarget, holdout_split, pruner, sampler, tune, tune_training
from slipway.problem import load_problem


def space_with(**changes):
    raw = yaml.safe_load((SEARCH_SPACES_DIR / "default.yaml").read_text()) | changes
    return parse_search_space(raw, "space.yaml")


@pytest.mark.parametrize(("algorithm", "expected"), [
    ({"name": "random", "settings": {"random_state": 1}}, optuna.samplers.RandomSampler),
    ({"name": "tpe", "settings": {"gamma": 0.25, "n_EI_candidates": 12}}, optuna.samplers.TPESampler),
    ({"name": "bayesianoptimization"}, optuna.samplers.GPSampler),
])
def test_each_katib_algorithm_runs_as_its_optuna_equivalent(algorithm: dict, expected: type) -> None:
    assert isinstance(sampler(space_with(algorithm=algorithm)), expected)


def test_grid_search_visits_the_product_of_every_parameters_values() -> None:
    space = space_with(algorithm={"name": "grid"},
                       parameters={"dropout": {"type": "double", "min": 0.0, "max": 0.2, "step": 0.1},
                                   "batch_size": {"type": "discrete", "values": [128, 256]}})
    grid = sampler(space)
    assert isinstance(grid, optuna.samplers.GridSampler)
    assert grid._search_space == {"dropout": [0.0, 0.1, 0.2], "batch_size": [128, 256]}


def test_median_stopping_and_hyperband_become_optuna_pruners() -> None:
    median = pruner(space_with())
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (4, 2)  # min_trials_required 4, start_step 3
    hyperband = space_with(algorithm={"name": "hyperband", "settings": {"resource_name": "epochs", "r_l": 9}},
                           parameters={"epochs": {"type": "int", "min": 1, "max": 9}})
    assert isinstance(pruner(hyperband), optuna.pruners.HyperbandPruner)
    assert isinstance(pruner(space_with(early_stopping=None)), optuna.pruners.NopPruner)


def test_a_study_trains_real_trials_in_parallel_prunes_the_weak_and_nests_them_in_mlflow(
        taxi_training_sets: tuple[Path, Path], tmp_path: Path) -> None:
    space = space_with(budget={"max_trials": 6, "parallel_trials": 2, "max_failed_trials": 1},
                       early_stopping={"algorithm": "medianstop", "min_trials_required": 2, "start_step": 1},
                       objective={"metric": "eval_auc", "direction": "maximize"})
    tracking = TrackingConfig.embedded(tmp_path / "mlflow")
    result = tune(space, *taxi_training_sets, load_problem(), tmp_path, base=TrainConfig(epochs=3),
                  tracking=tracking)

    assert len(result.trials) == 6 and result.counts()["FAIL"] == 0
    completed = [t for t in result.trials if t.state == "COMPLETE"]
    assert result.best_value == max(t.value for t in completed) > 0.8
    assert result.best_config == space.train_config(result.best_params, TrainConfig(epochs=3))
    assert all(t.epochs == 3 for t in completed)
    client = MlflowClient(tracking.tracking_uri)
    study_run = client.get_run(result.mlflow_run_id)
    assert study_run.data.params["algorithm"] == "tpe" and study_run.info.status == "FINISHED"
    assert study_run.data.metrics["best_eval_auc"] == pytest.approx(result.best_value)
    for trial in result.trials:
        if trial.state == "COMPLETE":
            child = client.get_run(trial.mlflow_run_id)
            assert child.data.tags["mlflow.parentRunId"] == result.mlflow_run_id
            assert float(child.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
    children = client.search_runs([study_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'")
    assert len(children) == 6  # pruned trials too, recorded as KILLED
    assert sorted(r.info.status for r in children) == sorted(
        "FINISHED" if t.state == "COMPLETE" else "KILLED" for t in result.trials)


def test_the_study_stops_once_a_trial_reaches_the_goal(taxi_training_sets: tuple[Path, Path], tmp_path: Path) -> None:
    space = space_with(budget={"max_trials": 5, "parallel_trials": 1, "max_failed_trials": 0}, early_stopping=None,
                       objective={"metric": "eval_auc", "direction": "maximize", "goal": 0.5})
    result = tune(space, *taxi_training_sets, load_problem(), tmp_path, base=TrainConfig(epochs=1))
    assert len(result.trials) == 1 and result.best_value >= 0.5 and result.mlflow_run_id is None


# --- the pipeline's tune step: off, a study here, or a Katib Experiment -----------------------------------------


def test_the_holdout_is_the_newest_fifth_of_the_train_split_and_the_eval_split_is_not_touched(
        taxi_training_sets: tuple[Path, Path], tmp_path: Path) -> None:
    train_path, eval_path = taxi_training_sets
    fit_rows, holdout_rows = holdout_split(train_path, load_problem(), tmp_path / "fit", tmp_path / "holdout")
    fit, holdout, train = (pd.read_parquet(p) for p in (tmp_path / "fit", tmp_path / "holdout", train_path))
    assert (fit_rows, holdout_rows) == (len(fit), len(holdout)) and fit_rows + holdout_rows == len(train)
    assert holdout_rows == pytest.approx(0.2 * len(train), abs=50)
    assert fit["trip_start_timestamp"].max() < holdout["trip_start_timestamp"].min()
    evaluation_start = pd.read_parquet(eval_path)["trip_start_timestamp"].min()
    assert holdout["trip_start_timestamp"].max() < evaluation_start


def test_tuning_off_hands_the_given_hyperparameters_on(taxi_training_sets: tuple[Path, Path], tmp_path: Path) -> None:
    base = TrainConfig(learning_rate=0.02, epochs=4)
    outcome = tune_training("off", None, taxi_training_sets[0], load_problem(), tmp_path, base)
    assert outcome.config == base and outcome.metrics == {} and "Tuning is off" in outcome.markdown
    assert list(tmp_path.iterdir()) == [], "no split, no trial: nothing is done when tuning is off"


def test_an_optuna_tune_step_keeps_unsearched_fields_and_reports_its_trials(
        taxi_training_sets: tuple[Path, Path], tmp_path: Path) -> None:
    space = space_with(budget={"max_trials": 3, "parallel_trials": 1, "max_failed_trials": 0}, early_stopping=None,
                       parameters={"learning_rate": {"type": "double", "min": 0.001, "max": 0.03, "log": True}})
    base = TrainConfig(epochs=2, dropout=0.3, hidden_units=(16,))
    outcome = tune_training("optuna", space, taxi_training_sets[0], load_problem(), tmp_path, base)
    assert (outcome.config.epochs, outcome.config.dropout, outcome.config.hidden_units) == (2, 0.3, (16,))
    assert outcome.config.learning_rate == outcome.metrics["best_learning_rate"] != base.learning_rate
    assert outcome.metrics["trials_complete"] == 3 and 0.5 < outcome.metrics["best_holdout_auc"] <= 1
    table = [line for line in outcome.markdown.splitlines() if line.startswith("| ") and "COMPLETE" in line]
    assert len(table) == 3 and f"**{outcome.metrics['best_holdout_auc']:.4f}**" in table[0]


def test_a_katib_tune_step_puts_the_splits_where_its_trials_read_them_and_trains_with_the_best_trial(
        taxi_training_sets: tuple[Path, Path], tmp_path: Path, s3_config, monkeypatch) -> None:
    from fake_apiserver import FakeApiServer
    from katib_webhook import webhook_errors
    from test_katib_experiment import BEST, EXPERIMENT_SUCCEEDS

    from slipway.components.katib_experiment import EXPERIMENT
    from slipway.components.search_space import load_search_space
    from slipway.storage import download

    for name, value in {"AWS_ENDPOINT_URL": s3_config.s3_endpoint, "AWS_REGION": s3_config.s3_region,
                        "AWS_ACCESS_KEY_ID": s3_config.s3_access_key,
                        "AWS_SECRET_ACCESS_KEY": s3_config.s3_secret_key}.items():
        monkeypatch.setenv(name, value)
    target = KatibTarget(image="ghcr.io/slipway-ml/slipway-core:0.1.0", namespace="kubeflow-user",
                         experiment_name="slipway-tune-3f2a9c", storage_uri=f"s3://{S3_BUCKET}/run-1/tune/trials.katib",
                         problem="chicago_taxi", credentials_secret="mlpipeline-s3", poll_s=0.01)
    base = TrainConfig(epochs=7)
    with FakeApiServer({EXPERIMENT: webhook_errors}, EXPERIMENT_SUCCEEDS) as apiserver:
        outcome = tune_training("katib", load_search_space(), taxi_training_sets[0], load_problem(), tmp_path, base,
                                katib=target, api=apiserver.api())
        [experiment] = apiserver.objects.values()
    assert outcome.config == load_search_space().train_config(
        {a["name"]: a["value"] for a in BEST["parameterAssignments"]}, base)
    assert outcome.config.epochs == 7 and outcome.metrics["best_holdout_auc"] == 0.9281
    script = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    data = f"s3://{S3_BUCKET}/run-1/tune/trials.katib/data"
    assert f"--train {data}/fit.parquet --eval {data}/holdout.parquet" in script
    download(f"{data}/holdout.parquet", tmp_path / "holdout-from-s3.parquet", s3_config)
    assert pd.read_parquet(tmp_path / "holdout-from-s3.parquet").equals(pd.read_parquet(tmp_path / "holdout.parquet"))

"""Local tuning: the search space as an Optuna study whose trials are the real trainer on the sample's training
sets, each logged to MLflow as a child of the study's run."""

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from slipway.components.search_space import SEARCH_SPACES_DIR, parse_search_space
from slipway.components.tracking import TrackingConfig
from slipway.components.train_config import TrainConfig
from slipway.components.tuning import pruner, sampler, tune
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

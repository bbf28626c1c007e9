"""The search space as a Katib Experiment: admitted by Katib's webhook rules, and each trial runs the real trainer
with Katib's substituted values parsed back into exactly the assigned TrainConfig."""

import copy
import re
import shlex

import pytest
import yaml
from katib_webhook import webhook_errors

from slipway.components.katib_experiment import (
    METRICS_FILTER,
    ExperimentSpecError,
    TrialJob,
    build_experiment,
    experiment_manifest,
)
from slipway.components.search_space import SEARCH_SPACES_DIR, load_search_space, parse_search_space
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import _parser

TRIAL = TrialJob(image="ghcr.io/slipway-ml/slipway-core:0.1.0", train_data="s3://runs/42/train",
                 eval_data="s3://runs/42/eval", output_uri="s3://runs/42/tune", problem="chicago_taxi",
                 tracking_uri="http://mlflow.kubeflow:5000", credentials_secret="mlpipeline-s3")


def manifest(space=None, name: str = "taxi-tune") -> dict:
    return experiment_manifest(build_experiment(space or load_search_space(), name, "kubeflow", TRIAL))


def space_with(**changes):
    raw = yaml.safe_load((SEARCH_SPACES_DIR / "default.yaml").read_text()) | changes
    return parse_search_space(raw, "space.yaml")


@pytest.mark.parametrize("algorithm", [
    {"name": "tpe", "settings": {"random_state": 0, "gamma": 0.25}},
    {"name": "random", "settings": {"random_state": 3}},
    {"name": "bayesianoptimization", "settings": {"base_estimator": "GP", "n_initial_points": 5}},
])
def test_the_experiment_is_admitted_by_katibs_webhook_rules(algorithm: dict) -> None:
    experiment = manifest(space_with(algorithm=algorithm))
    assert webhook_errors(experiment) == []
    assert (experiment["apiVersion"], experiment["kind"]) == ("kubeflow.org/v1beta1", "Experiment")
    assert experiment["spec"]["algorithm"]["algorithmName"] == algorithm["name"]


def test_a_grid_experiment_carries_each_ranges_step() -> None:
    space = space_with(algorithm={"name": "grid"},
                       parameters={"dropout": {"type": "double", "min": 0.0, "max": 0.3, "step": 0.1},
                                   "batch_size": {"type": "discrete", "values": [128, 256]}})
    experiment = manifest(space)
    assert webhook_errors(experiment) == []
    assert experiment["spec"]["parameters"][0]["feasibleSpace"] == {"min": "0.0", "max": "0.3", "step": "0.1",
                                                                    "distribution": "uniform"}


def test_the_space_maps_to_katibs_parameter_objective_budget_and_early_stopping() -> None:
    spec = manifest()["spec"]
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "eval_auc", "goal": 0.95}
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (20, 2, 3)
    parameters = {p["name"]: (p["parameterType"], p["feasibleSpace"]) for p in spec["parameters"]}
    assert parameters["learning_rate"] == ("double", {"min": "0.0003", "max": "0.03", "distribution": "logUniform"})
    assert parameters["batch_size"] == ("discrete", {"list": ["128", "256", "512"]})
    assert parameters["hidden_units"] == ("categorical", {"list": ["64 32", "128 64", "128 64 32", "32"]})
    assert spec["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "4"}, {"name": "start_step", "value": "3"}]}


def substitute(experiment: dict, assignment: dict[str, str], trial_name: str) -> list[str]:
    """What Katib does for one trial: fill the template's placeholders; returns the trainer's argv."""
    template = experiment["spec"]["trialTemplate"]
    [container] = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    command = container["command"][2].replace("${trialSpec.Name}", trial_name)
    for parameter in template["trialParameters"]:
        command = command.replace(f"${{trialParameters.{parameter['name']}}}", assignment[parameter["reference"]])
    words = shlex.split(command)  # as `sh -c` splits it
    assert words[:4] == ["exec", "python", "-m", "slipway.components.trainer"]
    return words[4:]


def test_each_trial_runs_the_trainer_with_exactly_the_assigned_values() -> None:
    space = load_search_space()
    experiment = manifest(space)
    assignment = {"learning_rate": "0.0071", "weight_decay": "3.5e-05", "dropout": "0.15", "batch_size": "512",
                  "hidden_units": "128 64 32"}
    args = _parser().parse_args(substitute(experiment, assignment, "taxi-tune-x7k2p9"))
    trained = TrainConfig(**{field: (tuple(getattr(args, field)) if field == "hidden_units" else getattr(args, field))
                             for field in TrainConfig.__dataclass_fields__})
    assert trained == space.train_config(assignment)
    assert (args.train, args.eval, args.problem) == ("s3://runs/42/train", "s3://runs/42/eval", "chicago_taxi")
    assert args.model_dir == "s3://runs/42/tune/taxi-tune-x7k2p9/model"  # one folder per trial
    assert args.tracking_uri == "http://mlflow.kubeflow:5000"


def test_the_trial_reads_object_storage_credentials_from_the_secret_never_as_values() -> None:
    [container] = manifest()["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {"AWS_ACCESS_KEY_ID": {"name": "mlpipeline-s3", "key": "AWS_ACCESS_KEY_ID"},
                       "AWS_SECRET_ACCESS_KEY": {"name": "mlpipeline-s3", "key": "AWS_SECRET_ACCESS_KEY"}}


def test_katibs_metrics_filter_reads_eval_auc_from_the_trainers_epoch_line_and_nothing_else() -> None:
    line = "2026-11-24 00:40:01,123 INFO slipway.components.trainer: epoch 3/20  loss 0.4123  eval_auc 0.9102  " \
           "47,526 rows/s"
    assert re.findall(METRICS_FILTER, line) == [("eval_auc", "0.9102")]
    assert re.findall(METRICS_FILTER, "saved the epoch-3 model (eval AUC 0.9102) to s3://x") == []


@pytest.mark.parametrize(("breakage", "refusal"), [
    (lambda e: e["spec"]["trialTemplate"]["trialParameters"].pop(),
     "parameters: ['${trialParameters.hiddenUnits}'] in spec.trialTemplate not found in spec.trialParameters"),
    (lambda e: e["spec"]["trialTemplate"]["trialSpec"].setdefault("metadata", {}).update(name="trial"),
     "metadata.name and metadata.namespace in spec.trialTemplate must be omitted"),
    (lambda e: e["spec"]["trialTemplate"]["trialParameters"][0].update(reference="lr"),
     "parameter reference lr does not exist in spec.parameters"),
    (lambda e: e["spec"].update(parallelTrialCount=50), "should be less than or equal to spec.maxTrialCount"),
    (lambda e: e["spec"]["algorithm"].update(algorithmName="genetic"), "unable to get Suggestion config data"),
    (lambda e: e["spec"]["trialTemplate"].pop("primaryContainerName"), "primaryContainerName: must be specified"),
    (lambda e: e["spec"]["metricsCollectorSpec"]["source"]["filter"].update(metricsFormat=["eval_auc=(.*)"]),
     "two top subexpressions are required"),
    (lambda e: e["spec"]["trialTemplate"]["trialSpec"]["spec"].update(restartPolicyy="Never"),
     "does not convert to a batch/v1 Job"),
])
def test_the_webhook_oracle_refuses_what_katib_refuses(breakage, refusal: str) -> None:
    """Each rule the emitted Experiment is checked against can fail: break one thing, get that refusal."""
    experiment = copy.deepcopy(manifest())
    breakage(experiment)
    assert any(refusal in error for error in webhook_errors(experiment)), webhook_errors(experiment)


def test_an_experiment_name_katib_cannot_use_is_refused_before_building() -> None:
    with pytest.raises(ExperimentSpecError, match="experiment name 'Taxi_Tune'"):
        manifest(name="Taxi_Tune")

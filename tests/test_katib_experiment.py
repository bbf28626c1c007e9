"""The search space as a Katib Experiment: admitted by Katib's webhook rules, and each trial runs the real trainer
with Katib's substituted values parsed back into exactly the assigned TrainConfig."""

import copy
import logging
import re
import shlex
from collections.abc import Iterator

import pytest
import yaml
from fake_apiserver import FakeApiServer
from katib_webhook import webhook_errors

from slipway.components.custom_objects import CustomObjectError, ObjectFailedError, SubmitError
from slipway.components.katib_experiment import (
    EXPERIMENT,
    METRICS_FILTER,
    ExperimentSpecError,
    TrialJob,
    build_experiment,
    experiment_manifest,
    experiment_outcome,
    run_experiment,
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


def test_the_trial_reads_storage_and_mlflow_credentials_from_secrets_never_as_values() -> None:
    [container] = manifest()["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {"AWS_ACCESS_KEY_ID": {"name": "mlpipeline-s3", "key": "AWS_ACCESS_KEY_ID", "optional": True},
                       "AWS_SECRET_ACCESS_KEY": {"name": "mlpipeline-s3", "key": "AWS_SECRET_ACCESS_KEY",
                                                 "optional": True},
                       # The trial logs to MLflow: the base's asks for the basic-auth user of `slipway-auth`.
                       "MLFLOW_TRACKING_USERNAME": {"name": "slipway-auth", "key": "MLFLOW_TRACKING_USERNAME",
                                                    "optional": True},
                       "MLFLOW_TRACKING_PASSWORD": {"name": "slipway-auth", "key": "MLFLOW_TRACKING_PASSWORD",
                                                    "optional": True}}


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


# --- on the cluster: created, followed and read back, against a fake API server with the webhook's rules --------


def condition(kind: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


BEST = {"bestTrialName": "taxi-tune-7x2kq",
        "parameterAssignments": [{"name": name, "value": value} for name, value in (
            ("learning_rate", "0.0123"), ("weight_decay", "1e-05"), ("dropout", "0.1"), ("batch_size", "256"),
            ("hidden_units", "128 64"))],
        "observation": {"metrics": [{"name": "eval_auc", "min": "0.9012", "max": "0.9281", "latest": "0.9270"}]}}
EXPERIMENT_SUCCEEDS = [
    {"conditions": [condition("Created", "ExperimentCreated")]},
    {"conditions": [condition("Created", "ExperimentCreated"), condition("Running", "ExperimentRunning")],
     "trials": 3, "trialsSucceeded": 1, "trialsRunning": 2, "currentOptimalTrial": {
         **BEST, "observation": {"metrics": [{"name": "eval_auc", "min": "0.88", "max": "0.9105", "latest": "0.91"}]}}},
    {"conditions": [condition("Created", "ExperimentCreated"),
                    condition("Succeeded", "ExperimentMaxTrialsReached", "Experiment has succeeded because max "
                                                                         "trial count has reached")],
     "trials": 6, "trialsSucceeded": 4, "trialsEarlyStopped": 2, "currentOptimalTrial": BEST},
]


@pytest.fixture
def katib_apiserver() -> Iterator[FakeApiServer]:
    with FakeApiServer({EXPERIMENT: webhook_errors}, EXPERIMENT_SUCCEEDS) as server:
        yield server


def test_the_experiment_is_created_followed_and_its_best_trial_read_back_typed(
        katib_apiserver: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    space = load_search_space()
    with caplog.at_level(logging.INFO, logger="slipway.components"):
        outcome = run_experiment(build_experiment(space, "taxi-tune", "kubeflow", TRIAL), space,
                                 katib_apiserver.api(), poll_s=0.01, sleep=lambda s: None)
    [stored] = katib_apiserver.objects.values()
    assert stored["spec"]["maxTrialCount"] == 20
    assert outcome.best_params == {"learning_rate": 0.0123, "weight_decay": 1e-05, "dropout": 0.1,
                                   "batch_size": 256, "hidden_units": "128 64"}
    assert space.train_config(outcome.best_params).hidden_units == (128, 64)
    assert (outcome.best_value, outcome.best_trial, outcome.reason) == (0.9281, "taxi-tune-7x2kq",
                                                                        "ExperimentMaxTrialsReached")
    assert outcome.trials["early_stopped"] == 2
    assert ("Experiment kubeflow/taxi-tune: Created, Running (ExperimentRunning), trials 3/20: 1 succeeded, "
            "2 running, 0 failed, 0 early stopped; best eval_auc 0.9105 (taxi-tune-7x2kq)") in caplog.messages
    assert "| `hidden_units` | 128 64 |" in outcome.markdown(space)


def test_an_experiment_the_webhook_refuses_is_named_with_its_reason(katib_apiserver: FakeApiServer) -> None:
    broken = build_experiment(load_search_space(), "taxi-tune", "kubeflow", TRIAL)
    broken.spec.trial_template.success_condition = None
    with pytest.raises(SubmitError, match="could not create Experiment kubeflow/taxi-tune: HTTP 422 .*"
                                          "successCondition and failureCondition must be specified"):
        run_experiment(broken, load_search_space(), katib_apiserver.api(), poll_s=0.01, sleep=lambda s: None)


def test_too_many_failed_trials_fail_the_experiment_with_katibs_reason() -> None:
    failing = [EXPERIMENT_SUCCEEDS[0], {"trials": 4, "trialsFailed": 4, "conditions": [
        condition("Created", "ExperimentCreated"),
        condition("Failed", "ExperimentMaxFailedTrialsReached", "Experiment has failed because max failed count has "
                                                                "reached")]}]
    space = load_search_space()
    with FakeApiServer({EXPERIMENT: webhook_errors}, failing) as server, pytest.raises(ObjectFailedError) as raised:
        run_experiment(build_experiment(space, "taxi-tune", "kubeflow", TRIAL), space, server.api(), poll_s=0.01,
                       sleep=lambda s: None)
    assert str(raised.value) == ("Experiment kubeflow/taxi-tune failed: ExperimentMaxFailedTrialsReached: "
                                 "Experiment has failed because max failed count has reached")


def test_an_experiment_that_ends_without_an_objective_value_says_so() -> None:
    status = {"conditions": [condition("Succeeded", "ExperimentMaxTrialsReached")], "trials": 2,
              "currentOptimalTrial": {"bestTrialName": "", "observation": {"metrics": [
                  {"name": "eval_auc", "min": "unavailable", "max": "unavailable", "latest": "unavailable"}]}}}
    with pytest.raises(CustomObjectError, match="finished without a trial that reported eval_auc"):
        experiment_outcome({"metadata": {"name": "t", "namespace": "k"}, "status": status}, load_search_space())

"""A search space as a Katib Experiment (kubeflow.org/v1beta1), built with Katib's API model classes.

Each trial is a batch/v1 Job running the training image's own trainer (`python -m
slipway.components.trainer`) with the run's data and fixed options, and each searched field as
`${trialParameters.<name>}`, which Katib substitutes per trial. Katib's StdOut metrics collector
reads the objective from the trainer's per-epoch log line (`epoch 3/20  loss 0.4123  eval_auc
0.9102 ...`) through a filter, so intermediate values are there for median early stopping, and the
objective's default strategy (max for maximize) picks the best epoch, the one the trainer saves.

`run_experiment` creates the Experiment through the Kubernetes API and follows it with its trial
counts and best value so far, then reads the best trial's parameters back from the status
(`currentOptimalTrial`), typed as the search space lists them. The Kubeflow SDK's OptimizerClient
is not used: it builds its own Experiment around a TrainJob template from literal values, so the
trials could not read object-storage credentials from a Secret (as for the training jobs).

How this is verified: Katib's Experiment CRD carries no OpenAPI schema, so the tests check the
emitted object against the rules of Katib's validating admission webhook
(pkg/webhook/v1beta1/experiment/validator), re-stated in tests/katib_webhook.py, and run it
against a fake API server that admits by those rules and reports a scripted status. Not verified:
Katib's controller, suggestion services and metrics collector themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import shlex
from collections.abc import Mapping
from typing import Any

from kubeflow_katib_api import models
from kubernetes import client

from slipway import pod_security
from slipway.components import custom_objects
from slipway.components.search_space import Parameter, SearchSpace
from slipway.components.tracking import TrackingConfig
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import trainer_arguments
from slipway.components.training_jobs import credential_env, mlflow_credentials_env

API_VERSION = "kubeflow.org/v1beta1"
PRIMARY_CONTAINER = "training"
# Two groups, name then value, as Katib's filter requires; matches the trainer's per-epoch line.
METRICS_FILTER = r"(eval_auc)\s+([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
# GJSON conditions on the trial Job's status (Katib's own examples for batch/v1 Job).
SUCCESS_CONDITION = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
# Each trial writes its model under the output URI, in a folder named after the trial (a Katib meta key).
TRIAL_NAME = "${trialSpec.Name}"
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
log = logging.getLogger(__name__)

EXPERIMENT = custom_objects.CustomResource("kubeflow.org", "v1beta1", "experiments", "Experiment", "Succeeded")


class ExperimentSpecError(ValueError):
    """The Experiment cannot be built as asked; the message names the field."""


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """What every trial runs: the image, the data, where models go, and the options that are not searched.

    URIs are object storage that the trial pods read and write (`credentials_secret` names the
    Secret with its keys, as for the training jobs).
    """

    image: str
    train_data: str
    eval_data: str
    output_uri: str
    problem: str
    base: TrainConfig = TrainConfig()
    tracking_uri: str = ""
    credentials_secret: str = ""


def trial_parameter_name(field: str) -> str:
    """Katib's convention for trial parameter names: camelCase (`learning_rate` -> `learningRate`)."""
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def build_experiment(space: SearchSpace, name: str, namespace: str, trial: TrialJob) -> models.V1beta1Experiment:
    """The Experiment that runs `space` on Kubeflow with `trial`'s image and data."""
    if not _NAME.fullmatch(name) or len(name) > 40:
        raise ExperimentSpecError(f"experiment name {name!r}: expected lower case letters, digits and '-', starting "
                                  f"with a letter, at most 40 characters (Katib names trials and jobs after it)")
    early_stopping = None
    if space.early_stopping is not None:
        early_stopping = models.V1beta1EarlyStoppingSpec(
            algorithmName=space.early_stopping.algorithm,
            algorithmSettings=[
                models.V1beta1EarlyStoppingSetting(name="min_trials_required",
                                                   value=str(space.early_stopping.min_trials_required)),
                models.V1beta1EarlyStoppingSetting(name="start_step", value=str(space.early_stopping.start_step))])
    spec = models.V1beta1ExperimentSpec(
        earlyStopping=early_stopping,
        objective=models.V1beta1ObjectiveSpec(
            type=space.objective.direction, objectiveMetricName=space.objective.metric,
            goal=space.objective.goal),
        algorithm=models.V1beta1AlgorithmSpec(
            algorithmName=space.algorithm.name,
            algorithmSettings=[models.V1beta1AlgorithmSetting(name=key, value=str(value))
                               for key, value in space.algorithm.settings.items()] or None),
        maxTrialCount=space.budget.max_trials,
        parallelTrialCount=space.budget.parallel_trials,
        maxFailedTrialCount=space.budget.max_failed_trials,
        parameters=[_parameter_spec(parameter) for parameter in space.parameters],
        metricsCollectorSpec=models.V1beta1MetricsCollectorSpec(
            collector=models.V1beta1CollectorSpec(kind="StdOut"),
            source=models.V1beta1SourceSpec(filter=models.V1beta1FilterSpec(metricsFormat=[METRICS_FILTER]))),
        trialTemplate=models.V1beta1TrialTemplate(
            primaryContainerName=PRIMARY_CONTAINER,
            successCondition=SUCCESS_CONDITION,
            failureCondition=FAILURE_CONDITION,
            trialParameters=[models.V1beta1TrialParameterSpec(
                name=trial_parameter_name(p.name), reference=p.name, description=f"TrainConfig.{p.name}")
                for p in space.parameters],
            trialSpec=trial_job(space, trial)),
    )
    return models.V1beta1Experiment(apiVersion=API_VERSION, kind="Experiment",
                                    metadata={"name": name, "namespace": namespace}, spec=spec)


def experiment_manifest(experiment: models.V1beta1Experiment) -> dict[str, Any]:
    """Plain JSON with the API's camelCase names, for `kubectl apply` or the Kubernetes API."""
    return experiment.to_dict()


def _parameter_spec(parameter: Parameter) -> models.V1beta1ParameterSpec:
    if parameter.is_range:
        space = models.V1beta1FeasibleSpace(
            min=str(parameter.min), max=str(parameter.max),
            step=None if parameter.step is None else str(parameter.step),
            distribution="logUniform" if parameter.log else "uniform")
    else:
        space = models.V1beta1FeasibleSpace(list=[str(value) for value in parameter.values])
    return models.V1beta1ParameterSpec(name=parameter.name, parameterType=parameter.type, feasibleSpace=space)


def trial_job(space: SearchSpace, trial: TrialJob) -> dict[str, Any]:
    """The batch/v1 Job each trial runs, with `${trialParameters.x}` where a searched value goes."""
    searched = {p.name for p in space.parameters}
    tracking = TrackingConfig(tracking_uri=trial.tracking_uri) if trial.tracking_uri else None
    model_dir = f"{trial.output_uri}/{TRIAL_NAME}/model"
    fixed = _without_flags(trainer_arguments(trial.train_data, trial.eval_data, model_dir, "/tmp/slipway-checkpoints",
                                             trial.problem, trial.base, tracking), searched)
    # A shell, so that a multi-valued option (hidden_units "128 64") splits into the trainer's arguments.
    script = " ".join(["exec python -m slipway.components.trainer", shlex.join(fixed)] + [
        f"--{p.name.replace('_', '-')} ${{trialParameters.{trial_parameter_name(p.name)}}}" for p in space.parameters])
    container: dict[str, Any] = {"name": PRIMARY_CONTAINER, "image": trial.image, "command": ["sh", "-c", script],
                                 "securityContext": pod_security.as_json(pod_security.container_context())}
    env = _env(trial)
    if env:
        container["env"] = env
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "backoffLimit": 0,  # a failed trial is Katib's to count, not the Job's to retry
            "template": {
                "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                # The pod's context also covers the metrics collector that Katib injects beside the trainer.
                "spec": {"restartPolicy": "Never", "containers": [container],
                         "securityContext": pod_security.as_json(pod_security.pod_context())},
            },
        },
    }


def _without_flags(args: list[str], fields: set[str]) -> list[str]:
    """The trainer's argv without the flags (and their values) of the searched fields."""
    flags = {"--" + field.replace("_", "-") for field in fields}
    kept, skipping = [], False
    for token in args:
        if token.startswith("--"):
            skipping = token in flags
        if not skipping:
            kept.append(token)
    return kept


def _env(trial: TrialJob) -> list[Mapping[str, Any]]:
    variables: list[Mapping[str, Any]] = []
    if trial.tracking_uri:
        variables.append({"name": "MLFLOW_TRACKING_URI", "value": trial.tracking_uri})
        variables += mlflow_credentials_env()
    if trial.credentials_secret:
        variables += credential_env(trial.credentials_secret)
    return variables


# --- running it on the cluster -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExperimentOutcome:
    """How a finished Experiment ended, and its best trial's parameters, typed as the space lists them."""

    name: str
    reason: str                  # the Succeeded condition's reason: ExperimentGoalReached, ...MaxTrialsReached
    best_trial: str
    best_params: dict[str, Any]
    best_value: float
    trials: dict[str, int]       # succeeded, failed, killed, early_stopped, metrics_unavailable

    def markdown(self, space: SearchSpace) -> str:
        counts = ", ".join(f"{count} {state.replace('_', ' ')}" for state, count in self.trials.items() if count)
        rows = "\n".join(f"| `{name}` | {value} |" for name, value in self.best_params.items())
        return (f"### Katib Experiment `{self.name}` ({space.algorithm.name})\n\n"
                f"Ended: {self.reason or 'Succeeded'}; trials: {counts or 'none'}. Every trial is in the Katib UI.\n\n"
                f"Best: trial `{self.best_trial}`, {space.objective.metric} **{self.best_value:.4f}**\n\n"
                f"| parameter | best value |\n|---|---|\n{rows}\n")


def run_experiment(experiment: models.V1beta1Experiment, space: SearchSpace, api: client.ApiClient,
                   **follow: Any) -> ExperimentOutcome:
    """Creates the Experiment (or follows the one a retried task created), waits for it, returns the best trial.

    `follow` goes to `custom_objects.follow` (poll_s, timeout_s). A Failed Experiment (more trials
    failed than the budget allows) raises ObjectFailedError with Katib's reason and message.
    """
    manifest = experiment_manifest(experiment)
    created = custom_objects.create(manifest, EXPERIMENT, api, adopt_existing=True)
    log.info("created %s: %d trials at most, %d at a time", custom_objects.describe(EXPERIMENT, manifest),
             space.budget.max_trials, space.budget.parallel_trials)
    finished = custom_objects.follow(created, EXPERIMENT, api, progress=functools.partial(trial_progress, space),
                                     **follow)
    return experiment_outcome(finished, space)


def trial_progress(space: SearchSpace, status: Mapping[str, Any]) -> str:
    """`trials 7/20: 5 succeeded, 2 running, 0 failed, 1 early stopped; best eval_auc 0.9241 (taxi-tune-x7k2)`."""
    parsed = models.V1beta1ExperimentStatus.from_dict(dict(status))
    if parsed is None or not parsed.trials:
        return ""
    text = (f"trials {parsed.trials}/{space.budget.max_trials}: {parsed.trials_succeeded or 0} succeeded, "
            f"{parsed.trials_running or 0} running, {parsed.trials_failed or 0} failed, "
            f"{parsed.trials_early_stopped or 0} early stopped")
    best = _best_value(parsed, space)
    if best is not None:
        text += f"; best {space.objective.metric} {best:.4f} ({parsed.current_optimal_trial.best_trial_name})"
    return text


def experiment_outcome(experiment: Mapping[str, Any], space: SearchSpace) -> ExperimentOutcome:
    """The best trial of a finished Experiment, from its status's `currentOptimalTrial`."""
    name = custom_objects.describe(EXPERIMENT, experiment)
    status = models.V1beta1ExperimentStatus.from_dict(dict(experiment.get("status") or {}))
    best = _best_value(status, space) if status is not None else None
    if best is None:
        raise custom_objects.CustomObjectError(f"{name} finished without a trial that reported "
                                               f"{space.objective.metric}: see its trials in the Katib UI")
    optimal = status.current_optimal_trial
    assignment = {p.name: p.value for p in optimal.parameter_assignments or []}
    succeeded = next((c for c in status.conditions or [] if c.type == "Succeeded"), None)
    return ExperimentOutcome(
        name=name, reason=succeeded.reason if succeeded else "", best_trial=optimal.best_trial_name or "",
        best_params=space.typed(assignment), best_value=best,
        trials={"succeeded": status.trials_succeeded or 0, "failed": status.trials_failed or 0,
                "killed": status.trials_killed or 0, "early_stopped": status.trials_early_stopped or 0,
                "metrics_unavailable": status.trial_metrics_unavailable or 0})


def _best_value(status: models.V1beta1ExperimentStatus, space: SearchSpace) -> float | None:
    """The best trial's objective: its best epoch (max when maximizing, Katib's default metric strategy)."""
    optimal = status.current_optimal_trial
    if optimal is None or optimal.observation is None:
        return None
    for metric in optimal.observation.metrics or []:
        if metric.name == space.objective.metric:
            value = metric.max if space.objective.direction == "maximize" else metric.min
            try:
                return float(value)
            except (TypeError, ValueError):  # "unavailable" before the first report
                return None
    return None

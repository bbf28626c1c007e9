"""A search space as a Katib Experiment (kubeflow.org/v1beta1), built with Katib's API model classes.

Each trial is a batch/v1 Job running the training image's own trainer (`python -m
slipway.components.trainer`) with the run's data and fixed options, and each searched field as
`${trialParameters.<name>}`, which Katib substitutes per trial. Katib's StdOut metrics collector
reads the objective from the trainer's per-epoch log line (`epoch 3/20  loss 0.4123  eval_auc
0.9102 ...`) through a filter, so intermediate values are there for median early stopping, and the
objective's default strategy (max for maximize) picks the best epoch, the one the trainer saves.

How this is verified: Katib's Experiment CRD carries no OpenAPI schema, so the tests check the
emitted object against the rules of Katib's validating admission webhook
(pkg/webhook/v1beta1/experiment/validator), re-stated in tests/katib_webhook.py.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping
from typing import Any

from kubeflow_katib_api import models

from slipway.components.search_space import Parameter, SearchSpace
from slipway.components.tracking import TrackingConfig
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import trainer_arguments
from slipway.components.training_jobs import credential_env

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
    container: dict[str, Any] = {"name": PRIMARY_CONTAINER, "image": trial.image, "command": ["sh", "-c", script]}
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
                "spec": {"restartPolicy": "Never", "containers": [container]},
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
    if trial.credentials_secret:
        variables += credential_env(trial.credentials_secret)
    return variables

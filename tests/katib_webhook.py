"""The rules of Katib's validating admission webhook for Experiments, re-stated as a test oracle.

Katib's Experiment CRD carries no OpenAPI schema, so a schema check would accept anything. These are
the checks `ValidateExperiment` makes (kubeflow/katib pkg/webhook/v1beta1/experiment/validator/
validator.go, v0.19) for a new Experiment, in the same order and with its messages, plus the algorithm
settings its suggestion services refuse (`ValidateAlgorithmSettings`), against the algorithms and early
stopping that Katib's default katib-config registers. `webhook_errors` returns one line per refusal,
"<field path>: <message>"; an Experiment Katib would admit gives [].
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubernetes import client

# katib-config's default suggestion and early stopping services (manifests/v1beta1/installs/katib-standalone).
ALGORITHMS = ("random", "grid", "hyperband", "bayesianoptimization", "tpe", "multivariate-tpe", "cmaes", "sobol",
              "enas", "darts", "pbt")
EARLY_STOPPING = ("medianstop",)
PARAMETER_TYPES = ("int", "double", "categorical", "discrete", "unknown")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal", "unknown")
RESUME_POLICIES = ("", "Never", "LongRunning", "FromVolume")
COLLECTORS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push")
NAMING = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?")  # Go's MatchString: a prefix match, as the webhook has it
TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\..+?\}")
META_KEY = re.compile(r"^\$\{trialSpec\.(.+?)\}$")
META_KEYS = ("Name", "Namespace", "Kind", "APIVersion", "Labels", "Annotations")
# What the hyperopt suggestion service (random, tpe) accepts as settings.
HYPEROPT_SETTINGS = {
    "tpe": {"gamma": lambda v: 0 < float(v) < 1, "prior_weight": lambda v: float(v) > 0,
            "n_EI_candidates": lambda v: int(v) > 0, "random_state": lambda v: int(v) >= 0},
    "random": {"random_state": lambda v: int(v) >= 0},
}


def webhook_errors(experiment: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    name = experiment.get("metadata", {}).get("name", "")
    if not NAMING.match(name):
        errors.append(f"metadata.name: {name!r} must consist of lower case alphanumeric characters or '-'")
    spec = experiment.get("spec", {})
    max_trials, parallel, max_failed = (spec.get(k) for k in ("maxTrialCount", "parallelTrialCount",
                                                                "maxFailedTrialCount"))
    if max_failed is not None and max_failed < 0:
        errors.append("spec.maxFailedTrialCount: should not be less than 0")
    if max_trials is not None and max_trials <= 0:
        errors.append("spec.maxTrialCount: must be greater than 0")
    if parallel is not None and parallel <= 0:
        errors.append("spec.parallelTrialCount: must be greater than 0")
    if max_failed is not None and max_trials is not None and max_failed > max_trials:
        errors.append("spec.maxFailedTrialCount: should be less than or equal to spec.maxTrialCount")
    if parallel is not None and max_trials is not None and parallel > max_trials:
        errors.append("spec.parallelTrialCount: should be less than or equal to spec.maxTrialCount")

    objective = spec.get("objective")
    if objective is None:
        return errors + ["spec.objective: must be specified"]
    objective_errors = []
    if objective.get("type") not in ("minimize", "maximize"):
        objective_errors.append("spec.objective.type: must be minimize or maximize")
    if not objective.get("objectiveMetricName"):
        objective_errors.append("spec.objective.objectiveMetricName: must be specified")
    if objective.get("objectiveMetricName") in (objective.get("additionalMetricNames") or []):
        objective_errors.append("spec.objective.additionalMetricNames: should not contain the objective metric")
    if objective_errors:
        return errors + objective_errors  # the webhook stops at a bad objective

    errors += _algorithm(spec.get("algorithm"))
    stopping = spec.get("earlyStopping")
    if stopping is not None and stopping.get("algorithmName") not in EARLY_STOPPING:
        errors.append(f"spec.earlyStopping.algorithmName: no config for {stopping.get('algorithmName')!r}")
    if spec.get("resumePolicy", "") not in RESUME_POLICIES:
        errors.append("spec.resumePolicy: invalid ResumePolicyType")
    errors += _trial_template(spec)
    parameters = spec.get("parameters") or []
    if not parameters and spec.get("nasConfig") is None:
        errors.append("spec: spec.parameters or spec.nasConfig must be specified")
    if parameters and spec.get("nasConfig") is not None:
        errors.append("spec: only one of spec.parameters and spec.nasConfig can be specified")
    errors += _parameters(parameters)
    errors += _metrics_collector(spec.get("metricsCollectorSpec") or {})
    return errors


def _algorithm(algorithm: dict[str, Any] | None) -> list[str]:
    if algorithm is None:
        return ["spec.algorithm: must be specified"]
    name = algorithm.get("algorithmName", "")
    if not name:
        return ["spec.algorithm.algorithmName: must be specified"]
    if name not in ALGORITHMS:
        return [f"spec.algorithm.algorithmName: unable to get Suggestion config data for algorithm {name}"]
    accepted = HYPEROPT_SETTINGS.get(name)
    errors = []
    for setting in algorithm.get("algorithmSettings") or []:
        if accepted is None:
            break
        check = accepted.get(setting["name"])
        try:
            valid = check is not None and check(setting["value"])
        except ValueError:
            valid = False
        if not valid:
            errors.append(f"spec.algorithm.algorithmSettings: {setting['name']}={setting['value']!r} refused by {name}")
    return errors


def _parameters(parameters: list[dict[str, Any]]) -> list[str]:
    errors = []
    for i, parameter in enumerate(parameters):
        path = f"spec.parameters[{i}]"
        kind, space = parameter.get("parameterType"), parameter.get("feasibleSpace") or {}
        if kind not in PARAMETER_TYPES:
            errors.append(f"{path}.parameterType: parameterType: {kind} is not supported")
        if space.get("distribution", "") and space["distribution"] not in DISTRIBUTIONS:
            errors.append(f"{path}.feasibleSpace.distribution: distribution: {space['distribution']} is not supported")
        if not space:
            errors.append(f"{path}.feasibleSpace: feasibleSpace must be specified")
        elif kind in ("double", "int"):
            if space.get("list"):
                errors.append(f"{path}.feasibleSpace.list: feasibleSpace.list is not supported for {kind}")
            if not space.get("max") or not space.get("min"):
                errors.append(f"{path}.feasibleSpace.max: feasibleSpace.max or feasibleSpace.min must be specified")
        elif kind in ("categorical", "discrete") and (space.get("max") or space.get("min") or space.get("step")):
            errors.append(f"{path}.feasibleSpace: feasibleSpace .max, .min and .step is not supported for {kind}")
    return errors


def _trial_template(spec: dict[str, Any]) -> list[str]:
    template = spec.get("trialTemplate")
    path = "spec.trialTemplate"
    if template is None:
        return [f"{path}: must be specified"]
    errors = []
    if not template.get("primaryContainerName"):
        errors.append(f"{path}.primaryContainerName: must be specified")
    if not template.get("successCondition") or not template.get("failureCondition"):
        errors.append(f"{path}: successCondition and failureCondition must be specified")
    if template.get("trialParameters") is None:
        return errors + [f"{path}.trialParameters: must be specified"]
    if (template.get("trialSpec") is None) == (template.get("configMap") is None):
        return errors + [f"{path}: exactly one of spec.trialTemplate.trialSpec or spec.trialTemplate.configMap"]
    if template.get("trialSpec") is None:
        return errors  # a ConfigMap's template is only read on the cluster
    text = json.dumps(template["trialSpec"])
    names = {p["name"] for p in spec.get("parameters") or []}
    seen_names, seen_references = set(), set()
    for i, parameter in enumerate(template["trialParameters"]):
        name, reference = parameter.get("name", ""), parameter.get("reference", "")
        if not name or not reference or "{" in name or "}" in name:
            errors.append(f"{path}.trialParameters[{i}]: name and reference must be specified, no '{{' or '}}' in name")
            continue
        if name in seen_names:
            errors.append(f"{path}.trialParameters[{i}].name: parameter name {name} can't be duplicated")
            continue
        if reference in seen_references:
            errors.append(f"{path}.trialParameters[{i}].reference: parameter reference {reference} can't be duplicated")
            continue
        seen_names.add(name)
        seen_references.add(reference)
        if names and not _is_meta_key(reference) and reference not in names:
            errors.append(f"{path}.trialParameters[{i}].reference: parameter reference {reference} does not exist "
                          f"in spec.parameters")
        placeholder = f"${{trialParameters.{name}}}"
        if placeholder not in text:
            return errors + [f"{path}.trialParameters[{i}].name: parameter name: {name} in spec.trialParameters not "
                             f"found in spec.trialTemplate"]
        text = text.replace(placeholder, "test-value")
    left = TRIAL_PARAMETER.findall(text)
    if left:
        errors.append(f"{path}: parameters: {left} in spec.trialTemplate not found in spec.trialParameters")
    job = json.loads(text)
    metadata = job.get("metadata") or {}
    if metadata.get("name") or metadata.get("namespace"):
        errors.append(f"{path}: metadata.name and metadata.namespace in spec.trialTemplate must be omitted")
    if not job.get("apiVersion") or not job.get("kind"):
        errors.append(f"{path}: APIVersion and Kind in spec.trialTemplate must be specified")
    if job.get("apiVersion") == "batch/v1" and job.get("kind") == "Job":
        errors += [f"{path}: invalid spec.trialTemplate: {field} does not convert to a batch/v1 Job"
                   for field in _lost_in_conversion(job)]
    return errors


def _lost_in_conversion(job: dict[str, Any]) -> list[str]:
    """Fields of `job` that a batch/v1 Job does not keep: the webhook converts and refuses any such loss."""
    api = client.ApiClient()

    class _Response:
        data = json.dumps(job)

    converted = api.sanitize_for_serialization(api.deserialize(_Response(), "V1Job"))
    return [path for path in _leaves(job) if _value_at(converted, path) != _value_at(job, path)]


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, path + (key,))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, path + (i,))]
    return [path]


def _value_at(value: Any, path: tuple) -> Any:
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return "<missing>"
    return value


def _is_meta_key(reference: str) -> bool:
    match = META_KEY.match(reference)
    return bool(match) and re.sub(r"\[.*\]$", "", match.group(1)) in META_KEYS


def _metrics_collector(collector_spec: dict[str, Any]) -> list[str]:
    kind = (collector_spec.get("collector") or {}).get("kind", "StdOut")
    errors = []
    if kind not in COLLECTORS:
        errors.append(f"spec.metricsCollectorSpec.collector.kind: invalid metrics collector kind: {kind}")
    source = collector_spec.get("source") or {}
    if kind == "File":
        file_path = source.get("fileSystemPath") or {}
        if file_path.get("kind") != "File" or not str(file_path.get("path", "")).startswith("/"):
            errors.append("spec.metricsCollectorSpec.source.fileSystemPath.path: file path where metrics file exists "
                          "is required")
    for metrics_format in (source.get("filter") or {}).get("metricsFormat") or []:
        try:
            re.compile(metrics_format)
        except re.error as exc:
            errors.append(f"spec.metricsCollectorSpec.source.filter.metricsFormat: invalid filter: {exc}")
            continue
        if not re.match(r".*\(.*\).*\(.*\).*", metrics_format):
            errors.append("spec.metricsCollectorSpec.source.filter.metricsFormat: two top subexpressions are required")
    return errors

"""The rules each step applies to its parameters, applied to a pipeline's arguments before anything runs.

A step refuses a bad value only when it runs: `epochs=0` after ingest, validation, the feature
store and tuning (minutes), `canary_steps=[200, 50]` after the model is registered. `slipway run`
calls `check_arguments` first, so the same refusal comes at once, naming the parameter. Each rule
here calls the step's own check (TrainConfig, the tuner's, the evaluation's threshold, the
blessing policy, the canary's steps and analysis policy, the drift and feedback policies), so a
rule lives in one place: this module only says which parameters each check reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from slipway.components.blessing import BlessingPolicy
from slipway.components.drift_detection import DriftConfig
from slipway.components.evaluation import checked_threshold
from slipway.components.feedback import FeedbackPolicy
from slipway.components.launcher import LAUNCHERS
from slipway.components.search_space import load_search_space
from slipway.components.train_config import TrainConfig, checked_local_processes
from slipway.components.tuning import checked_tuner
from slipway.problem import load_problem
from slipway.serving.canary import AnalysisPolicy, checked_steps
from slipway.serving.cluster_deploy import checked_serving_target
from slipway.serving.deploy import LocalDeployConfig


@dataclasses.dataclass(frozen=True)
class Rule:
    """A step's check of some of its parameters: `check` gets their values as keyword arguments and raises
    ValueError. A pipeline without all of `parameters` skips the rule."""

    parameters: tuple[str, ...]
    check: Callable[..., object]


def _train_config(**values: Any) -> None:
    try:
        units = tuple(int(u) for u in values["hidden_units"])
    except (TypeError, ValueError):
        raise ValueError(f"hidden_units must be whole numbers, got {values['hidden_units']!r}") from None
    TrainConfig(**values | {"hidden_units": units})


def _processes(processes: int, launcher: str) -> None:
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r} is not one of {list(LAUNCHERS)}")
    if launcher == "torchrun":  # the other launchers run `processes` per node of a cluster job, not here
        checked_local_processes(processes)


def _tuning(tuner: str, search_space: str, max_trials: int) -> None:
    if checked_tuner(tuner) == "off":
        return
    space = load_search_space(search_space)
    if max_trials < 0:
        raise ValueError(f"max_trials: expected 0 (the search space's own budget) or more, got {max_trials}")
    if max_trials > 0:
        space.with_max_trials(max_trials)


def _canary(canary_steps: list[Any], canary_min_requests: int, traffic_rps: float) -> None:
    try:
        steps = tuple(int(p) for p in canary_steps)
    except (TypeError, ValueError):
        raise ValueError(f"canary_steps must be whole percentages, got {canary_steps!r}") from None
    try:
        checked_steps(steps)
    except ValueError as exc:
        raise ValueError(f"canary_steps: {exc}") from None
    try:
        policy = AnalysisPolicy(min_requests=canary_min_requests)
    except ValueError as exc:
        raise ValueError(f"canary_{exc}") from None  # the policy calls it min_requests
    LocalDeployConfig(name="check", steps=steps, traffic_rps=traffic_rps, policy=policy)


def _drift(drift_alpha: float, drift_correction: str) -> None:
    try:
        DriftConfig(alpha=drift_alpha, correction=drift_correction)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"drift_{exc}") from None  # the config calls them alpha and correction


def _feedback(max_auc_drop_percent: float) -> None:
    try:
        FeedbackPolicy(max_drop_percent=max_auc_drop_percent)
    except ValueError as exc:
        raise ValueError(f"max_auc_{exc}") from None  # the policy calls it max_drop_percent


RULES = (
    Rule(("problem",), lambda problem: load_problem(problem)),
    Rule(tuple(field.name for field in dataclasses.fields(TrainConfig)), _train_config),
    Rule(("processes", "launcher"), _processes),
    Rule(("tuner", "search_space", "max_trials"), _tuning),
    Rule(("threshold",), checked_threshold),
    Rule(("min_auc", "max_auc_drop"), BlessingPolicy),
    Rule(("canary_steps", "canary_min_requests", "traffic_rps"), _canary),
    Rule(("serving_target",), lambda serving_target: checked_serving_target(serving_target)),
    Rule(("drift_alpha", "drift_correction"), _drift),
    Rule(("max_auc_drop_percent",), _feedback),
)


def check_arguments(defaults: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """Raises ValueError, with the step's own reason naming the parameter, when a rule refuses the pipeline's
    arguments (`defaults` are its parameters' defaults, `arguments` what was set)."""
    values = {**defaults, **arguments}
    for rule in RULES:
        if all(name in values for name in rule.parameters):
            rule.check(**{name: values[name] for name in rule.parameters})

"""The hyperparameter search space: one definition for Katib on Kubeflow and Optuna locally.

A search space is configuration (`slipway/search_spaces/default.yaml`): the parameters (TrainConfig
fields, each a double or int range, log scale where it fits, or a categorical or discrete list), the
objective, the algorithm by Katib's name, the budget and early stopping. `load_search_space` reads
and checks it, naming the file and the field that is wrong, so that a broken space fails before
anything is submitted to a cluster or a single trial is trained. `katib_experiment` turns it into a
Katib Experiment; the local tuner turns it into an Optuna study with the equivalent sampler.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

import slipway
from slipway.components.train_config import TrainConfig

SEARCH_SPACES_DIR = Path(slipway.__file__).parent / "search_spaces"
DEFAULT_SEARCH_SPACE = "default"

ParameterType = Literal["double", "int", "categorical", "discrete"]
Direction = Literal["maximize", "minimize"]
# Katib's algorithm names; each has an Optuna equivalent (components/tuning.py).
AlgorithmName = Literal["random", "grid", "tpe", "bayesianoptimization", "hyperband"]
EarlyStoppingName = Literal["medianstop"]
# The settings each algorithm's Katib suggestion service accepts (pkg/suggestion/v1beta1: hyperopt for
# random and tpe, skopt for bayesianoptimization, hyperband), each with the check that service applies.
_NON_NEGATIVE_INT = (lambda v: int(v) >= 0 and float(v) == int(v), "a whole number >= 0")
_POSITIVE_INT = (lambda v: int(v) > 0 and float(v) == int(v), "a whole number > 0")
_POSITIVE = (lambda v: float(v) > 0, "a number > 0")
ALGORITHM_SETTINGS: dict[str, dict[str, tuple[Any, str]]] = {
    "random": {"random_state": _NON_NEGATIVE_INT},
    "tpe": {"random_state": _NON_NEGATIVE_INT, "gamma": (lambda v: 0 < float(v) < 1, "a number in (0, 1)"),
            "prior_weight": _POSITIVE, "n_EI_candidates": _POSITIVE_INT},
    "grid": {},
    "bayesianoptimization": {"random_state": _NON_NEGATIVE_INT, "n_initial_points": _POSITIVE_INT,
                             "base_estimator": (lambda v: v in ("GP", "RF", "ET", "GBRT"), "one of GP, RF, ET, GBRT"),
                             "acq_func": (lambda v: v in ("gp_hedge", "LCB", "EI", "PI"),
                                          "one of gp_hedge, LCB, EI, PI")},
    "hyperband": {"resource_name": (lambda v: isinstance(v, str) and bool(v), "a parameter name"),
                  "eta": (lambda v: float(v) > 1, "a number > 1"), "r_l": _POSITIVE},
}
# What the trainer reports per epoch, and so what a trial can be judged on.
OBJECTIVE_METRICS = ("eval_auc",)
# Fields a trial may set: all but the seed, which belongs to the run (every trial uses the run's).
TUNABLE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed")


class SearchSpaceError(ValueError):
    """The search space cannot be searched; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One TrainConfig field to search: a [min, max] range (double, int) or a list of values."""

    name: str
    type: ParameterType
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()

    @property
    def is_range(self) -> bool:
        return self.type in ("double", "int")

    def grid(self) -> tuple[Any, ...]:
        """Every value a grid search visits (a range needs a step)."""
        if not self.is_range:
            return self.values
        assert self.min is not None and self.max is not None and self.step is not None
        count = int(math.floor((self.max - self.min) / self.step + 1e-9)) + 1
        points = [self.min + i * self.step for i in range(count)]
        return tuple(int(p) if self.type == "int" else round(p, 12) for p in points)


@dataclasses.dataclass(frozen=True)
class Objective:
    metric: str = "eval_auc"
    direction: Direction = "maximize"
    goal: float | None = None  # the search stops once a trial reaches it


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: AlgorithmName = "tpe"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Budget:
    max_trials: int = 20
    parallel_trials: int = 2
    max_failed_trials: int = 3


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Median stopping: a trial whose metric at an epoch is worse than the median of earlier trials there stops."""

    algorithm: EarlyStoppingName = "medianstop"
    min_trials_required: int = 3
    start_step: int = 1


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[Parameter, ...]
    objective: Objective = Objective()
    algorithm: Algorithm = Algorithm()
    budget: Budget = Budget()
    early_stopping: EarlyStopping | None = None
    source: str = ""  # the file it was read from, for error messages

    def train_config(self, assignment: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """One trial's TrainConfig: `base` (default: the defaults) with the searched fields set as assigned."""
        values = {p.name: _field_value(p.name, assignment[p.name]) for p in self.parameters}
        return dataclasses.replace(base or TrainConfig(), **values)

    def with_max_trials(self, max_trials: int) -> SearchSpace:
        """The space with a smaller (or larger) trial budget; parallel and failed trials stay within it."""
        if max_trials < 1:
            raise SearchSpaceError(f"max_trials: expected a whole number of at least 1, got {max_trials}")
        budget = dataclasses.replace(self.budget, max_trials=max_trials,
                                     parallel_trials=min(self.budget.parallel_trials, max_trials),
                                     max_failed_trials=min(self.budget.max_failed_trials, max_trials))
        return dataclasses.replace(self, budget=budget)

    def typed(self, assignment: dict[str, str]) -> dict[str, Any]:
        """Katib's parameter assignments (every value a string) as the values this space lists or ranges over."""
        missing = [p.name for p in self.parameters if p.name not in assignment]
        if missing:
            raise SearchSpaceError(f"{self.source or 'search space'}: the assignment {assignment} has no value "
                                   f"for {missing}")
        typed: dict[str, Any] = {}
        for parameter in self.parameters:
            text = str(assignment[parameter.name])
            if parameter.is_range:
                typed[parameter.name] = int(float(text)) if parameter.type == "int" else float(text)
                continue
            matches = [value for value in parameter.values if str(value) == text]
            if not matches:
                raise SearchSpaceError(f"{self.source or 'search space'}: {parameter.name}={text!r} is not one of "
                                       f"{list(parameter.values)}")
            typed[parameter.name] = matches[0]
        return typed


def _field_value(name: str, value: Any) -> Any:
    """A searched value as its TrainConfig field holds it ("64 32" -> (64, 32) for hidden_units)."""
    if name == "hidden_units":
        return tuple(int(units) for units in str(value).replace(",", " ").split())
    field_type = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[name]
    return {"int": int, "float": float, "str": str}[field_type](value)


def load_search_space(ref: str = DEFAULT_SEARCH_SPACE) -> SearchSpace:
    """A packaged search space by name (`default`), or a search-space YAML file by path."""
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else SEARCH_SPACES_DIR / f"{ref}.yaml"
    if not path.is_file():
        packaged = sorted(p.stem for p in SEARCH_SPACES_DIR.glob("*.yaml"))
        raise SearchSpaceError(f"search space {ref!r}: no such file {str(path)!r}; packaged ones are {packaged}, "
                               f"or give the path of a .yaml file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{path}: not valid YAML: {exc}") from exc
    return parse_search_space(raw, str(path))


def parse_search_space(raw: Any, source: str) -> SearchSpace:
    """Checks a search space given as plain data (a parsed YAML file), naming `source` and the field."""

    def fail(field: str, message: str) -> SearchSpaceError:
        return SearchSpaceError(f"{source}: {field}: {message}")

    if not isinstance(raw, dict):
        raise fail("(top level)", "expected a mapping with parameters, objective, algorithm, budget")
    unknown = sorted(set(raw) - {"parameters", "objective", "algorithm", "budget", "early_stopping"})
    if unknown:
        raise fail("(top level)", f"unknown key(s) {unknown}")
    parameters_raw = raw.get("parameters")
    if not isinstance(parameters_raw, dict) or not parameters_raw:
        raise fail("parameters", "expected a mapping of TrainConfig field to its feasible space, at least one")
    parameters = tuple(_parse_parameter(name, spec, fail) for name, spec in parameters_raw.items())

    objective_raw = _mapping(raw.get("objective"), "objective", fail)
    objective = Objective(metric=objective_raw.get("metric", Objective.metric),
                          direction=objective_raw.get("direction", Objective.direction),
                          goal=objective_raw.get("goal"))
    if objective.metric not in OBJECTIVE_METRICS:
        raise fail("objective.metric", f"{objective.metric!r} is not a metric the trainer reports {OBJECTIVE_METRICS}")
    if objective.direction not in get_args(Direction):
        raise fail("objective.direction", f"{objective.direction!r} is not one of {list(get_args(Direction))}")
    if objective.goal is not None and not _is_number(objective.goal):
        raise fail("objective.goal", f"expected a number, got {objective.goal!r}")

    algorithm_raw = _mapping(raw.get("algorithm"), "algorithm", fail)
    algorithm = Algorithm(name=algorithm_raw.get("name", Algorithm.name),
                          settings=dict(algorithm_raw.get("settings") or {}))
    if algorithm.name not in get_args(AlgorithmName):
        raise fail("algorithm.name", f"{algorithm.name!r} is not one of {list(get_args(AlgorithmName))}")
    accepted = ALGORITHM_SETTINGS[algorithm.name]
    for key, value in algorithm.settings.items():
        if key not in accepted:
            raise fail(f"algorithm.settings.{key}", f"{algorithm.name} takes no setting {key!r}; "
                                                    f"it takes {sorted(accepted) or 'none'}")
        check, expected = accepted[key]
        try:
            valid = check(value)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise fail(f"algorithm.settings.{key}", f"expected {expected}, got {value!r}")
    if algorithm.name == "grid":
        for parameter in parameters:
            if parameter.is_range and parameter.step is None:
                raise fail(f"parameters.{parameter.name}.step", "grid search needs a step for every range")
    if algorithm.name == "hyperband":
        resource = algorithm.settings.get("resource_name")
        if resource not in {p.name for p in parameters if p.type == "int"}:
            raise fail("algorithm.settings.resource_name", f"hyperband needs the name of its resource parameter, "
                                                           f"searched as an int range (epochs), got {resource!r}")
        if "r_l" not in algorithm.settings:
            raise fail("algorithm.settings.r_l", "hyperband needs r_l, the most resource a trial may use")

    budget_raw = _mapping(raw.get("budget"), "budget", fail)
    budget = Budget(**{key: budget_raw.get(key, getattr(Budget(), key)) for key in ("max_trials", "parallel_trials",
                                                                                   "max_failed_trials")})
    for key, least in (("max_trials", 1), ("parallel_trials", 1), ("max_failed_trials", 0)):
        _check_whole(getattr(budget, key), least, f"budget.{key}", fail)
    for key in ("parallel_trials", "max_failed_trials"):
        if getattr(budget, key) > budget.max_trials:
            raise fail(f"budget.{key}", f"{getattr(budget, key)} is more than budget.max_trials {budget.max_trials}")

    early_stopping = None
    if raw.get("early_stopping") is not None:
        stopping_raw = _mapping(raw["early_stopping"], "early_stopping", fail)
        early_stopping = EarlyStopping(
            algorithm=stopping_raw.get("algorithm", EarlyStopping.algorithm),
            min_trials_required=stopping_raw.get("min_trials_required", EarlyStopping.min_trials_required),
            start_step=stopping_raw.get("start_step", EarlyStopping.start_step))
        if early_stopping.algorithm not in get_args(EarlyStoppingName):
            raise fail("early_stopping.algorithm",
                       f"{early_stopping.algorithm!r} is not one of {list(get_args(EarlyStoppingName))}")
        for key in ("min_trials_required", "start_step"):
            _check_whole(getattr(early_stopping, key), 1, f"early_stopping.{key}", fail)
    return SearchSpace(parameters=parameters, objective=objective, algorithm=algorithm, budget=budget,
                       early_stopping=early_stopping, source=source)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_whole(value: Any, least: int, field: str, fail: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise fail(field, f"expected a whole number of at least {least}, got {value!r}")


def _mapping(value: Any, field: str, fail: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(field, f"expected a mapping, got {value!r}")
    return value


def _parse_parameter(name: Any, spec: Any, fail: Any) -> Parameter:
    field = f"parameters.{name}"
    if name not in TUNABLE_FIELDS:
        raise fail(field, f"{name!r} is not a training option a trial can set; tunable: {list(TUNABLE_FIELDS)}")
    if not isinstance(spec, dict):
        raise fail(field, "expected {type, min, max[, step, log]} or {type, values}")
    kind = spec.get("type")
    if kind not in get_args(ParameterType):
        raise fail(f"{field}.type", f"{kind!r} is not one of {list(get_args(ParameterType))}")
    unknown = sorted(set(spec) - ({"type", "min", "max", "step", "log"} if kind in ("double", "int")
                                   else {"type", "values"}))
    if unknown:
        raise fail(field, f"key(s) {unknown} do not apply to a {kind} parameter")
    if kind in ("categorical", "discrete"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise fail(f"{field}.values", "the feasible space is empty: expected a non-empty list of values")
        if len(set(map(str, values))) != len(values):
            raise fail(f"{field}.values", f"{values} lists a value more than once")
        if kind == "discrete" and not all(_is_number(v) for v in values):
            raise fail(f"{field}.values", f"a discrete parameter takes numbers, got {values}")
        for value in values:
            try:
                TrainConfig(**{name: _field_value(name, value)})
            except (ValueError, TypeError) as exc:
                raise fail(f"{field}.values", f"{value!r} is not a valid {name}: {exc}") from None
        return Parameter(name=name, type=kind, values=tuple(values))
    low, high, step, log = spec.get("min"), spec.get("max"), spec.get("step"), spec.get("log", False)
    expected = "a whole number" if kind == "int" else "a number"
    for key, value in (("min", low), ("max", high)):
        if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
            raise fail(f"{field}.{key}", f"expected {expected}, got {value!r}")
    if low > high or (kind == "double" and low == high):
        raise fail(field, f"the feasible space is empty: min {low} must be less than max {high}")
    if step is not None and (not _is_number(step) or step <= 0 or step > high - low):
        raise fail(f"{field}.step", f"expected a positive step no larger than max - min, got {step!r}")
    if not isinstance(log, bool):
        raise fail(f"{field}.log", f"expected true or false, got {log!r}")
    if log and low <= 0:
        raise fail(f"{field}.log", f"a log scale needs min > 0, got min {low}")
    for value in (low, high):
        try:
            TrainConfig(**{name: _field_value(name, value)})
        except (ValueError, TypeError) as exc:
            raise fail(field, f"{value!r} is not a valid {name}: {exc}") from None
    return Parameter(name=name, type=kind, min=low, max=high, step=step, log=log)

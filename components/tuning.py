"""Local tuning: the search space as an Optuna study, every trial the real trainer, each an MLflow child run.

The same `SearchSpace` that becomes a Katib Experiment on Kubeflow (components/katib_experiment.py)
runs here with Optuna's equivalent of each Katib algorithm:

| Katib algorithm        | Optuna                                                        |
|------------------------|---------------------------------------------------------------|
| `random`               | RandomSampler                                                 |
| `grid`                 | GridSampler over every value (ranges need a step)             |
| `tpe`                  | TPESampler                                                    |
| `bayesianoptimization` | GPSampler (a Gaussian process, as Katib's skopt service)      |
| `hyperband`            | TPESampler with a HyperbandPruner over the resource (epochs)  |

Katib's `medianstop` early stopping is Optuna's MedianPruner on the same intermediate value, the
eval AUC after each epoch. A trial trains in this process (`trainer.train` with an epoch callback)
and is logged to MLflow as a child of the study's run, so the MLflow UI shows the study with its
trials nested under it; `parallel_trials` trials run at once in threads.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import optuna

from slipway.components.search_space import Parameter, SearchSpace
from slipway.components.tracking import TrackingConfig, TrainingRun, lineage_tags
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import Lineage, TrainingStopped, train
from slipway.problem import Problem

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict[str, Any]
    state: str            # COMPLETE, PRUNED or FAIL
    value: float | None   # the trial's best eval AUC (None if it failed)
    epochs: int           # epochs reported before it finished or was pruned
    mlflow_run_id: str | None


@dataclasses.dataclass(frozen=True)
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    best_config: TrainConfig
    trials: list[TrialRecord]
    mlflow_run_id: str | None  # the study's (parent) run

    def counts(self) -> dict[str, int]:
        return {state: sum(t.state == state for t in self.trials) for state in ("COMPLETE", "PRUNED", "FAIL")}


def sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """Optuna's equivalent of the space's Katib algorithm, seeded by its `random_state` setting."""
    seed = space.algorithm.settings.get("random_state")
    seed = None if seed is None else int(seed)
    name = space.algorithm.name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({p.name: list(p.grid()) for p in space.parameters}, seed=seed)
    if name == "bayesianoptimization":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=int(space.algorithm.settings.get(
            "n_initial_points", 10)))
    settings = space.algorithm.settings
    katib_only = sorted(set(settings) & {"gamma", "prior_weight"})
    if katib_only:  # hyperopt's settings; Optuna 4.9 deprecated its own versions of them
        log.info("tpe settings %s apply on Katib only; Optuna's TPE keeps its defaults", katib_only)
    return optuna.samplers.TPESampler(seed=seed, n_ei_candidates=int(settings.get("n_EI_candidates", 24)))


def pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """Median stopping (Katib's `medianstop`) or Hyperband over epochs; none when the space stops no trial early."""
    if space.algorithm.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(space.algorithm.settings["r_l"]))
    if space.early_stopping is not None:
        return optuna.pruners.MedianPruner(n_startup_trials=space.early_stopping.min_trials_required,
                                           n_warmup_steps=space.early_stopping.start_step - 1)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, parameter: Parameter) -> Any:
    if parameter.type == "double":
        return trial.suggest_float(parameter.name, parameter.min, parameter.max, step=parameter.step,
                                   log=parameter.log)
    if parameter.type == "int":
        return trial.suggest_int(parameter.name, int(parameter.min), int(parameter.max),
                                 step=int(parameter.step or 1), log=parameter.log)
    return trial.suggest_categorical(parameter.name, list(parameter.values))


def tune(space: SearchSpace, train_path: Path, eval_path: Path, problem: Problem, workdir: Path,
         base: TrainConfig | None = None, tracking: TrackingConfig | None = None,
         lineage: Lineage | None = None) -> TuningResult:
    """Runs the study: at most `max_trials` trials, `parallel_trials` at a time, each the real trainer."""
    base, lineage = base or TrainConfig(), lineage or Lineage()
    study = optuna.create_study(direction=space.objective.direction, sampler=sampler(space), pruner=pruner(space))
    parent = _study_run(space, problem, tracking, lineage)
    run_ids: dict[int, str | None] = {}
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        config = space.train_config({p.name: suggest(trial, p) for p in space.parameters}, base)

        def report(epoch: int, eval_auc: float) -> None:
            trial.report(eval_auc, epoch)
            if trial.should_prune():
                raise TrainingStopped(f"trial {trial.number} pruned at epoch {epoch}: eval AUC {eval_auc:.4f}")

        with tempfile.TemporaryDirectory(prefix=f"slipway-trial-{trial.number}-", dir=workdir) as scratch:
            try:
                result = train(train_path, eval_path, problem, config, Path(scratch) / "model",
                               Path(scratch) / "checkpoints", tracking,
                               dataclasses.replace(lineage, parent_run_id=parent.run_id if parent else None), report)
            except TrainingStopped as stopped:
                log.info("%s", stopped)
                raise optuna.TrialPruned(str(stopped)) from None
        with lock:
            run_ids[trial.number] = result.mlflow_run_id
        log.info("trial %d: eval AUC %.4f with %s", trial.number, result.eval_auc,
                 {p.name: trial.params[p.name] for p in space.parameters})
        return result.eval_auc

    try:
        study.optimize(objective, n_trials=space.budget.max_trials, n_jobs=space.budget.parallel_trials,
                       callbacks=[_stopping(space)], catch=(Exception,))
        result = _outcome(study, space, base, run_ids, parent)
    except BaseException:
        if parent is not None:
            parent.end("FAILED")
        raise
    if parent is not None:
        parent.log_summary({"best_eval_auc": result.best_value, **{f"trials_{state.lower()}": count
                                                                    for state, count in result.counts().items()}})
        parent.end()
    return result


def _outcome(study: optuna.Study, space: SearchSpace, base: TrainConfig, run_ids: dict[int, str | None],
             parent: TrainingRun | None) -> TuningResult:
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"no trial of the study completed ({len(study.trials)} tried): see the trials' logs above")
    best = study.best_trial
    trials = [TrialRecord(number=t.number, params=dict(t.params), state=t.state.name, value=t.value,
                          epochs=len(t.intermediate_values), mlflow_run_id=run_ids.get(t.number))
              for t in study.trials]
    return TuningResult(best_params=dict(best.params), best_value=float(best.value),
                        best_config=space.train_config(best.params, base), trials=trials,
                        mlflow_run_id=parent.run_id if parent else None)


def _stopping(space: SearchSpace):
    """Ends the study when a trial reaches the goal, or when more trials failed than the budget allows."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
        if failed > space.budget.max_failed_trials:
            log.warning("stopping the study: %d trials failed (budget.max_failed_trials %d)", failed,
                        space.budget.max_failed_trials)
            study.stop()
        goal = space.objective.goal
        if goal is not None and trial.value is not None and (
                trial.value >= goal if space.objective.direction == "maximize" else trial.value <= goal):
            log.info("stopping the study: trial %d reached the goal %s (%.4f)", trial.number, goal, trial.value)
            study.stop()

    return callback


def _study_run(space: SearchSpace, problem: Problem, tracking: TrackingConfig | None,
               lineage: Lineage) -> TrainingRun | None:
    if tracking is None:
        return None
    params = {"algorithm": space.algorithm.name, "max_trials": space.budget.max_trials,
              "parallel_trials": space.budget.parallel_trials, "objective": space.objective.metric,
              "search_space": space.source or "(given)"}
    return TrainingRun.start(tracking, run_name=f"{problem.name}-tune", params=params,
                             tags=lineage_tags(lineage.data_sha256, lineage.pipeline_run_id))

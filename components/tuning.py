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

`tune_training` is what the pipeline's `tune` step does, with any of the three tuners (`off`,
`optuna`, `katib`): trials fit on the older part of the train split and are judged on its newest
`eval_fraction` (`holdout_split`), so the eval split, on which `evaluate` and `bless` judge the
final model, never chose its hyperparameters.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from slipway.components import katib_experiment
from slipway.components.ingestion import split_by_time
from slipway.components.search_space import Parameter, SearchSpace
from slipway.components.tracking import TrackingConfig, TrainingRun, lineage_tags
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import Lineage, TrainingStopped, train
from slipway.components.tuners import TuningOutcome, checked_tuner, untuned
from slipway.problem import Problem
from slipway.storage import upload

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

    @property
    def best_trial_number(self) -> int:
        return next(t.number for t in self.trials if t.state == "COMPLETE" and t.value == self.best_value)

    def counts(self) -> dict[str, int]:
        return {state: sum(t.state == state for t in self.trials) for state in ("COMPLETE", "PRUNED", "FAIL")}

    def markdown(self, space: SearchSpace) -> str:
        """The study as a table, a row per trial, best first: what KFP's UI shows for the `trials` output."""
        names = [p.name for p in space.parameters]
        header = f"| trial | state | {space.objective.metric} | epochs | " + " | ".join(f"`{n}`" for n in names) + " |"
        sign = -1.0 if space.objective.direction == "maximize" else 1.0
        ranked = sorted(self.trials, key=lambda t: (t.value is None, sign * (t.value or 0.0)))
        best_number = self.best_trial_number
        rows = []
        for trial in ranked:
            best = trial.number == best_number
            value = "-" if trial.value is None else (f"**{trial.value:.4f}**" if best else f"{trial.value:.4f}")
            rows.append(f"| {trial.number} | {trial.state} | {value} | {trial.epochs} | "
                        + " | ".join(_cell(trial.params.get(n)) for n in names) + " |")
        counts = ", ".join(f"{count} {state.lower()}" for state, count in self.counts().items())
        return (f"### Optuna study ({space.algorithm.name}, {len(self.trials)} trials: {counts})\n\n"
                f"Best {space.objective.metric}: **{self.best_value:.4f}** (trial {best_number})\n\n"
                f"{header}\n|" + "---|" * (4 + len(names)) + "\n" + "\n".join(rows) + "\n")


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


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def holdout_split(train_path: Path, problem: Problem, fit_path: Path, holdout_path: Path) -> tuple[int, int]:
    """Splits the train split by time as ingest split the source: trials fit on the older rows and are judged
    on the newest `eval_fraction` of them. Returns the row counts (fit, holdout)."""
    fit, holdout, _ = split_by_time(pd.read_parquet(train_path), problem, str(train_path))
    fit.to_parquet(fit_path)
    holdout.to_parquet(holdout_path)
    return len(fit), len(holdout)


@dataclasses.dataclass(frozen=True)
class KatibTarget:
    """Where a `katib` tuner runs its trials: the image, the namespace, object storage the trials can reach."""

    image: str
    namespace: str
    experiment_name: str
    storage_uri: str              # the fit/holdout splits and each trial's model go under it
    problem: str                  # as the trials' image loads it: a packaged name or a URI
    credentials_secret: str = ""
    poll_s: float = 30.0


def tune_training(tuner: str, space: SearchSpace | None, train_path: Path, problem: Problem, workdir: Path,
                  base: TrainConfig, tracking: TrackingConfig | None = None, lineage: Lineage | None = None,
                  katib: KatibTarget | None = None, api: Any = None) -> TuningOutcome:
    """The `tune` step: `off` hands `base` on as it is; `optuna` runs the study here; `katib` runs it as an
    Experiment on the cluster (`katib` and the Kubernetes `api` client needed). Searched fields come from
    the best trial, the rest from `base`."""
    checked_tuner(tuner)
    if tuner == "off":
        return untuned(base)
    if space is None:
        raise ValueError(f"tuner {tuner!r} needs a search space")
    fit_path, holdout_path = workdir / "fit.parquet", workdir / "holdout.parquet"
    fit_rows, holdout_rows = holdout_split(train_path, problem, fit_path, holdout_path)
    log.info("tuning with %s (%s, %d trials at most): trials fit on %d train rows and are judged on the newest "
             "%d", tuner, space.algorithm.name, space.budget.max_trials, fit_rows, holdout_rows)
    note = (f"Trials fit on the train split's older {fit_rows:,} rows and report {space.objective.metric} on its "
            f"newest {holdout_rows:,} (the last {problem.eval_fraction:.0%} by time), the holdout: the eval split "
            f"never chose the hyperparameters.\n\n")
    if tuner == "optuna":
        result = tune(space, fit_path, holdout_path, problem, workdir, base, tracking, lineage)
        metrics = {f"trials_{state.lower()}": float(count) for state, count in result.counts().items()}
        return TuningOutcome(config=result.best_config, markdown=note + result.markdown(space),
                             metrics={"best_holdout_auc": result.best_value, **metrics,
                                      **_numeric(result.best_params)})
    if katib is None or api is None:
        raise ValueError("tuner 'katib' needs a KatibTarget and a Kubernetes API client")
    data = f"{katib.storage_uri}/data"
    upload(fit_path, f"{data}/fit.parquet")
    upload(holdout_path, f"{data}/holdout.parquet")
    trial = katib_experiment.TrialJob(
        image=katib.image, train_data=f"{data}/fit.parquet", eval_data=f"{data}/holdout.parquet",
        output_uri=f"{katib.storage_uri}/trials", problem=katib.problem, base=base,
        tracking_uri=tracking.tracking_uri if tracking else "", credentials_secret=katib.credentials_secret)
    experiment = katib_experiment.build_experiment(space, katib.experiment_name, katib.namespace, trial)
    outcome = katib_experiment.run_experiment(experiment, space, api, poll_s=katib.poll_s)
    metrics = {f"trials_{state}": float(count) for state, count in outcome.trials.items()}
    return TuningOutcome(config=space.train_config(outcome.best_params, base), markdown=note + outcome.markdown(space),
                         metrics={"best_holdout_auc": outcome.best_value, **metrics, **_numeric(outcome.best_params)})


def _numeric(params: dict[str, Any]) -> dict[str, float]:
    """The best parameters that KFP's Metrics can show (numbers); the others are in the Markdown and outputs."""
    return {f"best_{name}": float(value) for name, value in params.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}

"""The `slipway` command line: compile pipelines to KFP IR, run them locally, report versions.

    slipway compile [--output-dir dist] [PIPELINE ...]
    slipway run training [--data URI] [--set key=value ...]
    slipway train [--data URI] [--processes N] [--epochs N ...]
    slipway validate --data URI --schema PATH [--training-stats DIR]
    slipway tune [--data URI] [--search-space default] [--max-trials N]
    slipway promote --model NAME --version V
    slipway rollback --model NAME
    slipway estimate --qps N --p99-ms L
    slipway score --data URI --model DIR|URI --output URI [--chunk-rows N] [--batch-size N] [--run-id ID]
    slipway version
    slipway upload dist/training.yaml --host URL
    slipway submit training --host URL [--set key=value ...] [--wait]
    slipway runs --host URL [RUN_ID]

Exit codes: 0 success, 1 a pipeline or step failed, 2 bad usage (unknown pipeline, bad --set), each error one
line on stderr. Commands that exit with a verdict keep their errors off its codes: `validate` 0 clean, 1 anomalies;
`drift` and `monitor --replay` 0 none, 1 warning, 2 critical, so their bad usage exits 4; `feedback` 0 held,
1 dropped; `deploy` 0 promoted, 3 rolled back; and 3 is `validate`'s, `drift`'s, `monitor`'s and `feedback`'s
"this input cannot be used" (named).
"""

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from slipway import __version__, cluster, logs, runtimes
from slipway.components.drift_detection import CORRECTIONS, LEVELS, DriftConfig
from slipway.components.feedback import FeedbackPolicy
from slipway.components.search_space import DEFAULT_SEARCH_SPACE
from slipway.components.train_config import DEFAULT_PROCESSES, TrainConfig, checked_local_processes
from slipway.problem import DEFAULT_PROBLEM
from slipway.serving.protocol import MONITOR_PORT, UNINFORMED_SCORE
from slipway.serving.server import DEFAULT_MAX_PAYLOAD_BYTES

# Kept in step with slipway.pipelines.catalog.PIPELINES by a test; listed here so that
# `slipway --help` answers without importing kfp and every pipeline.
PIPELINE_NAMES = ("batch_scoring", "continuous_training", "training")
SOURCE_PARAMETER = "source_uri"


VERDICT_USAGE_EXIT = 4  # bad usage of a command whose exit code 2 is a verdict (drift's "critical")


class VerdictCommand(click.Command):
    """A command whose exit codes 0-2 are a verdict: its bad usage exits `VERDICT_USAGE_EXIT`, not Click's 2."""

    usage_exit_code = VERDICT_USAGE_EXIT


class OneLineErrors(click.Group):
    """Reports a usage error as one line, `Error: ...` naming the option and what is wrong (Click's own report adds
    the usage and a hint above it), with its command's exit code for bad usage."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _one_line(error: click.UsageError) -> click.ClickException:
    one_line = click.ClickException(error.format_message())
    command = error.ctx.command if error.ctx else None
    one_line.exit_code = getattr(command, "usage_exit_code", error.exit_code)
    return one_line


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slipway")
def cli() -> None:
    """Slipway: Kubeflow Pipelines v2 components from raw data to a canary-deployed KServe endpoint.

    Pipelines compile to KFP IR for Kubeflow (`slipway compile`) and run unchanged on this
    machine with kfp.local (`slipway run`).
    """


@cli.command("compile")
@click.argument("pipelines", nargs=-1, type=click.Choice(PIPELINE_NAMES), metavar="[PIPELINE]...")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where to write <pipeline>.yaml and components/<component>.yaml.")
def compile_command(pipelines: tuple[str, ...], output_dir: Path) -> None:
    """Compile PIPELINES (default: all) to KFP IR YAML, ready for the Kubeflow UI or `kfp.Client`, and every
    component to a standalone component YAML in OUTPUT_DIR/components/, for your own pipelines through
    `kfp.components.load_component_from_file`; its image is tagged with the Slipway version."""
    from slipway.pipelines.compile import compile_components, compile_pipelines

    for path in [*compile_pipelines(output_dir, list(pipelines) or None), *compile_components(output_dir)]:
        click.echo(path)


@cli.command("run")
@click.argument("pipeline", type=click.Choice(PIPELINE_NAMES), metavar="PIPELINE")
@click.option("--data", "data_uri", metavar="URI",
              help="Source to ingest: a local path, gs://, s3:// or http(s):// URI of a CSV or Parquet file. "
                   "Default: the Chicago taxi sample (data/chicago_taxi/data.csv, fetched if missing).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a pipeline parameter, e.g. --set epochs=5; repeat for more. "
                   "An unknown key lists the valid ones.")
@click.option("--pipeline-root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Where kfp.local writes each run's artifacts.")
def run_command(pipeline: str, data_uri: str | None, assignments: tuple[str, ...], pipeline_root: Path) -> None:
    """Run PIPELINE locally with kfp.local and print a summary: metrics, and where the artifacts are."""
    from slipway.pipelines.catalog import get_pipeline
    from slipway.pipelines.local import PipelineRunError, parse_arguments, pipeline_parameters, run_local
    from slipway.pipelines.parameter_rules import check_arguments
    from slipway.sample_data import fetch_sample

    logs.configure()
    component = get_pipeline(pipeline)
    parameters = pipeline_parameters(component)
    try:
        arguments = parse_arguments(component, list(assignments))
        # The steps' own rules, now: a step that refused a value would do so minutes into the run.
        check_arguments({name: default for name, (_, default) in parameters.items() if default is not None},
                        arguments)
    except ValueError as exc:  # PipelineArgumentError, or a rule's reason
        raise click.BadParameter(str(exc), param_hint="--set") from None
    if SOURCE_PARAMETER in parameters:
        if SOURCE_PARAMETER in arguments:
            raise click.BadParameter(f"give the source with --data, not --set {SOURCE_PARAMETER}=",
                                     param_hint="--set")
        arguments[SOURCE_PARAMETER] = data_uri or str(fetch_sample()["data.csv"])
    elif data_uri:
        raise click.BadParameter(f"pipeline {pipeline!r} takes no source", param_hint="--data")

    try:
        run = run_local(component, arguments, pipeline_root)
    except PipelineRunError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_summary(run, arguments, pipeline_root))


def _summary(run: Any, arguments: dict[str, Any], pipeline_root: Path) -> str:
    from kfp import dsl

    from slipway.components.blessing import BLESSED
    from slipway.components.feature_store import PIPELINE_REPO_DIR
    from slipway.components.feedback import NO_RETRAINING
    from slipway.components.tracking import DEFAULT_PIPELINE_ROOT, TrackingConfig

    lines = ["", f"Pipeline {run.pipeline!r} succeeded in {run.seconds:.1f} s", f"  run directory: {run.run_dir}"]
    for name, value in arguments.items():
        lines.append(f"  {name} = {value}")
    for name, artifact in sorted(run.outputs.items()):
        if isinstance(artifact, dsl.Metrics):
            shown = "  ".join(f"{k} {_number(v)}" for k, v in sorted(artifact.metadata.items()))
            lines.append(f"  {name}: {shown}")
        elif isinstance(artifact, dsl.Artifact):
            lines.append(f"  {name}: {artifact.path}")
        else:
            lines.append(f"  {name}: {artifact}")
    if run.outputs.get("retrain") == NO_RETRAINING:
        lines.append("  not retrained: no critical drift" + (", and the live AUC held" if arguments.get("labels_uri")
                                                              else "") + "; the champion stays")
    elif "retrain" in run.outputs:
        lines.append(f"  retrained: {run.outputs['retrain']}")
    model_uri = run.outputs.get("model_uri") or _registered_uri(run.run_dir)
    if model_uri:
        tracking = TrackingConfig.resolve(arguments.get("tracking_uri", ""), pipeline_root)
        lines.append(f"  MLflow tracking and registry: {tracking.tracking_uri}")
        lines.append(f"  registered: {model_uri}")
        name, _, version = str(model_uri).removeprefix("models:/").rpartition("/")
        default = TrackingConfig.resolve("", DEFAULT_PIPELINE_ROOT).tracking_uri
        where = "" if tracking.tracking_uri == default else f" --tracking-uri {tracking.tracking_uri}"
        rollout = run.run_dir / "deploy" / "rollout" if run.run_dir else None
        deployed = json.loads(rollout.read_text())["outcome"] if rollout and rollout.is_file() else None
        if deployed:
            lines.append(f"  deployment: {deployed} (report: {rollout.parent / 'report'})")
        if deployed == "promoted":
            lines.append(f"  version {version} is the champion; undo with: slipway rollback --model {name}{where}")
            repo = Path(arguments.get("feature_repo") or pipeline_root / PIPELINE_REPO_DIR)
            features = f" --features {repo}" if (repo / "registry.db").is_file() else ""
            lines.append(f"  serve it: slipway serve --model models:/{name}@champion{features}{where}")
        elif run.outputs.get("decision", _decision(run.run_dir)) == BLESSED:
            lines.append(f"  the champion did not move: the canary was rolled back; to promote anyway: "
                         f"slipway promote --model {name} --version {version}{where}")
        else:
            lines.append(f"  the champion did not move; to promote anyway: "
                         f"slipway promote --model {name} --version {version}{where}")
    return "\n".join(lines)


def _registered_uri(run_dir: Path | None) -> str:
    """The model the run's `register` step registered ("" if it did not run): for pipelines that register inside a
    condition, whose outputs cannot be the pipeline's."""
    return _task_output(run_dir, "register", "model_uri")


def _decision(run_dir: Path | None) -> str:
    return _task_output(run_dir, "bless", "Output")


def _task_output(run_dir: Path | None, task: str, name: str) -> str:
    """An output parameter of a task of a kfp.local run, from the executor output it wrote."""
    output = run_dir / task / "executor_output.json" if run_dir else None
    if output is None or not output.is_file():
        return ""
    return str(json.loads(output.read_text()).get("parameterValues", {}).get(name, ""))


def _number(value: Any) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _train_config_options(command: Callable) -> Callable:
    """One option per TrainConfig field, with its default and help text from the dataclass."""
    for field in reversed(dataclasses.fields(TrainConfig)):
        default = getattr(TrainConfig, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, tuple):
            option = click.option(flag, field.name, default=",".join(map(str, default)), show_default=True,
                                  metavar="N,N", help=f"{field.metadata['help']}, comma-separated")
        else:
            option = click.option(flag, field.name, type=type(default), default=default, show_default=True,
                                  help=field.metadata["help"])
        command = option(command)
    return command


def _train_config(hyperparameters: dict[str, Any]) -> TrainConfig:
    """The TrainConfig that `_train_config_options` collected (hidden units as comma-separated text)."""
    options = dict(hyperparameters)
    units = tuple(int(u) for u in options.pop("hidden_units").split(","))
    return TrainConfig(hidden_units=units, **options)


@cli.command("train")
@click.option("--data", "data_uri", metavar="URI",
              help="Source to ingest and split by time: a local path, gs://, s3:// or http(s):// URI of a CSV or "
                   "Parquet file. Default: the Chicago taxi sample.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="Packaged problem name, or the path/URI of a problem YAML.")
@click.option("--processes", type=click.IntRange(min=1), default=DEFAULT_PROCESSES, show_default=True,
              help="Local DDP processes (torchrun --nproc-per-node), at most one per CPU core; 1 trains in a single "
                   "process.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the splits, checkpoints and model go. Default: runs/train-<timestamp>. Point it at an "
                   "interrupted run's directory to resume from its last checkpoint.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else the "
                                                 "embedded store `mlflow/` beside the output directory (runs/mlflow "
                                                 "by default, shared with `slipway run`).")
@_train_config_options
def train_command(data_uri: str | None, problem: str, processes: int, output_dir: Path | None, tracking_uri: str,
                  **hyperparameters: Any) -> None:
    """Train outside a pipeline: ingest and time-split the data, join each split with its point-in-time Feast
    features (a store of its own under the output directory), then train with DDP, tracked in MLflow.

    The same code, options and model artifact as the pipeline's `train` step.
    """
    from slipway.components.feature_store import FeatureStoreError
    from slipway.components.ingestion import IngestError
    from slipway.components.launcher import TrainingLaunchError, run_local_training
    from slipway.components.tracking import TrackingConfig
    from slipway.components.trainer import Lineage, trainer_arguments
    from slipway.metric_values import require_finite
    from slipway.problem import ProblemError, load_problem
    from slipway.sample_data import fetch_sample
    from slipway.storage import StorageError

    logs.configure()
    try:
        config = _train_config(hyperparameters)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        checked_local_processes(processes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--processes") from None
    output_dir = output_dir or Path("runs") / f"train-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    source = data_uri or str(fetch_sample()["data.csv"])
    try:
        loaded = load_problem(problem)
        ingested, splits = _training_sets(source, loaded, output_dir)
        tracking = TrackingConfig.resolve(tracking_uri, output_dir.parent)
        args = trainer_arguments(str(splits[0]), str(splits[1]),
                                 str(output_dir / "model"), str(output_dir / "checkpoints"), problem, config,
                                 tracking, Lineage(data_sha256=ingested.source_sha256, train_data=source))
        result = run_local_training(args, processes)
        require_finite({"eval_auc": result.eval_auc, "train_loss": result.train_loss}, "train",
                       "the training diverged (try a lower --learning-rate) or never improved on its first eval AUC")
    except (ProblemError, IngestError, FeatureStoreError, StorageError, TrainingLaunchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"\nTrained {config.architecture} with {result.world_size} process(es) on {result.device}: "
               f"eval AUC {result.eval_auc:.4f} at epoch {result.best_epoch} of {result.epochs_run}, "
               f"{result.rows_per_second:,.0f} rows/s")
    click.echo(f"  model: {output_dir / 'model'}")
    click.echo(f"  MLflow run {result.mlflow_run_id} in {tracking.tracking_uri}")


def _training_sets(source: str, problem: Any, output_dir: Path) -> tuple[Any, list[Path]]:
    """Ingests and time-splits `source` under `output_dir`, then joins each split with its point-in-time Feast
    features (a store of its own there), as the pipeline feeds the model: (ingest result, [train, eval])."""
    from slipway.components.feature_store import local_store, write_training_sets
    from slipway.components.ingestion import ingest_source

    raw = output_dir / "ingested" / "train.parquet", output_dir / "ingested" / "eval.parquet"
    ingested = ingest_source(source, problem, *raw)
    if problem.feature_store is None:
        return ingested, list(raw)
    return ingested, list(write_training_sets(local_store(raw, problem, output_dir / "feature_repo"), problem, raw,
                                              output_dir))


@cli.command("tune")
@click.option("--data", "data_uri", metavar="URI",
              help="Source to ingest and split by time (as `slipway train`). Default: the Chicago taxi sample.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="Packaged problem name, or the path/URI of a problem YAML.")
@click.option("--search-space", default=DEFAULT_SEARCH_SPACE, show_default=True,
              help="Packaged search space name (slipway/search_spaces/), or the path of a search-space YAML: the "
                   "same definition a Katib Experiment is built from.")
@click.option("--max-trials", type=click.IntRange(min=1), default=None,
              help="Override the search space's budget.max_trials.")
@click.option("--epochs", type=click.IntRange(min=1), default=TrainConfig.epochs, show_default=True,
              help="Most epochs per trial (unless the space searches epochs).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the splits and best_params.json go. Default: runs/tune-<timestamp>.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI (as `slipway train`): the study is a run, "
                                                 "each trial a child run of it.")
def tune_command(data_uri: str | None, problem: str, search_space: str, max_trials: int | None, epochs: int,
                 output_dir: Path | None, tracking_uri: str) -> None:
    """Tune hyperparameters locally: the search space as an Optuna study, each trial the real trainer.

    As the pipeline's tune step does, trials fit on the older rows of the train split and are judged on its
    newest (the holdout). Prints every trial and the best parameters, and writes them to
    <output-dir>/best_params.json.
    """
    from slipway.atomic import atomic_output
    from slipway.components.feature_store import FeatureStoreError
    from slipway.components.ingestion import IngestError
    from slipway.components.search_space import SearchSpaceError, load_search_space
    from slipway.components.tracking import TrackingConfig
    from slipway.components.trainer import Lineage
    from slipway.components.tuning import holdout_split, tune
    from slipway.problem import ProblemError, load_problem
    from slipway.sample_data import fetch_sample
    from slipway.storage import StorageError

    logs.configure()
    try:
        space = load_search_space(search_space)
    except SearchSpaceError as exc:
        raise click.BadParameter(str(exc), param_hint="--search-space") from None
    if max_trials is not None:
        space = space.with_max_trials(max_trials)
    output_dir = output_dir or Path("runs") / f"tune-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    source = data_uri or str(fetch_sample()["data.csv"])
    try:
        loaded = load_problem(problem)
        ingested, splits = _training_sets(source, loaded, output_dir)
        fit_rows, holdout_rows = holdout_split(splits[0], loaded, output_dir / "fit.parquet",
                                               output_dir / "holdout.parquet")
        click.echo(f"Trials fit on the train split's older {fit_rows:,} rows and are judged on its newest "
                   f"{holdout_rows:,}, the holdout; the eval split stays out of the search.")
        tracking = TrackingConfig.resolve(tracking_uri, output_dir.parent)
        result = tune(space, output_dir / "fit.parquet", output_dir / "holdout.parquet", loaded, output_dir,
                      base=TrainConfig(epochs=epochs), tracking=tracking,
                      lineage=Lineage(data_sha256=ingested.source_sha256, train_data=source))
    except (ProblemError, IngestError, FeatureStoreError, StorageError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    with atomic_output(output_dir / "best_params.json") as temp:
        temp.write_text(json.dumps({"holdout_auc": result.best_value, "params": result.best_params}, indent=2)
                        + "\n")
    click.echo(f"\n{len(result.trials)} trials ({space.algorithm.name}): "
               + ", ".join(f"{count} {state.lower()}" for state, count in result.counts().items()))
    for trial in result.trials:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        click.echo(f"  trial {trial.number:>3}  {trial.state:<8}  holdout AUC {value}  epochs {trial.epochs:>2}  "
                   + _assignment(trial.params))
    click.echo(f"best: holdout AUC {result.best_value:.4f} with {_assignment(result.best_params)}")
    click.echo(f"  {output_dir / 'best_params.json'}; MLflow study run {result.mlflow_run_id} "
               f"in {tracking.tracking_uri}")


def _assignment(params: dict[str, Any]) -> str:
    """A trial's parameters on one line; small floats (weight decay) in significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _registry(tracking_uri: str) -> Any:
    """The registry at --tracking-uri, else MLFLOW_TRACKING_URI, else `slipway run`'s embedded store."""
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import DEFAULT_PIPELINE_ROOT, TrackingConfig

    return ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, DEFAULT_PIPELINE_ROOT).tracking_uri)


_REGISTRY_OPTION = click.option(
    "--tracking-uri", default="", metavar="URI",
    help="MLflow tracking/registry URI. Default: MLFLOW_TRACKING_URI, else the embedded store of `slipway run` "
         "(runs/mlflow/mlflow.db).")


def _cache_options(*, from_env: bool) -> Callable[[Callable], Callable]:
    """The inference cache's options (serving/inference_cache.py): `serve` also reads them from the
    SLIPWAY_INFERENCE_CACHE_* variables, which `manifests inference-service` sets on the predictor."""
    from slipway.serving.inference_cache import DEFAULT_TTL_S, REDIS_ENV, SIZE_ENV, TTL_ENV

    def env(name: str) -> dict[str, Any]:
        return {"envvar": name, "show_envvar": True} if from_env else {}

    def attach(command: Callable) -> Callable:
        for option in reversed((
            click.option("--cache-size", type=click.IntRange(min=0), default=0, show_default=True, **env(SIZE_ENV),
                         help="Remember this many rows' scores in process (LRU, by model and feature values); 0: no "
                              "cache. Never used for a model whose model.json says \"deterministic\": false."),
            click.option("--cache-ttl", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TTL_S,
                         show_default=True, **env(TTL_ENV), help="Seconds a cached score is kept."),
            click.option("--cache-redis", default="", metavar="HOST:PORT", **env(REDIS_ENV),
                         help="Share cached scores with the other replicas through this Redis (behind the in-process "
                              "cache when --cache-size is set too). A Redis that fails is a miss."),
        )):
            command = option(command)
        return command

    return attach


_MODEL_OPTION = click.option("--model", "model_name", required=True, metavar="NAME",
                             help="Registered model name; the training pipeline registers under its problem's name "
                                  "(e.g. chicago_taxi).")


@cli.command("promote")
@_MODEL_OPTION
@click.option("--version", required=True, metavar="V", help="The model version to make the champion.")
@_REGISTRY_OPTION
def promote_command(model_name: str, version: str, tracking_uri: str) -> None:
    """Move the `champion` alias to VERSION; the champion it replaces is recorded for `slipway rollback`."""
    from slipway.components.registry import RegistryError

    logs.configure()
    try:
        click.echo(_registry(tracking_uri).promote(model_name, version).describe())
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("rollback")
@_MODEL_OPTION
@_REGISTRY_OPTION
def rollback_command(model_name: str, tracking_uri: str) -> None:
    """Move the `champion` alias back to the previous champion, as recorded by promotions."""
    from slipway.components.registry import RegistryError

    logs.configure()
    try:
        click.echo(_registry(tracking_uri).rollback(model_name).describe())
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("estimate")
@click.option("--qps", type=float, required=True, help="Target load: requests per second, each scoring one row.")
@click.option("--p99-ms", type=float, required=True, help="Target 99th-percentile latency of one request, in ms.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A measured latency profile (JSON, format in `slipway.capacity`), e.g. from the serving "
                   "benchmark. Default: measure --model here, in process.")
@click.option("--model", "model_ref", default=f"models:/{DEFAULT_PROBLEM}@champion", show_default=True,
              metavar="DIR|URI", help="The model to measure when no --profile is given: a model directory, or a "
                                      "models:/NAME@ALIAS or models:/NAME/VERSION URI in the registry.")
@click.option("--data", "data_uri", metavar="URI", help="Rows to measure with (their eval split): a CSV/Parquet "
                                                       "path or URI. Default: the Chicago taxi sample.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True, help="Problem of --data.")
@click.option("--utilisation", type=float, default=0.6, show_default=True,
              help="Target busy fraction of each replica, in (0, 1]: headroom for bursts and queueing.")
@click.option("--max-batch-wait-ms", type=float, default=10.0, show_default=True,
              help="KServe batcher's maxLatency: the longest a request waits for its batch to fill.")
@click.option("--save-profile", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the measured profile here, to reuse with --profile.")
@_REGISTRY_OPTION
def estimate_command(qps: float, p99_ms: float, profile_path: Path | None, model_ref: str, data_uri: str | None,
                     problem: str, utilisation: float, max_batch_wait_ms: float, save_profile: Path | None,
                     tracking_uri: str) -> None:
    """Estimate the replicas (or GPUs) that serve --qps within --p99-ms, with and without batching.

    The back-of-envelope method: replicas = ceil(QPS × latency ÷ utilisation), from measured latency
    per batch size; batching trades a wait for the batch to fill against throughput. Prints the
    arithmetic with the numbers filled in.
    """
    import tempfile

    from slipway.capacity import estimate, load_profile, measure_profile
    from slipway.capacity import save_profile as write_profile
    from slipway.components.ingestion import IngestError
    from slipway.problem import ProblemError
    from slipway.storage import StorageError

    logs.configure()
    try:
        if profile_path is not None:
            profile = load_profile(profile_path)
        else:
            with tempfile.TemporaryDirectory(prefix="slipway-estimate-") as tmp:
                profile = measure_profile(_model_dir(model_ref, tracking_uri, Path(tmp)),
                                          _eval_rows(data_uri, problem, Path(tmp)))
            if save_profile is not None:
                write_profile(profile, save_profile)
        click.echo(estimate(profile, qps, p99_ms, utilisation, max_batch_wait_ms).explain())
    except (IngestError, ProblemError, StorageError) as exc:  # --data or --problem cannot be read
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _model_dir(ref: str, tracking_uri: str, workdir: Path) -> Path:
    """A model directory as given, or the one a models:/, s3:// or gs:// URI names, fetched into `workdir`."""
    from slipway.components.registry import RegistryError
    from slipway.serving.model_source import fetch_model
    from slipway.storage import StorageError

    try:
        return fetch_model(ref, workdir, tracking_uri).path
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(f"{exc} (train one with `make run`, or give --model DIR or --profile)") from None


def _eval_rows(data_uri: str | None, problem: str, workdir: Path) -> Any:
    """The eval split of --data, each row with its point-in-time Feast features when the problem has them."""
    import pandas as pd

    from slipway.components.feature_store import local_store, training_set
    from slipway.components.ingestion import ingest_source
    from slipway.problem import load_problem
    from slipway.sample_data import fetch_sample

    source = data_uri or str(fetch_sample()["data.csv"])
    loaded = load_problem(problem)
    splits = workdir / "train.parquet", workdir / "eval.parquet"
    ingest_source(source, loaded, *splits)
    rows = pd.read_parquet(splits[1])
    if loaded.feature_store is None:
        return rows
    return training_set(local_store(splits, loaded, workdir / "feature_repo"), loaded, rows)


@cli.command("deploy")
@click.option("--model", "model_uri", default=f"models:/{DEFAULT_PROBLEM}@challenger", show_default=True,
              metavar="URI", help="The registered version to deploy: models:/NAME/VERSION or models:/NAME@ALIAS.")
@click.option("--canary", "steps", default="10,50,100", show_default=True, metavar="PERCENTS",
              help="Traffic steps for the canary, comma-separated; after the last one passes it is promoted.")
@click.option("--min-requests", type=int, default=500, show_default=True,
              help="Canary requests each step needs before it is judged (the reasoning: slipway.serving.canary).")
@click.option("--rps", type=float, default=250.0, show_default=True, help="Replayed eval rows per second.")
@click.option("--data", "data_uri", metavar="URI", help="Rows to replay as traffic (their eval split). "
                                                       "Default: the Chicago taxi sample.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True, help="Problem of --data.")
@_REGISTRY_OPTION
def deploy_command(model_uri: str, steps: str, min_requests: int, rps: float, data_uri: str | None, problem: str,
                   tracking_uri: str) -> None:
    """Deploy a registered model locally: serve it, smoke-test it, canary it against the champion, promote it.

    Starts a real KServe model server for --model and one for the current champion, puts a weighted
    router in front, replays eval rows through it as traffic, and moves traffic in --canary steps,
    judging each (error rate, p99 latency, score PSI against the champion). If every step passes,
    the model becomes the champion; at the first failed check traffic goes back and the champion
    stays. With no champion yet, a model that passes its smoke test is promoted.

    Exit codes: 0 promoted, 3 rolled back, 1 could not deploy (a server did not start, the smoke
    test failed), 2 bad usage.
    """
    import tempfile

    from slipway.components.ingestion import IngestError
    from slipway.components.registry import RegistryError
    from slipway.problem import ProblemError
    from slipway.serving.canary import AnalysisPolicy
    from slipway.serving.deploy import DeployError, LocalDeployConfig, deploy_registered
    from slipway.serving.process import ServerStartError
    from slipway.storage import StorageError

    logs.configure()
    try:
        config = LocalDeployConfig(name="", steps=tuple(int(p) for p in steps.split(",")), traffic_rps=rps,
                                   policy=AnalysisPolicy(min_requests=min_requests))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--canary/--min-requests/--rps") from None
    try:
        registry = _registry(tracking_uri)
        version = registry.resolve(model_uri)
        with tempfile.TemporaryDirectory(prefix="slipway-deploy-") as workdir:
            result = deploy_registered(registry, version.name, version.version,
                                       _eval_rows(data_uri, problem, Path(workdir)),
                                       dataclasses.replace(config, name=version.name), Path(workdir))
    except (RegistryError, DeployError, ServerStartError, IngestError, ProblemError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n" + result.markdown())
    if not result.promoted:
        raise SystemExit(3)


@cli.group("manifests")
def manifests_group() -> None:
    """Write the Kubernetes objects Slipway runs on Kubeflow, for `kubectl apply -f`."""


@manifests_group.command("inference-service")
@click.option("--model", "model_uri", required=True, metavar="URI",
              help="Where the model artifact is: s3://, gs:// or pvc:// (what KServe's storage initializer fetches), "
                   "or a models:/NAME@ALIAS or models:/NAME/VERSION URI whose artifacts are on such storage.")
@click.option("--name", default="", help="InferenceService name. Default: the model name, '_' as '-'.")
@click.option("--namespace", default="kubeflow-user-example-com", show_default=True,
              help="The Kubeflow profile namespace to serve in.")
@click.option("--model-name", default=DEFAULT_PROBLEM, show_default=True,
              help="The name in the URLs (/v2/models/NAME/infer); a models:/ URI's registered name wins.")
@click.option("--mode", type=click.Choice(["Serverless", "Standard"]), default="Serverless", show_default=True,
              help="KServe deployment mode: Knative revisions and canaryTrafficPercent, or plain Deployments "
                   "and spec.canary[] (KServe 0.20+).")
@click.option("--canary", "canary_percent", type=click.IntRange(1, 99), default=None,
              help="Also write the canary object: --model at this percent of traffic, --stable serving the rest.")
@click.option("--stable", "stable_uri", default=None, metavar="URI", help="The model now serving (with --canary).")
@click.option("--service-account", default=cluster.SERVING_ACCOUNT, show_default=True,
              help="Service account holding the storage credentials (manifests/base creates the default).")
@click.option("--logger-url", default=None, metavar="URL",
              help="Send every request/response as CloudEvents here (the drift service): an http(s) URL.")
@click.option("--gpus", type=int, default=0, show_default=True, help="nvidia.com/gpu per predictor pod.")
@click.option("--feast-redis", default=None, metavar="HOST:PORT",
              help="Put the Feast transformer in front of the predictor, reading online features from this Redis "
                   "(with --feast-registry): clients then send only the trip and its entity keys.")
@click.option("--feast-registry", default=None, metavar="URI",
              help="The Feast registry the transformer reads (s3://, gs:// or a SQL URL), as the pipeline's "
                   "feast_apply wrote it.")
@click.option("--fallback-score", type=click.FloatRange(0, 1), default=UNINFORMED_SCORE, show_default=True,
              help="What the transformer answers, marked degraded, when the predictor cannot: best the model's "
                   "training positive rate.")
@_cache_options(from_env=False)
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist/manifests"),
              show_default=True)
@_REGISTRY_OPTION
def inference_service_command(model_uri: str, name: str, namespace: str, model_name: str, mode: str,
                              canary_percent: int | None, stable_uri: str | None, service_account: str,
                              logger_url: str | None, gpus: int, feast_redis: str | None, feast_registry: str | None,
                              fallback_score: float, cache_size: int, cache_ttl: float, cache_redis: str,
                              output_dir: Path, tracking_uri: str) -> None:
    """Write the KServe InferenceService that serves a model (and its canary), ready for `kubectl apply -f`.

    Built with the kserve SDK's model classes and checked against KServe's CRD in the tests: the
    predictor runs `slipway serve --model /mnt/models` in the Slipway image; with --feast-redis, a
    transformer running `slipway transform` adds each request's online features first.
    """
    from slipway.components.feature_store import ENV_REDIS, ENV_REGISTRY
    from slipway.components.registry import RegistryError
    from slipway.serving.inference_cache import CacheSettings
    from slipway.serving.inference_service import (
        LoggerConfig,
        ServingConfig,
        ServingResources,
        TransformerConfig,
        build_canary,
        build_inference_service,
        check_feast_registry,
        check_host_port,
        check_http_url,
        write_manifest,
    )

    if (canary_percent is None) != (stable_uri is None):
        raise click.UsageError("--canary and --stable go together: the canary needs the model it shares traffic with")
    if (feast_redis is None) != (feast_registry is None):
        raise click.UsageError("--feast-redis and --feast-registry go together: the transformer reads the online "
                               "store's features by the registry's definitions")
    try:
        # The library's own rules, named by flag here, before a models:/ URI is resolved or anything is written.
        for check, flag, value in ((check_http_url, "--logger-url", logger_url),
                                   (check_host_port, "--feast-redis", feast_redis),
                                   (check_feast_registry, "--feast-registry", feast_registry),
                                   (check_host_port, "--cache-redis", cache_redis)):
            if value:
                check(value, flag)
        transformer = TransformerConfig(env={ENV_REDIS: feast_redis, ENV_REGISTRY: feast_registry},
                                        fallback_score=fallback_score) if feast_redis else None
        storage_uri = model_uri
        if model_uri.startswith("models:/"):
            version = _registry(tracking_uri).resolve(model_uri)
            storage_uri, model_name = version.source, version.name
        config = ServingConfig(
            name=name or model_name.replace("_", "-").lower(), namespace=namespace,
            storage_uri=stable_uri or storage_uri, model_name=model_name, deployment_mode=mode,
            resources=ServingResources(gpus=gpus), service_account=service_account,
            logger=LoggerConfig(url=logger_url) if logger_url else None, transformer=transformer,
            cache=CacheSettings(size=cache_size, ttl_s=cache_ttl, redis=cache_redis))
        written = [write_manifest(build_inference_service(config), output_dir / f"{config.name}.yaml")]
        if canary_percent is not None:
            written.append(write_manifest(build_canary(config, storage_uri, canary_percent),
                                          output_dir / f"{config.name}-canary.yaml"))
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for path in written:
        click.echo(str(path))


@manifests_group.command("experiment")
@click.option("--train-data", required=True, metavar="URI",
              help="The data trials fit on: an s3:// or gs:// URI of a training set (with its features) that the "
                   "trial pods can read; `slipway run` and the pipeline's tune step use the train split's older rows.")
@click.option("--eval-data", required=True, metavar="URI",
              help="The data trials are judged on (the objective): the train split's newest rows, never the eval split "
                   "that later judges the model.")
@click.option("--output-uri", required=True, metavar="URI",
              help="Object storage where each trial writes its model (<URI>/<trial name>/model).")
@click.option("--search-space", default=DEFAULT_SEARCH_SPACE, show_default=True,
              help="Packaged search space name (slipway/search_spaces/), or the path of a search-space YAML: the same "
                   "definition `slipway tune` runs locally.")
@click.option("--max-trials", type=click.IntRange(min=1), default=None,
              help="Override the search space's budget.max_trials.")
@click.option("--name", default="slipway-tune", show_default=True,
              help="Experiment name (Katib names trials after it: at most 40 characters).")
@click.option("--namespace", default="kubeflow-user-example-com", show_default=True,
              help="The Kubeflow profile namespace to run the trials in.")
@click.option("--image", default=None, metavar="IMAGE", help="The trial image. Default: this release's core image.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="Packaged problem name, or a URI of a problem YAML that the trial pods can read.")
@click.option("--tracking-uri", default="", metavar="URI",
              help="MLflow tracking URI the trials log to (reachable from the trial pods); empty: no tracking.")
@click.option("--credentials-secret", default="", metavar="SECRET",
              help="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the trial pods' object storage.")
@_train_config_options
def experiment_command(train_data: str, eval_data: str, output_uri: str, search_space: str, max_trials: int | None,
                       name: str, namespace: str, image: str | None, problem: str, tracking_uri: str,
                       credentials_secret: str, **hyperparameters: Any) -> None:
    """Print the Katib Experiment that runs the search space on Kubeflow, as YAML: `| kubectl apply -f -`.

    Each trial is a Job running the trainer on the core image with `${trialParameters.x}` in place of every
    searched option; the other options (--epochs, --learning-rate, ...) are the base every trial shares.
    Built with Katib's API model classes and checked in the tests against the rules of Katib's admission
    webhook. Follow it in the Katib UI, or let the pipeline's tune step (tuner=katib) create and follow it.
    """
    import yaml

    from slipway.components.katib_experiment import (
        ExperimentSpecError,
        TrialJob,
        build_experiment,
        experiment_manifest,
    )
    from slipway.components.search_space import SearchSpaceError, load_search_space

    try:
        space = load_search_space(search_space)
    except SearchSpaceError as exc:
        raise click.BadParameter(str(exc), param_hint="--search-space") from None
    if max_trials is not None:
        space = space.with_max_trials(max_trials)
    try:
        base = _train_config(hyperparameters)
        trial = TrialJob(image=image or runtimes.CORE_IMAGE, train_data=train_data, eval_data=eval_data,
                         output_uri=output_uri.rstrip("/"), problem=problem, base=base, tracking_uri=tracking_uri,
                         credentials_secret=credentials_secret)
        experiment = build_experiment(space, name, namespace, trial)
    except (ExperimentSpecError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(yaml.safe_dump(experiment_manifest(experiment), sort_keys=False), nl=False)


@cli.command("features")
@click.option("--entity", "entities", multiple=True, required=True, metavar="NAME=KEY",
              help="An entity key to look up, e.g. --entity company='Flash Cab' --entity pickup_community_area=8.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True, help="Problem whose features to read.")
@click.option("--feature-repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The feature store's folder. Default: SLIPWAY_FEAST_* from the environment, else the embedded "
                   "store of `slipway run` (runs/feature_repo).")
def features_command(entities: tuple[str, ...], problem: str, feature_repo: Path | None) -> None:
    """Look up the online features of entity keys, as the model server's transformer does.

    Prints each feature view's values for the key, or says that the store has no row for it (an
    entity never seen, or not materialized yet).
    """
    from slipway.components import feature_store
    from slipway.components.tracking import DEFAULT_PIPELINE_ROOT
    from slipway.problem import ProblemError, load_problem

    logs.configure(logging.WARNING)  # the answer, not the lookup's progress
    try:
        loaded = load_problem(problem)
    except ProblemError as exc:
        raise click.BadParameter(str(exc), param_hint="--problem") from None
    keys: dict[str, list[Any]] = {}
    for assignment in entities:
        name, sep, value = assignment.partition("=")
        if not sep or name not in loaded.entities:
            raise click.BadParameter(f"{assignment!r}: expected NAME=KEY with NAME one of {list(loaded.entities)}",
                                     param_hint="--entity")
        keys[name] = [int(value) if loaded.columns[name] == "integer" and value.lstrip("-").isdigit() else value]
    refs = [ref for ref in feature_store.feature_refs(loaded) if ref.split(":")[0] in
            {feature_store.view_name(entity) for entity in keys}]
    config = feature_store.StoreConfig.for_pipeline(feature_repo or "", DEFAULT_PIPELINE_ROOT)
    try:
        answer = feature_store.online_features(feature_store.open_store(config, loaded), loaded, keys, refs)
    except feature_store.FeatureStoreError as exc:
        raise click.ClickException(str(exc)) from None
    for entity, (key,) in keys.items():
        view = feature_store.view_name(entity)
        if not answer[view + feature_store.FOUND_SUFFIX][0]:
            click.echo(f"{entity}={key!r}: unknown to the online store (never seen, or not materialized)")
            continue
        click.echo(f"{entity}={key!r}:")
        for ref in refs:
            if ref.startswith(view + ":"):
                value = answer[feature_store.full_feature_name(ref)][0]
                click.echo(f"  {ref.split(':')[1]:<20} {'missing' if value is None else _number(value)}")


class UnusableInputError(click.ClickException):
    """`slipway validate`, `drift`, `monitor`, `feedback`: the input cannot be used (a missing column, no rows, an
    unreadable file, a schema that does not parse), named in the message: exit code 3, apart from the verdicts."""

    exit_code = 3


@cli.command("validate")
@click.option("--data", "data_uri", required=True, metavar="URI",
              help="CSV or Parquet file to validate: a local path, gs://, s3:// or http(s):// URI.")
@click.option("--schema", "schema_uri", required=True, metavar="PATH",
              help="The schema.pbtxt to validate against: a run's `schema` artifact, or a reviewed copy.")
@click.option("--training-stats", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A run's `statistics` artifact folder (Split-train/FeatureStats.pb): also check the data's "
                   "skew from the training data, with the schema's per-feature thresholds.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="Problem whose column types the data is read with.")
@click.option("--anomalies", "anomalies_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write TFDV's anomalies.pbtxt here.")
def validate_command(data_uri: str, schema_uri: str, training_stats: Path | None, problem: str,
                     anomalies_path: Path | None) -> None:
    """Validate a data file against a schema with TFDV, outside a pipeline, and print the anomalies.

    Data without the label column (a raw source, a serving log) is judged in the schema's SERVING
    environment. Exit codes: 0 no anomalies, 1 anomalies (listed), 2 bad usage, 3 the input could not be
    validated (named: a missing file, a schema that does not parse).
    """
    import tempfile

    from slipway import runtime_call
    from slipway.components.validation_report import ValidationResult
    from slipway.storage import StorageError, download

    logs.configure(logging.WARNING)  # the verdict, not TFDV's progress
    with tempfile.TemporaryDirectory(prefix="slipway-validate-") as tmp:
        local = {}
        for flag, uri in (("--data", data_uri), ("--schema", schema_uri)):
            local[flag] = Path(tmp) / flag.strip("-") / (Path(uri.split("?")[0]).name or "input")
            try:
                download(uri, local[flag])
            except StorageError as exc:
                raise UnusableInputError(f"{flag}: {exc}") from None
        try:
            answer = runtime_call.call(
                runtimes.TFDV, "slipway.components.data_validation:validate_data",
                data=str(local["--data"]), schema_path=str(local["--schema"]),
                anomalies_path=str(anomalies_path or Path(tmp) / "anomalies.pbtxt"), problem=problem,
                training_statistics=str(training_stats or ""))
        except runtime_call.RuntimeCallError as exc:
            raise UnusableInputError(str(exc).replace(str(local["--data"]), data_uri)
                             .replace(str(local["--schema"]), schema_uri)) from None
    result = ValidationResult.from_json({**answer, "dataset": data_uri})
    click.echo(result.text())
    if result.anomalies:
        raise SystemExit(1)


@cli.command("drift", cls=VerdictCommand)
@click.option("--reference", "reference_uri", required=True, metavar="URI",
              help="What the model was trained on (a run's train split, or any CSV/Parquet file by URI).")
@click.option("--current", "current_uri", required=True, metavar="URI",
              help="The new data: a batch, or a window of the prediction log (CSV/Parquet, any URI), or a "
                   "`slipway score` output directory (with --model, its logged scores are the `prediction` row).")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="Problem whose features are compared, and whose column types the data is read with.")
@click.option("--bins", type=click.IntRange(min=2), default=DriftConfig.bins, show_default=True,
              help="PSI bins for a numeric feature (the reference's quantiles).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DriftConfig.alpha,
              show_default=True, help="Significance of the KS and Chi-squared tests, after the correction.")
@click.option("--correction", type=click.Choice(CORRECTIONS), default=DriftConfig.correction, show_default=True,
              help="How the p-values are corrected for testing every feature: Bonferroni, or Benjamini-Hochberg "
                   "FDR.")
@click.option("--min-rows", type=click.IntRange(min=1), default=DriftConfig.min_rows, show_default=True,
              help="Fewer values of a feature on either side than this: `insufficient data` for it.")
@click.option("--mmd-rows", type=click.IntRange(min=0), default=DriftConfig.mmd_sample_rows, show_default=True,
              help="Rows per side for the multivariate MMD test (0 skips it).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the HTML report here: the table, and each feature's shares per bin on both sides.")
@click.option("--model", "model_ref", default=None, metavar="DIR|URI",
              help="Also compare this model's scores on both sides (the `prediction` row): a model directory, s3:// "
                   "or gs:// prefix, or models:/NAME@ALIAS. Both files need every column it reads (Feast's too).")
def drift_command(reference_uri: str, current_uri: str, problem: str, bins: int, alpha: float, correction: str,
                  min_rows: int, mmd_rows: int, report_path: Path | None, model_ref: str | None) -> None:
    """Measure the drift of CURRENT from REFERENCE, feature by feature, and print a table, worst first.

    Per feature: PSI over the reference's bins, and alibi-detect's KS (numeric) or Chi-squared
    (categorical) test, its p-value corrected for the number of features. A feature's level is its PSI
    band (< 0.1 none, 0.1-0.2 warning, > 0.2 critical) when the test is significant, else none; the
    overall level is the worst feature's. With --model, that model's scores on both sides are one more
    row, `prediction`, measured and counted the same way. Exit codes: 0 none, 1 warning, 2 critical, 3 the two
    cannot be compared (named), 4 bad usage (a missing or invalid option).
    """
    import tempfile

    from slipway.components.drift_detection import DriftInputError, current_table, detect_drift, drift_table
    from slipway.problem import ProblemError, load_problem

    logs.configure(logging.WARNING)  # the table, not the detectors' progress
    config = DriftConfig(bins=bins, alpha=alpha, correction=correction, min_rows=min_rows, mmd_sample_rows=mmd_rows)
    try:
        loaded = load_problem(problem)
        with tempfile.TemporaryDirectory(prefix="slipway-drift-") as tmp:
            model = _drift_model(model_ref, Path(tmp) / "model") if model_ref else None
            extra = model.preprocessing.numeric if model else []
            reference = drift_table(reference_uri, loaded, Path(tmp) / "reference.parquet", "reference", extra)
            current, logged = current_table(current_uri, loaded, Path(tmp) / "current.parquet", extra)
            report = detect_drift(reference, current, loaded.features.numeric, loaded.features.categorical, config,
                                  model, f"model {model_ref}", current_scores=logged)
    except (ProblemError, DriftInputError) as exc:
        raise UnusableInputError(str(exc)) from None
    if report_path is not None:
        from slipway.components.drift_report import write_drift_report

        write_drift_report(report, report_path, f"Drift of {current_uri} from {reference_uri}")
    click.echo(f"{current_uri} ({report.current_rows:,} rows) against {reference_uri} ({report.reference_rows:,} "
               f"rows), p-values {correction}-corrected:\n")
    click.echo(report.table())
    if report.mmd is not None:
        mmd = report.mmd
        click.echo("\nMMD (multivariate): " + (f"p = {mmd.p_value:.3g} on {mmd.current_rows:,} rows a side"
                                                if mmd.p_value is not None else mmd.reason))
    click.echo(f"\ndrift: {report.level}")
    raise SystemExit(LEVELS.index(report.level))


def _drift_model(ref: str, workdir: Path) -> Any:
    """`slipway drift --model`: the model that scores both sides, loaded (imports torch, so only when asked)."""
    from slipway.components.model_artifact import ModelArtifactError, load_model

    try:
        return load_model(_model_dir(ref, "", workdir))
    except ModelArtifactError as exc:
        raise UnusableInputError(str(exc)) from None
    except click.ClickException as exc:  # _model_dir's: exit 1 would read as drift's "warning"
        raise UnusableInputError(exc.message) from None


@cli.command("monitor", cls=VerdictCommand)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The monitor's YAML: reference (required), problem, model_name, window_rows, bins, min_rows, "
                   "alpha, alert_level, and for live AUC labels, baseline_auc, max_drop_percent, min_labels.")
@click.option("--prediction-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Follow this prediction log (`slipway serve --prediction-log`) instead of waiting for KServe's "
                   "logger to POST events.")
@click.option("--replay", is_flag=True, help="Read the whole --prediction-log once, print every window (the last "
                                            "one partial if it holds min_rows rows), and exit with the worst "
                                            "window's level (0 none, 1 warning, 2 critical; 3 no window; 4 bad "
                                            "usage).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to serve on.")
@click.option("--port", type=int, default=MONITOR_PORT, show_default=True,
              help="POST / takes CloudEvents (the InferenceService logger's url); GET /metrics, /drift, /healthz.")
def monitor_command(config_path: Path, prediction_log: Path | None, replay: bool, host: str, port: int) -> None:
    """Watch a served model's traffic for drift: windows of requests against the training data, as Prometheus
    metrics.

    Each window of `window_rows` rows gets every feature's PSI against the reference (the same bins as
    `slipway drift`) and a level: < 0.1 none, 0.1-0.2 warning, > 0.2 critical, none while the PSI is
    within what sampling noise gives. `slipway_drift_alert` is 1 when a window reaches `alert_level`.
    With labels configured, live AUC is joined from the labels file and `slipway_live_auc_dropped` is 1
    when it falls more than max_drop_percent below baseline_auc.
    """
    from slipway.serving.drift_monitor import DriftMonitor, MonitorConfig, MonitorConfigError
    from slipway.serving.drift_service import feed, serve_monitor
    from slipway.serving.prediction_log import PredictionLogError, read_events

    logs.configure(logging.WARNING if replay else logging.INFO)
    if replay and prediction_log is None:
        raise click.UsageError("--replay reads a log: give --prediction-log")
    try:
        monitor = DriftMonitor(MonitorConfig.load(config_path))
    except MonitorConfigError as exc:
        raise UnusableInputError(str(exc)) from None
    if not replay:
        serve_monitor(monitor, host, port, prediction_log)
        return
    try:
        windows = feed(monitor, read_events(prediction_log))
    except PredictionLogError as exc:
        raise UnusableInputError(str(exc)) from None
    windows += [last] if (last := monitor.flush()) else []
    if not windows:
        raise UnusableInputError(f"{prediction_log}: fewer than min_rows ({monitor.config.min_rows}) request rows "
                                 "of the monitored features: insufficient data, no window to measure")
    for window in windows:
        click.echo(window.line())
    if monitor.performance is not None:
        click.echo(monitor.performance.summary())
    worst = max((w.level for w in windows), key=LEVELS.index, default="none")
    click.echo(f"{len(windows)} window(s) of {monitor.config.window_rows} rows; worst: {worst}")
    raise SystemExit(LEVELS.index(worst))


@cli.command("feedback")
@click.option("--prediction-log", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The served model's prediction log (rotated files are read too).")
@click.option("--labels", "labels_uri", required=True, metavar="URI",
              help="CSV/Parquet of request_id, outcome (0/1 or true/false) and optionally instance (the row's "
                   "position in its request), any storage URI.")
@click.option("--baseline-auc", type=click.FloatRange(0.5, 1, min_open=True), default=None,
              help="The AUC to judge live AUC against. Default: the champion's eval AUC in the registry.")
@click.option("--model", "model_name", default=DEFAULT_PROBLEM, show_default=True, metavar="NAME",
              help="Registered model whose champion's eval AUC is the default baseline.")
@click.option("--max-drop-percent", type=click.FloatRange(0, 100, min_open=True, max_open=True),
              default=FeedbackPolicy.max_drop_percent, show_default=True,
              help="A live AUC this many percent below the baseline is a drop: exit 1, retrain.")
@click.option("--min-labels", type=click.IntRange(min=2), default=FeedbackPolicy.min_labels, show_default=True,
              help="Fewer labelled rows than this: not judged.")
@_REGISTRY_OPTION
def feedback_command(prediction_log: Path, labels_uri: str, baseline_auc: float | None, model_name: str,
                     max_drop_percent: float, min_labels: int, tracking_uri: str) -> None:
    """Join late labels to the prediction log by request id, and judge the live AUC against the baseline.

    Exit codes: 0 within the allowed drop (or too few labels to judge), 1 dropped (retrain), 3 the labels
    or the log cannot be read (named).
    """
    from slipway.components.feedback import FeedbackError, live_performance, logged_scores, read_labels
    from slipway.components.registration import champion_lineage
    from slipway.components.registry import RegistryError
    from slipway.serving.prediction_log import PredictionLogError, read_events

    logs.configure(logging.WARNING)
    try:
        if baseline_auc is None:
            baseline_auc = champion_lineage(_registry(tracking_uri), model_name).eval_auc
            if baseline_auc is None:
                raise UnusableInputError(f"the champion of {model_name!r} records no eval AUC: give --baseline-auc")
        result = live_performance(logged_scores(read_events(prediction_log)), read_labels(labels_uri), baseline_auc,
                                  FeedbackPolicy(max_drop_percent=max_drop_percent, min_labels=min_labels))
    except (FeedbackError, PredictionLogError, RegistryError) as exc:
        raise UnusableInputError(str(exc)) from None
    click.echo(result.summary())
    if result.unmatched_labels or result.degraded:
        click.echo(f"left out: {result.unmatched_labels} label(s) with no logged request, {result.degraded} "
                   "degraded answer(s)")
    raise SystemExit(int(result.dropped))


@cli.command("serve")
@click.option("--model", "model_uri", default=f"models:/{DEFAULT_PROBLEM}@champion", show_default=True,
              metavar="DIR|URI", help="The model: a model directory, s3:// or gs:// prefix, or a models:/NAME@ALIAS "
                                      "or models:/NAME/VERSION URI in the registry.")
@click.option("--name", default="", help="Model name in the URLs (/v1/models/NAME:predict). "
                                        "Default: the registered model's name, else the problem's.")
@click.option("--http-port", type=int, default=8080, show_default=True, help="V1 and V2 REST, health, /metrics.")
@click.option("--grpc-port", type=int, default=8081, show_default=True, help="V2 gRPC (open inference protocol).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Server processes; only 1 is supported (scale out with replicas).")
@click.option("--fallback-score", type=float, default=None,
              help="Score answered, marked degraded, when the model fails. Default: the training positive rate.")
@click.option("--max-payload-bytes", type=int, default=DEFAULT_MAX_PAYLOAD_BYTES, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--max-batch-rows", type=int, default=1024, show_default=True, help="Larger batches get 400.")
@click.option("--prediction-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write sampled request/response pairs here as CloudEvents (JSONL, rotated), as KServe's "
                   "logger would send them to a drift service.")
@click.option("--log-sample-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Fraction of requests written to --prediction-log.")
@click.option("--access-log", is_flag=True, help="Log every request (costs about a quarter of the throughput).")
@click.option("--features", "feature_repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              is_flag=False, flag_value=Path("runs/feature_repo"), metavar="[REPO]",
              help="Add the online features of each request's entities from the Feast store before scoring "
                   "(SLIPWAY_FEAST_* from the environment, else REPO, default runs/feature_repo). A store that "
                   "fails answers the features missing and marks the response degraded.")
@_cache_options(from_env=True)
@_REGISTRY_OPTION
def serve_command(model_uri: str, name: str, http_port: int, grpc_port: int, workers: int,
                  fallback_score: float | None, max_payload_bytes: int, max_batch_rows: int,
                  prediction_log: Path | None, log_sample_rate: float, access_log: bool, feature_repo: Path | None,
                  cache_size: int, cache_ttl: float, cache_redis: str, tracking_uri: str) -> None:
    """Serve a model with KServe's model server: V1 and V2 REST, V2 gRPC, health, Prometheus /metrics.

    \b
    curl localhost:8080/v1/models/chicago_taxi:predict -d '{"instances": [{"fare": 12.5, ...}]}'
    curl localhost:8080/v2/models/chicago_taxi/ready
    """
    from slipway.components.registry import RegistryError
    from slipway.serving.inference_cache import CacheSettings
    from slipway.serving.ports import PortError
    from slipway.serving.prediction_log import PredictionLogError
    from slipway.serving.server import ServeConfig, serve
    from slipway.storage import StorageError

    logs.configure()
    try:
        config = ServeConfig(model_uri=model_uri, name=name, http_port=http_port, grpc_port=grpc_port,
                             workers=workers, fallback_score=fallback_score, max_payload_bytes=max_payload_bytes,
                             max_batch_rows=max_batch_rows, tracking_uri=tracking_uri,
                             prediction_log=prediction_log, log_sample_rate=log_sample_rate, access_log=access_log,
                             feature_repo=feature_repo,
                             cache=CacheSettings(size=cache_size, ttl_s=cache_ttl, redis=cache_redis))
    except PortError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        serve(config)
    except PortError as exc:
        raise click.ClickException(str(exc)) from None
    except (ValueError, RegistryError, StorageError, PredictionLogError) as exc:  # ValueError: a bad artifact
        raise click.ClickException(f"cannot serve {model_uri}: {exc}") from None


@cli.command("transform")
@click.option("--model-name", "--model_name", "model_name", default=DEFAULT_PROBLEM, show_default=True,
              help="The model the predictor serves; also this transformer's URL name (KServe passes it).")
@click.option("--predictor-host", "--predictor_host", "predictor_host", required=True, metavar="HOST[:PORT]",
              help="The predictor's REST address (KServe passes <isvc>-predictor.<namespace>).")
@click.option("--http-port", "--http_port", "http_port", type=int, default=8080, show_default=True,
              help="V1 and V2 REST, health, /metrics.")
@click.option("--grpc-port", "--grpc_port", "grpc_port", type=int, default=8081, show_default=True,
              help="V2 gRPC (forwarded to the predictor's V2 REST).")
@click.option("--workers", type=click.IntRange(1, 1), default=1, hidden=True,
              help="Accepted because KServe passes it; only 1 (scale out with replicas).")
@click.option("--features", "feature_repo", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/feature_repo"), show_default=True, metavar="REPO",
              help="The embedded Feast store's folder; SLIPWAY_FEAST_* in the environment (the cluster's Redis "
                   "and registry) take precedence.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="The problem whose entities and features are looked up.")
@click.option("--fallback-score", type=click.FloatRange(0, 1), default=UNINFORMED_SCORE, show_default=True,
              help="Score answered, marked degraded, when the predictor cannot be reached or fails; set it to "
                   "the model's training positive rate (its model.json, lineage.train_positive_rate).")
@click.option("--predictor-timeout", "predictor_timeout_s", type=click.FloatRange(0, min_open=True), default=5.0,
              show_default=True, help="Seconds to wait for the predictor before answering the fallback.")
@click.option("--max-payload-bytes", type=int, default=DEFAULT_MAX_PAYLOAD_BYTES, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--max-batch-rows", type=int, default=1024, show_default=True, help="Larger batches get 400.")
@click.option("--access-log", is_flag=True, help="Log every request.")
def transform_command(model_name: str, predictor_host: str, http_port: int, grpc_port: int, workers: int,
                      feature_repo: Path, problem: str, fallback_score: float, predictor_timeout_s: float,
                      max_payload_bytes: int, max_batch_rows: int, access_log: bool) -> None:
    """Run the Feast transformer: add each request's online features, then call the predictor.

    The InferenceService's transformer container runs this; KServe appends --model_name,
    --predictor_host and --http_port. Locally, in front of `slipway serve` (without --features):

    \b
    slipway serve --model models:/chicago_taxi@champion --http-port 8080 --grpc-port 8081 &
    slipway transform --predictor-host localhost:8080 --http-port 8090 --grpc-port 8091
    curl localhost:8090/v1/models/chicago_taxi:predict -d '{"instances": [{"company": "Flash Cab", ...}]}'
    """
    from slipway.problem import ProblemError, load_problem
    from slipway.serving.ports import PortError
    from slipway.serving.server import TransformConfig, transform

    logs.configure()
    try:
        load_problem(problem)
        config = TransformConfig(model_name=model_name, predictor_host=predictor_host, feature_repo=feature_repo,
                                 problem=problem, http_port=http_port, grpc_port=grpc_port,
                                 fallback_score=fallback_score, predictor_timeout_s=predictor_timeout_s,
                                 max_payload_bytes=max_payload_bytes, max_batch_rows=max_batch_rows,
                                 access_log=access_log)
    except PortError as exc:
        raise click.ClickException(str(exc)) from None
    except (ValueError, ProblemError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        transform(config)
    except PortError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("version")
def version_command() -> None:
    """Print the versions of Slipway, its runtime images and the key libraries."""
    from slipway import runtime_call

    click.echo(f"slipway {__version__}")
    click.echo(f"python {platform.python_version()}")
    for runtime in runtimes.RUNTIMES:
        # tfdv and drift also have a local environment of their own; the others run locally in core.
        local = f" (locally {runtimes.local_python(runtime)})" if runtime in (runtimes.TFDV, runtimes.DRIFT) else ""
        click.echo(f"{runtime} image {runtimes.image(runtime)}{local}")
    for package in ("kfp", "kfp-kubernetes", "kserve", "feast", "mlflow", "torch", "optuna", "pandas", "pyarrow"):
        try:
            click.echo(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            click.echo(f"{package} (not installed)")
    # tfdv's and drift's key libraries cannot be installed in core: each is read in its own runtime.
    for runtime, package in ((runtimes.TFDV, "tensorflow-data-validation"), (runtimes.DRIFT, "alibi-detect")):
        try:
            found = runtime_call.call(runtime, "importlib.metadata:version", distribution_name=package)
            click.echo(f"{package} {found} (in {runtime})")
        except runtime_call.RuntimeCallError as exc:
            click.echo(f"{package} (unknown: {exc})")


# --- Kubeflow Pipelines: upload, submit, runs ----------------------------------------------------------------


def _kfp_options(command: Callable) -> Callable:
    """Where the KFP API is and how to log in to it: the same options on `upload`, `submit` and `runs`."""
    for option in reversed((
        # KF_PIPELINES_ENDPOINT is kfp.Client's own variable for the address.
        click.option("--host", envvar="KF_PIPELINES_ENDPOINT", show_envvar=True, required=True, metavar="URL",
                     help="The KFP API, e.g. http://localhost:8080 (port-forwarded svc/ml-pipeline-ui) or "
                          "https://kubeflow.example.com/pipeline."),
        click.option("--namespace", default=None, help="Your profile namespace, on a multi-user Kubeflow: "
                                                       "where experiments and runs live."),
        click.option("--existing-token", envvar="SLIPWAY_KFP_TOKEN", show_envvar=True, default=None,
                     metavar="TOKEN", help="A bearer token to send (kfp.Client's existing_token)."),
        click.option("--cookies", envvar="SLIPWAY_KFP_COOKIES", show_envvar=True, default=None, metavar="COOKIES",
                     help="A Cookie header to send: a Kubeflow login session, e.g. 'authservice_session=...' "
                          "from a browser logged in to the dashboard."),
    )):
        command = option(command)
    return command


def _kfp_session(host: str, namespace: str | None, existing_token: str | None, cookies: str | None) -> Any:
    from slipway.pipelines.kfp_client import connect

    with _kfp_errors():
        return connect(host, namespace=namespace, existing_token=existing_token, cookies=cookies)


@contextlib.contextmanager
def _kfp_errors() -> Iterator[None]:
    """A KFP failure as one line on stderr (exit 1), with the credential options when the login failed."""
    from slipway.pipelines.kfp_client import AuthenticationFailed, KfpError

    try:
        yield
    except AuthenticationFailed as exc:
        raise click.ClickException(f"{exc} with --existing-token TOKEN (or SLIPWAY_KFP_TOKEN) or --cookies "
                                   "'authservice_session=...' (or SLIPWAY_KFP_COOKIES)") from None
    except KfpError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("upload")
@click.argument("package", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Pipeline name in KFP. Default: the pipeline's own (pipelineInfo.name).")
@click.option("--description", default=None, help="Shown in the KFP UI.")
@_kfp_options
def upload_command(package: Path, name: str | None, description: str | None, host: str, namespace: str | None,
                   existing_token: str | None, cookies: str | None) -> None:
    """Upload PACKAGE, a compiled pipeline (e.g. dist/training.yaml from `slipway compile`), to KFP.

    The first upload creates the pipeline; uploading again under the same name adds a new version
    (named <pipeline>-<UTC time>-<sha256 prefix>), which `slipway submit` then runs. Prints the ids.
    """
    session = _kfp_session(host, namespace, existing_token, cookies)
    with _kfp_errors():
        upload = session.upload(package, name=name, description=description)
    click.echo(f"{'Created pipeline' if upload.new_pipeline else 'New version of pipeline'} {upload.pipeline_name!r}")
    click.echo(f"  pipeline id: {upload.pipeline_id}")
    click.echo(f"  version id:  {upload.version_id} ({upload.version_name})")
    click.echo(f"  {session.host}/#/pipelines/details/{upload.pipeline_id}/version/{upload.version_id}")


@cli.command("submit")
@click.argument("pipeline")
@click.option("--experiment", default="slipway", show_default=True, help="Experiment to run in; created if missing.")
@click.option("--run-name", default=None, help="Default: the pipeline's name and the UTC time.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a pipeline parameter, e.g. --set epochs=5; repeat for more. "
                   "An unknown key lists the valid ones.")
@click.option("--version", "version_id", default=None, metavar="ID", help="Pipeline version id. Default: the latest.")
@click.option("--wait", is_flag=True, help="Wait for the run to end, printing its state changes: "
                                           "exit 0 if it succeeded, 1 if not.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=24 * 3600.0, show_default=True,
              metavar="SECONDS", help="With --wait: give up waiting after this long (the run goes on).")
@click.option("--poll-interval", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS", help="With --wait: how often to ask for the run's state.")
@_kfp_options
def submit_command(pipeline: str, experiment: str, run_name: str | None, assignments: tuple[str, ...],
                   version_id: str | None, wait: bool, timeout: float, poll_interval: float, host: str,
                   namespace: str | None, existing_token: str | None, cookies: str | None) -> None:
    """Start a run of PIPELINE, a pipeline uploaded to KFP (`slipway upload`), and print its id and link.

    Arguments are typed and checked against the version's parameters before anything is submitted,
    as `slipway run` does; a parameter without a default must be set (e.g. --set source_uri=gs://...).
    """
    from slipway.pipelines.local import PipelineArgumentError

    session = _kfp_session(host, namespace, existing_token, cookies)
    with _kfp_errors():
        try:
            run = session.submit(pipeline, list(assignments), experiment=experiment, run_name=run_name,
                                 version_id=version_id)
        except PipelineArgumentError as exc:
            raise click.BadParameter(str(exc), param_hint="--set") from None
    click.echo(f"Submitted run {run.run_name!r} of {pipeline!r} in experiment {experiment!r}")
    click.echo(f"  run id: {run.run_id}")
    click.echo(f"  {run.url}")
    if not wait:
        return
    with _kfp_errors():
        final = session.wait(run.run_id, timeout, poll_s=poll_interval,
                             on_change=lambda status: click.echo(f"{_utc_now()} {status.state}"))
    if final.state != "SUCCEEDED":
        raise click.ClickException(f"run {run.run_id} ended {final.state}" + (f": {final.error}" if final.error
                                                                              else ""))


@cli.command("runs")
@click.argument("run_id", required=False, metavar="[RUN_ID]")
@click.option("--experiment", default=None, help="Only this experiment's runs. Default: every run you can see.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many recent runs.")
@_kfp_options
def runs_command(run_id: str | None, experiment: str | None, limit: int, host: str, namespace: str | None,
                 existing_token: str | None, cookies: str | None) -> None:
    """List the recent runs on KFP, newest first (name, id, state, created), or show RUN_ID's state."""
    session = _kfp_session(host, namespace, existing_token, cookies)
    with _kfp_errors():
        if run_id:
            status = session.run(run_id)
            click.echo(f"{status.name} ({status.run_id}): {status.state}")
            click.echo(f"  created:  {_utc(status.created_at)}")
            if status.finished_at:
                click.echo(f"  finished: {_utc(status.finished_at)}")
            if status.error:
                click.echo(f"  error:    {status.error}")
            click.echo(f"  {session.run_url(status.run_id)}")
            return
        runs = session.runs(experiment, limit=limit)
    if not runs:
        click.echo("No runs" + (f" in experiment {experiment!r}" if experiment else ""))
        return
    rows = [("NAME", "RUN ID", "STATE", "CREATED (UTC)")]
    rows += [(run.name, run.run_id, run.state, _utc(run.created_at)) for run in runs]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        click.echo("  ".join([*(row[column].ljust(widths[column]) for column in range(3)), row[3]]))


def _utc(moment: datetime.datetime | None) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _utc_now() -> str:
    return _utc(datetime.datetime.now(datetime.UTC))


@cli.command("score")
@click.option("--data", "data_uri", required=True, metavar="URI",
              help="Rows to score: a CSV or Parquet file, a Parquet directory, or a gs://, s3://, http(s):// URI of "
                   "one file. It must hold every column the model reads (Feast features too, unless --feature-repo "
                   "joins them).")
@click.option("--model", "model_ref", default=f"models:/{DEFAULT_PROBLEM}@champion", show_default=True,
              metavar="DIR|URI", help="A model directory, an s3:// or gs:// model folder, or a models:/NAME@ALIAS "
                                      "or models:/NAME/VERSION URI in the registry.")
@click.option("--output", "output_uri", required=True, metavar="URI",
              help="The prediction dataset to write (a directory, or an s3:// or gs:// prefix): Parquet parts, "
                   "_rejects.parquet and the _SUCCESS manifest, all visible only once the whole run succeeded. An "
                   "earlier `slipway score` output there is replaced; anything else is refused (see --overwrite).")
@click.option("--overwrite", is_flag=True,
              help="Replace a file or a directory at --output that is not an earlier scoring output. Never the "
                   "input, nor a directory holding it.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rows read and scored at a time (bounds memory). Default: 131,072.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rows per model call. Default: 4,096 on a CPU, 65,536 on a GPU.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when there is one), cpu, cuda, cuda:N.")
@click.option("--run-id", default=None, metavar="ID",
              help="Written on every output row. Default: score-<UTC time>-<random>.")
@click.option("--feature-repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Join each row's point-in-time Feast features from this feature store (as the training sets "
                   "were), chunk by chunk. SLIPWAY_FEAST_* in the environment configure it as for `slipway "
                   "features`. Default: no join: --data already holds the features.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True, help="Problem of --data (with --feature-repo).")
@_REGISTRY_OPTION
def score_command(data_uri: str, model_ref: str, output_uri: str, overwrite: bool, chunk_rows: int | None,
                  batch_size: int | None, device: str, run_id: str | None, feature_repo: Path | None, problem: str,
                  tracking_uri: str) -> None:
    """Score every row of --data with --model into --output, atomically; unscorable rows go to the rejects file.

    Each output row carries the model version (the registry's, else `sha256:` of the weights) and the
    run id. Exit 0 when the run finished (rejects or not), 1 when the input or the model cannot be used, 2 bad
    usage, such as an --output that is the input or that holds data no scoring run wrote.
    """
    from slipway.components import feature_store
    from slipway.components.batch_prediction import feature_join, new_run_id, predict_batch
    from slipway.components.batch_scoring import BatchInputError, OutputConflictError, ScoringConfig, check_output
    from slipway.components.ingestion import IngestError
    from slipway.components.model_artifact import ModelArtifactError
    from slipway.components.registry import RegistryError
    from slipway.problem import load_problem
    from slipway.storage import StorageError

    logs.configure()
    sizes = {k: v for k, v in {"chunk_rows": chunk_rows, "batch_size": batch_size}.items() if v is not None}
    config = ScoringConfig(device=device, **sizes)
    try:
        check_output(data_uri, output_uri, overwrite=overwrite)  # before the feature store or the model is opened
    except OutputConflictError as exc:
        raise click.BadParameter(str(exc), param_hint="--output") from None
    join = None
    try:
        with contextlib.ExitStack() as stack:
            if feature_repo is not None:
                join = stack.enter_context(
                    feature_join(feature_store.StoreConfig.from_env(feature_repo), load_problem(problem)))
            result = predict_batch(data_uri, model_ref, output_uri, run_id=run_id or new_run_id(),
                                   tracking_uri=tracking_uri, join=join, config=config, overwrite=overwrite)
    except BatchInputError as exc:
        hint = " (or give --feature-repo DIR to join them here)" if "point-in-time" in str(exc) and not join else ""
        raise click.ClickException(f"{exc}{hint}") from None
    except (feature_store.FeatureStoreError, IngestError, ModelArtifactError, OutputConflictError, RegistryError,
            StorageError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.describe())

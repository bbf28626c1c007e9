"""The `slipway` command line: compile pipelines to KFP IR, run them locally, report versions.

    slipway compile [--output-dir dist] [PIPELINE ...]
    slipway run training [--data URI] [--set key=value ...]
    slipway train [--data URI] [--processes N] [--epochs N ...]
    slipway promote --model NAME --version V
    slipway rollback --model NAME
    slipway version

Exit codes: 0 success, 1 a pipeline or step failed, 2 bad usage (unknown pipeline, bad --set).
"""

import dataclasses
import datetime
import importlib.metadata
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from slipway import __version__, logs, runtimes
from slipway.components.train_config import DEFAULT_PROCESSES, TrainConfig
from slipway.problem import DEFAULT_PROBLEM

# Kept in step with slipway.pipelines.catalog.PIPELINES by a test; listed here so that
# `slipway --help` answers without importing kfp and every pipeline.
PIPELINE_NAMES = ("training",)
SOURCE_PARAMETER = "source_uri"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slipway")
def cli() -> None:
    """Slipway: Kubeflow Pipelines v2 components from raw data to a canary-deployed KServe endpoint.

    Pipelines compile to KFP IR for Kubeflow (`slipway compile`) and run unchanged on this
    machine with kfp.local (`slipway run`).
    """


@cli.command("compile")
@click.argument("pipelines", nargs=-1, type=click.Choice(PIPELINE_NAMES), metavar="[PIPELINE]...")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where to write <pipeline>.yaml.")
def compile_command(pipelines: tuple[str, ...], output_dir: Path) -> None:
    """Compile PIPELINES (default: all) to KFP IR YAML, ready for the Kubeflow UI or `kfp.Client`."""
    from slipway.pipelines.compile import compile_pipelines

    for path in compile_pipelines(output_dir, list(pipelines) or None):
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
    from slipway.pipelines.local import (
        PipelineArgumentError,
        parse_arguments,
        pipeline_parameters,
        run_local,
    )
    from slipway.sample_data import fetch_sample

    logs.configure()
    component = get_pipeline(pipeline)
    parameters = pipeline_parameters(component)
    try:
        arguments = parse_arguments(component, list(assignments))
    except PipelineArgumentError as exc:
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
    except RuntimeError as exc:
        raise click.ClickException(f"{str(exc).rstrip('.')} (the failing task's log above says why)") from None
    click.echo(_summary(run, arguments))


def _summary(run: Any, arguments: dict[str, Any]) -> str:
    from kfp import dsl

    lines = ["", f"Pipeline {run.pipeline!r} succeeded in {run.seconds:.1f} s", f"  run directory: {run.run_dir}"]
    for name, value in arguments.items():
        lines.append(f"  {name} = {value}")
    for name, artifact in sorted(run.outputs.items()):
        if isinstance(artifact, dsl.Metrics):
            shown = "  ".join(f"{k} {_number(v)}" for k, v in sorted(artifact.metadata.items()))
            lines.append(f"  {name}: {shown}")
        elif isinstance(artifact, dsl.Artifact):
            lines.append(f"  {name}: {artifact.path}")
    return "\n".join(lines)


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


@cli.command("train")
@click.option("--data", "data_uri", metavar="URI",
              help="Source to ingest and split by time: a local path, gs://, s3:// or http(s):// URI of a CSV or "
                   "Parquet file. Default: the Chicago taxi sample.")
@click.option("--problem", default=DEFAULT_PROBLEM, show_default=True,
              help="Packaged problem name, or the path/URI of a problem YAML.")
@click.option("--processes", type=click.IntRange(min=1), default=DEFAULT_PROCESSES, show_default=True,
              help="Local DDP processes (torchrun --nproc-per-node); 1 trains in a single process.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the splits, checkpoints and model go. Default: runs/train-<timestamp>. Point it at an "
                   "interrupted run's directory to resume from its last checkpoint.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else the "
                                                 "embedded store `mlflow/` beside the output directory (runs/mlflow "
                                                 "by default, shared with `slipway run`).")
@_train_config_options
def train_command(data_uri: str | None, problem: str, processes: int, output_dir: Path | None, tracking_uri: str,
                  **hyperparameters: Any) -> None:
    """Train outside a pipeline: ingest and time-split the data, then train with DDP, tracked in MLflow.

    The same code, options and model artifact as the pipeline's `train` step.
    """
    from slipway.components.ingestion import IngestError, ingest_source
    from slipway.components.launcher import TrainingLaunchError, run_local_training
    from slipway.components.tracking import TrackingConfig
    from slipway.components.trainer import Lineage, trainer_arguments
    from slipway.problem import ProblemError, load_problem
    from slipway.sample_data import fetch_sample

    logs.configure()
    try:
        units = tuple(int(u) for u in hyperparameters.pop("hidden_units").split(","))
        config = TrainConfig(hidden_units=units, **hyperparameters)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    output_dir = output_dir or Path("runs") / f"train-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    source = data_uri or str(fetch_sample()["data.csv"])
    try:
        loaded = load_problem(problem)
        ingested = ingest_source(source, loaded, output_dir / "train.parquet", output_dir / "eval.parquet")
        tracking = TrackingConfig.resolve(tracking_uri, output_dir.parent)
        args = trainer_arguments(str(output_dir / "train.parquet"), str(output_dir / "eval.parquet"),
                                 str(output_dir / "model"), str(output_dir / "checkpoints"), problem, config,
                                 tracking, Lineage(data_sha256=ingested.source_sha256, train_data=source))
        result = run_local_training(args, processes)
    except (ProblemError, IngestError, TrainingLaunchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"\nTrained {config.architecture} with {result.world_size} process(es) on {result.device}: "
               f"eval AUC {result.eval_auc:.4f} at epoch {result.best_epoch} of {result.epochs_run}, "
               f"{result.rows_per_second:,.0f} rows/s")
    click.echo(f"  model: {output_dir / 'model'}")
    click.echo(f"  MLflow run {result.mlflow_run_id} in {tracking.tracking_uri}")


def _registry(tracking_uri: str) -> Any:
    """The registry at --tracking-uri, else MLFLOW_TRACKING_URI, else `slipway run`'s embedded store."""
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig
    from slipway.pipelines.local import DEFAULT_PIPELINE_ROOT

    return ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, DEFAULT_PIPELINE_ROOT).tracking_uri)


_REGISTRY_OPTION = click.option(
    "--tracking-uri", default="", metavar="URI",
    help="MLflow tracking/registry URI. Default: MLFLOW_TRACKING_URI, else the embedded store of `slipway run` "
         "(runs/mlflow/mlflow.db).")
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


@cli.command("version")
def version_command() -> None:
    """Print the versions of Slipway, its runtime image and the key libraries."""
    click.echo(f"slipway {__version__}")
    click.echo(f"python {platform.python_version()}")
    click.echo(f"core image {runtimes.CORE_IMAGE}")
    for package in ("kfp", "kfp-kubernetes", "kserve", "feast", "mlflow", "torch", "optuna", "pandas", "pyarrow"):
        try:
            click.echo(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            click.echo(f"{package} (not installed)")

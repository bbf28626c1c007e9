"""The `slipway` command line: compile pipelines to KFP IR, run them locally, report versions.

    slipway compile [--output-dir dist] [PIPELINE ...]
    slipway run training [--data URI] [--set key=value ...]
    slipway version

Exit codes: 0 success, 1 a pipeline or step failed, 2 bad usage (unknown pipeline, bad --set).
"""

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import click

from slipway import __version__, logs, runtimes

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

"""Compiles pipelines to KFP IR YAML, the file Kubeflow's UI and `kfp.Client` upload."""

import logging
from pathlib import Path

from kfp import compiler

from slipway.atomic import atomic_output
from slipway.pipelines.catalog import PIPELINES, get_pipeline

log = logging.getLogger(__name__)


def compile_pipelines(output_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Writes `<output_dir>/<name>.yaml` for each pipeline (all by default), each atomically."""
    written = []
    for name in names or sorted(PIPELINES):
        pipeline = get_pipeline(name)
        path = output_dir / f"{name}.yaml"
        with atomic_output(path) as temp:
            compiler.Compiler().compile(pipeline, package_path=str(temp))
        log.info("compiled %s -> %s", name, path)
        written.append(path)
    return written

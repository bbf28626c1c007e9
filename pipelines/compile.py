"""Compiles pipelines and components to KFP IR YAML: what Kubeflow's UI and `kfp.Client` upload, and what
users load into their own pipelines with `kfp.components.load_component_from_file`.

A component YAML records the Slipway release it belongs to twice, in places kfp itself writes and keeps:
its image (`<registry>/slipway-<runtime>:<tag>`, the tag the package version unless `SLIPWAY_IMAGE_TAG`
says otherwise, `slipway.runtimes`) and `pipelineInfo.displayName` (`ingest (slipway 0.1.0)`, the
compiler's `pipeline_display_name`). The image is what a pipeline built from the YAML runs, so it survives
loading; the display name is what the Kubeflow UI shows for the uploaded YAML, and kfp's loader drops it.
Not the component's description: kfp reads that back from the docstring in the embedded source, and
rewrites it from there. Not a container `env` entry: kfp 2.17 writes it, but a pipeline using the loaded
YAML then fails to compile (`'list' object has no attribute 'items'`).
"""

import logging
import re
from pathlib import Path

import yaml
from kfp import compiler

import slipway.components
from slipway import __version__
from slipway.atomic import atomic_output
from slipway.pipelines.catalog import PIPELINES, get_pipeline

log = logging.getLogger(__name__)

COMPONENTS_DIR = "components"


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


def component_display_name(name: str) -> str:
    """The display name a component YAML carries: its name and the Slipway version it was compiled from."""
    return f"{name} (slipway {__version__})"


def compile_components(output_dir: Path) -> list[Path]:
    """Writes `<output_dir>/components/<name>.yaml` for every component of `slipway.components.COMPONENTS`,
    each atomically; each is a standalone component YAML for `kfp.components.load_component_from_file`.

    It also removes the YAMLs of components that no longer exist, so that `dist/components/` never
    offers a component of an older release beside the current ones: only YAMLs that Slipway compiled (their
    display name says so), never another file that happens to be there.
    """
    folder = output_dir / COMPONENTS_DIR
    written = []
    for name in slipway.components.COMPONENTS:
        path = folder / f"{name}.yaml"
        with atomic_output(path) as temp:
            compiler.Compiler().compile(getattr(slipway.components, name), package_path=str(temp),
                                        pipeline_display_name=component_display_name(name))
        log.info("compiled component %s -> %s", name, path)
        written.append(path)
    for stale in sorted(set(folder.glob("*.yaml")) - set(written)):
        if not _compiled_by_slipway(stale):
            continue
        stale.unlink()
        log.info("removed %s: no component %r any more", stale, stale.stem)
    return written


def _compiled_by_slipway(path: Path) -> bool:
    """Whether `path` is a component YAML that `compile_components` wrote (of any release): its display name is
    `component_display_name`'s."""
    try:
        info = yaml.safe_load(path.read_text())["pipelineInfo"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False
    return re.fullmatch(r"\w+ \(slipway [^)]+\)", str(info.get("displayName", ""))) is not None

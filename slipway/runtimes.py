"""The runtime images and local environments (DESIGN.md §3): the one place that names them.

Each runtime is one pinned lock (`requirements/<runtime>.txt`) installed both into a local
environment by `make` (`.venv/<runtime>`) and into an image by `images/<runtime>.Dockerfile`.
Components name their runtime's image as `base_image`; kfp.local ignores it (every task runs in
the local interpreter, which crosses into another runtime through `slipway.runtime_call`),
Kubeflow pulls it. The tag is the package version, so a compiled pipeline always references the
images built from the same commit's locks.
"""

import os
from pathlib import Path

from slipway import __version__

IMAGE_REGISTRY = "ghcr.io/slipway-ml"
# Each image sets this to its runtime's name, so that code running inside it knows which
# runtime it is in (and calls that runtime's library code in-process).
RUNTIME_ENV = "SLIPWAY_RUNTIME"
CORE = "core"
TFDV = "tfdv"
DRIFT = "drift"
# The checkout this package is installed from (editable, by `make`): where `.venv/<runtime>` lives.
PROJECT_DIR = Path(__file__).resolve().parent.parent


def image(runtime: str) -> str:
    """The image reference for a runtime, e.g. `ghcr.io/slipway-ml/slipway-core:0.1.0`."""
    return f"{IMAGE_REGISTRY}/slipway-{runtime}:{__version__}"


CORE_IMAGE = image(CORE)
TFDV_IMAGE = image(TFDV)
DRIFT_IMAGE = image(DRIFT)


def current() -> str:
    """The runtime this interpreter is: the image's `SLIPWAY_RUNTIME`, else `core` (the local default)."""
    return os.environ.get(RUNTIME_ENV, CORE)


def local_python(runtime: str) -> Path:
    """The interpreter of a runtime's local environment: `SLIPWAY_<RUNTIME>_PYTHON`, else `.venv/<runtime>`."""
    override = os.environ.get(f"SLIPWAY_{runtime.upper()}_PYTHON")
    return Path(override) if override else PROJECT_DIR / ".venv" / runtime / "bin" / "python"

"""The runtime images and local environments (DESIGN.md §3): the one place that names them.

Each runtime is one pinned lock installed both into a local environment by `make`
(`.venv/<runtime>`) and into an image by `images/<runtime>.Dockerfile`. Components name their
runtime's image as `base_image`; kfp.local ignores it (every task runs in the local interpreter,
which crosses into another runtime through `slipway.runtime_call`), Kubeflow pulls it.

| runtime | lock | image holds |
|---|---|---|
| `core` | core.txt | every step but validation and drift, the CLI |
| `tfdv` | tfdv.txt | the validation steps (TFDV) |
| `drift` | drift.txt | the drift step (alibi-detect) |
| `serving` | core.txt | the KServe model server, the Feast transformer and the drift monitor, as a non-root server |
| `train-gpu` | core.txt on a CUDA torch | distributed training workers on GPU nodes |

Image references are `<registry>/slipway-<runtime>:<tag>`. The registry and tag default to the
release (`ghcr.io/slipway-ml`, the package version) and are read once, at import, from
`SLIPWAY_IMAGE_REGISTRY` and `SLIPWAY_IMAGE_TAG`: `make images` builds with the same two values and
bakes them into every image, and `make compile` passes them on, so a pipeline compiled for a registry
references the images built for it, and a step that launches more pods (a TrainJob, Katib trials, an
InferenceService) names images of the same build.
"""

import os
from pathlib import Path

from slipway import __version__

DEFAULT_IMAGE_REGISTRY = "ghcr.io/slipway-ml"
IMAGE_REGISTRY_ENV = "SLIPWAY_IMAGE_REGISTRY"
IMAGE_TAG_ENV = "SLIPWAY_IMAGE_TAG"
IMAGE_REGISTRY = os.environ.get(IMAGE_REGISTRY_ENV) or DEFAULT_IMAGE_REGISTRY
IMAGE_TAG = os.environ.get(IMAGE_TAG_ENV) or __version__
# Each image sets this to its runtime's name, so that code running inside it knows which
# runtime it is in (and calls that runtime's library code in-process).
RUNTIME_ENV = "SLIPWAY_RUNTIME"
CORE = "core"
TFDV = "tfdv"
DRIFT = "drift"
SERVING = "serving"
TRAIN_GPU = "train-gpu"
RUNTIMES = (CORE, TFDV, DRIFT, SERVING, TRAIN_GPU)
# The checkout this package is installed from (editable, by `make`): where `.venv/<runtime>` lives.
PROJECT_DIR = Path(__file__).resolve().parent.parent


def image(runtime: str) -> str:
    """The image reference for a runtime, e.g. `ghcr.io/slipway-ml/slipway-core:0.1.0`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    return f"{IMAGE_REGISTRY}/slipway-{runtime}:{IMAGE_TAG}"


CORE_IMAGE = image(CORE)
TFDV_IMAGE = image(TFDV)
DRIFT_IMAGE = image(DRIFT)
SERVING_IMAGE = image(SERVING)
TRAIN_GPU_IMAGE = image(TRAIN_GPU)


def training_image(gpus: int) -> str:
    """The image of a distributed training job's workers: CUDA torch when they ask for GPUs, else core's CPU torch."""
    return TRAIN_GPU_IMAGE if gpus > 0 else CORE_IMAGE


def current() -> str:
    """The runtime this interpreter is: the image's `SLIPWAY_RUNTIME`, else `core` (the local default)."""
    return os.environ.get(RUNTIME_ENV, CORE)


def local_python(runtime: str) -> Path:
    """The interpreter of a runtime's local environment: `SLIPWAY_<RUNTIME>_PYTHON`, else `.venv/<runtime>`."""
    override = os.environ.get(f"SLIPWAY_{runtime.upper()}_PYTHON")
    return Path(override) if override else PROJECT_DIR / ".venv" / runtime / "bin" / "python"

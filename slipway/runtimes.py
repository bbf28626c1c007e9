"""The runtime images (DESIGN.md §3): the one place that names them.

Each runtime is one pinned lock (`requirements/<runtime>.txt`) installed both into a local
environment by `make` and into an image by `images/<runtime>.Dockerfile`. Components name their
runtime's image as `base_image`; kfp.local ignores it (every task runs in the local interpreter),
Kubeflow pulls it. The tag is the package version, so a compiled pipeline always references the
images built from the same commit's locks.
"""

from slipway import __version__

IMAGE_REGISTRY = "ghcr.io/slipway-ml"


def image(runtime: str) -> str:
    """The image reference for a runtime, e.g. `ghcr.io/slipway-ml/slipway-core:0.1.0`."""
    return f"{IMAGE_REGISTRY}/slipway-{runtime}:{__version__}"


CORE_IMAGE = image("core")

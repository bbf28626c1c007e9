# The `drift` runtime image (DESIGN.md §3): alibi-detect 0.11.4 (the last Apache-2.0 release) for the
# drift step's statistical tests, slipway.runtimes.DRIFT_IMAGE. alibi-detect cannot share the core image,
# so the drift step runs here, where SLIPWAY_RUNTIME=drift makes slipway.runtime_call call
# components/drift_detectors.py in-process. Installs exactly requirements/drift.txt, the lock
# `make drift-env` installs locally, then Slipway without dependencies.
# Built by `make images` (IMAGE_REGISTRY, IMAGE_TAG), from the repository root.
FROM python:3.11.7-slim-bookworm

# The registry and tag this image is built as: a step that names more images finds the same build.
ARG IMAGE_REGISTRY=ghcr.io/slipway-ml
ARG IMAGE_TAG=0.1.0
ENV SLIPWAY_IMAGE_REGISTRY=${IMAGE_REGISTRY} SLIPWAY_IMAGE_TAG=${IMAGE_TAG}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The lock pins torch==2.13.0+cpu (MMD's backend), served by PyTorch's CPU index.
COPY requirements/drift.txt /tmp/requirements/drift.txt
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements/drift.txt \
    && pip check && rm -rf /tmp/requirements

# The sources are built from /tmp/slipway-src and removed: a `slipway/` folder in the working directory
# would shadow the installed package (which maps components/ to slipway.components) for `python -m`,
# as KFP runs each task, and for `python -c`.
COPY pyproject.toml setup.cfg README.md /tmp/slipway-src/
COPY slipway /tmp/slipway-src/slipway
COPY components /tmp/slipway-src/components
COPY pipelines /tmp/slipway-src/pipelines
COPY serving /tmp/slipway-src/serving
WORKDIR /opt/slipway
RUN pip install --no-deps /tmp/slipway-src && rm -rf /tmp/slipway-src

# This image is the `drift` runtime: runtime_call.call("drift", ...) runs in-process here.
ENV SLIPWAY_RUNTIME=drift
RUN python -c "import alibi_detect.cd, slipway.components.drift_detectors, kfp"

# No entry point: KFP supplies each task's command.

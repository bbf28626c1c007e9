# The `core` runtime image (DESIGN.md §3): every component but validation and drift, and the CLI.
# Installs exactly requirements/core.txt, the lock `make` installs locally.
# Built by `make images` (IMAGE_REGISTRY, IMAGE_TAG), from the repository root.
FROM python:3.11.7-slim-bookworm

# The registry and tag this image is built as: a step that names more images finds the same build.
ARG IMAGE_REGISTRY=ghcr.io/slipway-ml
ARG IMAGE_TAG=0.1.0
ENV SLIPWAY_IMAGE_REGISTRY=${IMAGE_REGISTRY} SLIPWAY_IMAGE_TAG=${IMAGE_TAG}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
WORKDIR /opt/slipway

# The lock pins torch==2.13.0+cpu, served by PyTorch's CPU index (GPU workers use train-gpu).
COPY requirements/core.txt requirements/core.txt
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/core.txt

# The sources are built from /tmp/slipway-src and removed: a `slipway/` folder in the working directory
# would shadow the installed package (which maps components/ to slipway.components) for `python -m`,
# as KFP runs each task, and for `python -c`.
COPY pyproject.toml setup.cfg README.md /tmp/slipway-src/
COPY slipway /tmp/slipway-src/slipway
COPY components /tmp/slipway-src/components
COPY pipelines /tmp/slipway-src/pipelines
COPY serving /tmp/slipway-src/serving
RUN pip install --no-deps /tmp/slipway-src && rm -rf /tmp/slipway-src \
    && python -c "import slipway.components.ingestion, slipway.pipelines.cli"

# KFP supplies each task's command; a bare `docker run` gets the CLI.
ENTRYPOINT ["slipway"]

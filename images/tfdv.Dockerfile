# The `tfdv` runtime image (DESIGN.md §3): the base_image of the data validation steps (statistics,
# schema, validate), slipway.runtimes.TFDV_IMAGE. TFDV cannot share the core image, so these steps run
# here, where SLIPWAY_RUNTIME=tfdv makes slipway.runtime_call call components/data_validation.py
# in-process. Installs exactly requirements/tfdv.txt, the lock `make tfdv-env` installs locally, then
# Slipway without dependencies and the Facets Overview bundle. Built by `make images` (IMAGE_REGISTRY,
# IMAGE_TAG), from the repository root, for linux/amd64 (TFDV 1.16.1 publishes no aarch64 wheels).
FROM python:3.11.7-slim-bookworm

# The registry and tag this image is built as: a step that names more images finds the same build.
ARG IMAGE_REGISTRY=ghcr.io/slipway-ml
ARG IMAGE_TAG=0.1.0
ENV SLIPWAY_IMAGE_REGISTRY=${IMAGE_REGISTRY} SLIPWAY_IMAGE_TAG=${IMAGE_TAG}

# TensorFlow's C++ start-up chatter and the Google libraries' FutureWarnings, as
# slipway.runtime_call.CHILD_ENV_DEFAULTS keeps them out of the local child's output.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore::FutureWarning

# Two pins of the lock exist only as source distributions: pyfarmhash 0.3.2 (C++) and crcmod 1.7 (C).
# The compiler is there for them alone and leaves in the same layer (libstdc++6 stays: apt needs it).
COPY requirements/tfdv.txt /tmp/requirements/tfdv.txt
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && pip install -r /tmp/requirements/tfdv.txt \
    && pip check \
    && apt-get purge -y --auto-remove g++ \
    && rm -rf /var/lib/apt/lists/* /tmp/requirements

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

# The Facets Overview bundle (from the witwidget wheel on PyPI, sha256-verified) into
# /usr/local/share/slipway/, so that the statistics page inlines it and opens with no network.
RUN python -m slipway.components.facets

# This image is the `tfdv` runtime: runtime_call.call("tfdv", ...) runs in-process here.
ENV SLIPWAY_RUNTIME=tfdv
RUN python -c "import tensorflow_data_validation, slipway.components.data_validation, kfp"

# No entry point: KFP supplies each task's command (the `slipway` CLI needs the core image).

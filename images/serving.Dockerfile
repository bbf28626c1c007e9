# The `serving` runtime image (DESIGN.md §3), slipway.runtimes.SERVING_IMAGE: what an InferenceService runs
# (the KServe model server `slipway serve`, the Feast transformer `slipway transform`) and the drift monitor
# (`slipway monitor`). Installs exactly requirements/core.txt, the lock `make` installs locally, and runs
# as a non-root user: a server reachable from the network holds no more rights than it needs.
# Built by `make images` (IMAGE_REGISTRY, IMAGE_TAG), from the repository root.
FROM python:3.11.7-slim-bookworm

# The registry and tag this image is built as: a step that names more images finds the same build.
ARG IMAGE_REGISTRY=ghcr.io/slipway-ml
ARG IMAGE_TAG=0.1.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
    SLIPWAY_IMAGE_REGISTRY=${IMAGE_REGISTRY} SLIPWAY_IMAGE_TAG=${IMAGE_TAG}

# The lock pins torch==2.13.0+cpu, served by PyTorch's CPU index: scoring a tabular MLP needs no GPU.
COPY requirements/core.txt /tmp/requirements/core.txt
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements/core.txt \
    && rm -rf /tmp/requirements

# The sources are built from /tmp/slipway-src and removed: a `slipway/` folder in the working directory
# would shadow the installed package (which maps components/ to slipway.components).
COPY pyproject.toml setup.cfg README.md /tmp/slipway-src/
COPY slipway /tmp/slipway-src/slipway
COPY components /tmp/slipway-src/components
COPY pipelines /tmp/slipway-src/pipelines
COPY serving /tmp/slipway-src/serving
RUN pip install --no-deps /tmp/slipway-src && rm -rf /tmp/slipway-src \
    && python -c "import slipway.serving.server, slipway.serving.transformer, slipway.serving.drift_service"

# KServe's storage initializer puts the model in /mnt/models; the server only reads it.
RUN useradd --uid 1000 --create-home slipway
USER 1000
WORKDIR /home/slipway
# HTTP (V1/V2 REST, /metrics), gRPC (V2), and the drift monitor's CloudEvents endpoint.
EXPOSE 8080 8081 8095
ENTRYPOINT ["slipway"]
CMD ["serve", "--help"]

# The `train-gpu` runtime image (DESIGN.md §3), slipway.runtimes.TRAIN_GPU_IMAGE: the nodes of a distributed
# training job (TrainJob / PyTorchJob) that asks for GPUs; without GPUs the job runs on the core image.
# The same lock as core (requirements/core.txt), with torch from PyTorch's CUDA index in place of its CPU
# build: the CUDA libraries come as wheels with it, and the node's driver does the rest, so the base is the
# same slim Python as every other runtime. Built by `make images` (IMAGE_REGISTRY, IMAGE_TAG), from the
# repository root, for linux/amd64.
FROM python:3.11.7-slim-bookworm

ARG IMAGE_REGISTRY=ghcr.io/slipway-ml
ARG IMAGE_TAG=0.1.0
# The CUDA build of the locked torch version (cu130: CUDA 13.0, drivers >= 580).
ARG TORCH_CUDA=cu130
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
    SLIPWAY_IMAGE_REGISTRY=${IMAGE_REGISTRY} SLIPWAY_IMAGE_TAG=${IMAGE_TAG} \
    NCCL_DEBUG=WARN

# torch first, the locked version from the CUDA index; then every other pin of the lock, which it satisfies.
COPY requirements/core.txt /tmp/requirements/core.txt
RUN torch="$(sed -n 's/^torch==\([^+]*\).*/\1/p' /tmp/requirements/core.txt)" \
    && pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==${torch}" \
    && grep -v '^torch==' /tmp/requirements/core.txt > /tmp/requirements/core-without-torch.txt \
    && pip install -r /tmp/requirements/core-without-torch.txt \
    && pip check \
    && rm -rf /tmp/requirements

# The sources are built from /tmp/slipway-src and removed: a `slipway/` folder in the working directory
# would shadow the installed package (which maps components/ to slipway.components) for `python -m`.
COPY pyproject.toml setup.cfg README.md /tmp/slipway-src/
COPY slipway /tmp/slipway-src/slipway
COPY components /tmp/slipway-src/components
COPY pipelines /tmp/slipway-src/pipelines
COPY serving /tmp/slipway-src/serving
WORKDIR /opt/slipway
RUN pip install --no-deps /tmp/slipway-src && rm -rf /tmp/slipway-src \
    && python -c "import torch, slipway.components.trainer; assert torch.version.cuda, 'torch is not a CUDA build'"

# No entry point: the job runs `torchrun -m slipway.components.trainer ...`.

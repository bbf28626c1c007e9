"""Where a served model comes from: a local folder, object storage, or the MLflow registry.

The model server takes one `--model` URI and turns it into a local folder holding
`model.safetensors` + `model.json` (components/model_artifact.py):

- a local path (or `file://`): used in place; on a cluster this is `/mnt/models`, where KServe's
  storage initializer has already copied the InferenceService's `storageUri`;
- `s3://bucket/prefix`, `gs://bucket/prefix`: the two files are copied under `cache_dir`;
- `models:/NAME/VERSION` or `models:/NAME@ALIAS`: resolved in the MLflow registry at the tracking
  URI, then the version's model folder is downloaded under `cache_dir`.

The result records the version it resolved to, so responses and logs say which model answered
even when the request named an alias that has moved since.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from slipway import storage
from slipway.components.model_artifact import METADATA_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    uri: str  # what was asked for
    path: Path  # the local folder holding the artifact
    version: str  # the registry version, or "" when the model did not come from the registry
    registered_name: str = ""  # the registered model's name, or "" when it did not come from the registry


def fetch_model(uri: str, cache_dir: Path, tracking_uri: str = "") -> ModelSource:
    """The local folder for `uri`, downloading it under `cache_dir` when it is remote."""
    if uri.startswith(REGISTRY_SCHEME):
        from slipway.components.registry import ModelRegistry
        from slipway.components.tracking import DEFAULT_PIPELINE_ROOT, TrackingConfig

        registry = ModelRegistry.connect(TrackingConfig.resolve(tracking_uri, DEFAULT_PIPELINE_ROOT).tracking_uri)
        version = registry.resolve(uri)
        target = cache_dir / f"{version.name}-v{version.version}"
        log.info("%s is %s; downloading %s", uri, version.uri, version.source)
        return ModelSource(uri, registry.download(version, target), version.version, version.name)
    scheme = storage.scheme_of(uri)
    if scheme == "file":
        return ModelSource(uri, Path(uri.removeprefix("file://")), "")
    target = cache_dir / uri.split("://", 1)[1].strip("/").replace("/", "_")
    for name in (WEIGHTS_FILE, METADATA_FILE):
        storage.download(f"{uri.rstrip('/')}/{name}", target / name)
    log.info("downloaded %s to %s", uri, target)
    return ModelSource(uri, target, "")

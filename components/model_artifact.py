"""The model artifact: `model.safetensors` (weights) + `model.json` (architecture, preprocessing, lineage).

DESIGN.md §6: never a pickle. A `Model` artifact is a directory holding both files, written
together atomically; `load_model` rebuilds the module by architecture name and loads only
tensors, so loading an artifact cannot run code from it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slipway.atomic import atomic_outputs
from slipway.components import models
from slipway.components.model_files import METADATA_FILE, WEIGHTS_FILE
from slipway.components.preprocessing import Preprocessing

FORMAT_VERSION = 1


class ModelArtifactError(ValueError):
    """The directory does not hold a loadable Slipway model."""


@dataclasses.dataclass
class LoadedModel:
    module: nn.Module
    preprocessing: Preprocessing
    metadata: dict[str, Any]

    @torch.inference_mode()
    def predict_proba(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Probability of the positive label for each row of `columns` (raw typed values, by feature name)."""
        numeric, categorical = self.preprocessing.transform(columns)
        return torch.sigmoid(self.module(numeric, categorical)).numpy().astype("float64")


def save_model(
    directory: Path,
    module: nn.Module,
    architecture: str,
    arguments: dict[str, Any],
    preprocessing: Preprocessing,
    lineage: dict[str, Any],
) -> None:
    metadata = {
        "format_version": FORMAT_VERSION,
        "architecture": {"name": architecture, "arguments": arguments},
        "preprocessing": preprocessing.to_dict(),
        "lineage": lineage,
    }
    state = {name: tensor.detach().contiguous() for name, tensor in module.state_dict().items()}
    with atomic_outputs([directory / WEIGHTS_FILE, directory / METADATA_FILE]) as (weights, meta):
        save_file(state, str(weights))
        meta.write_text(json.dumps(metadata, indent=2, sort_keys=True))


def load_model(directory: Path) -> LoadedModel:
    weights, meta = directory / WEIGHTS_FILE, directory / METADATA_FILE
    for required in (weights, meta):
        if not required.is_file():
            raise ModelArtifactError(f"{directory}: no {required.name}; not a Slipway model artifact")
    metadata = json.loads(meta.read_text())
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelArtifactError(
            f"{meta}: format_version {metadata.get('format_version')!r}, this Slipway reads {FORMAT_VERSION}"
        )
    architecture = metadata["architecture"]
    module = models.build(architecture["name"], architecture["arguments"])
    module.load_state_dict(load_file(str(weights)))
    module.eval()
    return LoadedModel(module, Preprocessing.from_dict(metadata["preprocessing"]), metadata)

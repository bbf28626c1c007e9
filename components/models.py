"""Model architectures, by name, as stored in a model artifact's `model.json`.

The artifact records the architecture's name and constructor arguments, never code: loading
rebuilds the module from this registry and fills it from safetensors, so a serving process
never executes anything that came with an artifact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LogisticRegression(nn.Module):
    """A linear model over numeric inputs plus one learned weight per category value.

    A 1-wide embedding per categorical feature is exactly one-hot encoding followed by a
    linear layer, without materialising the one-hot matrix.
    """

    def __init__(self, numeric_inputs: int, vocabulary_sizes: list[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(numeric_inputs, 1)
        self.category_weights = nn.ModuleList(nn.Embedding(size, 1) for size in vocabulary_sizes)
        for embedding in self.category_weights:
            nn.init.zeros_(embedding.weight)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Returns one logit per row."""
        logit = self.linear(numeric).squeeze(-1)
        for i, embedding in enumerate(self.category_weights):
            logit = logit + embedding(categorical[:, i]).squeeze(-1)
        return logit


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "logistic_regression": LogisticRegression,
}


def build(name: str, arguments: dict[str, Any]) -> nn.Module:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**arguments)

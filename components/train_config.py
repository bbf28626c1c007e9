"""The training hyperparameters: one definition for the trainer, its flags, the component and the CLI.

Kept free of torch so that compiling pipelines and `slipway --help` stay fast; the field
metadata carries each option's help text, which the trainer's argparse flags and the `slipway
train` options both show.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slipway.components.preprocessing import Preprocessing

# Local training runs this many torchrun processes unless told otherwise: DDP even on a laptop.
DEFAULT_PROCESSES = 2

# The architectures `slipway.components.models.ARCHITECTURES` builds (a test keeps the two in step).
ARCHITECTURE_NAMES = ("mlp", "logistic_regression")

# Each numeric feature's embedding width in the MLPs the trainer builds (`models.NumericEmbedding`): part of the
# "mlp" architecture rather than a hyperparameter: 16 beat 8, 4 and none in mean and worst eval AUC over seeds
# (bench/model_quality.py). The model artifact records it, so a saved model never depends on this value.
MLP_NUMERIC_EMBEDDING_DIM = 16


def max_local_processes() -> int:
    """The most training processes this machine runs: one per CPU core (more only time-slice the same cores and
    multiply the gradient all-reduces), never fewer than the default."""
    return max(os.cpu_count() or 1, DEFAULT_PROCESSES)


def checked_local_processes(processes: int) -> int:
    """`processes` if this machine can run that many local DDP processes, else a ValueError naming the range."""
    if not 1 <= processes <= max_local_processes():
        raise ValueError(f"processes must be between 1 and {max_local_processes()} (this machine's CPU cores), "
                         f"got {processes}")
    return processes


def _option(default: Any, help: str) -> Any:
    """A TrainConfig field whose help text the trainer's and the CLI's flags both show."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters: everything that changes the trained model, and nothing else."""

    architecture: str = _option("mlp", f"model architecture: one of {list(ARCHITECTURE_NAMES)}")
    hidden_units: tuple[int, ...] = _option((64, 32), "widths of the MLP's hidden layers")
    dropout: float = _option(0.1, "dropout after each hidden layer")
    epochs: int = _option(20, "most epochs to train (early stopping may end sooner)")
    learning_rate: float = _option(6e-3, "AdamW learning rate")
    batch_size: int = _option(1024, "global batch size, split across the processes")
    weight_decay: float = _option(1e-4, "AdamW weight decay")
    patience: int = _option(4, "epochs without eval AUC improvement before stopping early")
    seed: int = _option(0, "seed for initial weights, shuffling and dropout")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be at least 0, got {self.weight_decay}")
        if not 0 <= self.seed < 2**32:  # the per-epoch dropout seed (seed * 1_000_003 + ...) stays in torch's range
            raise ValueError(f"seed must be between 0 and {2**32 - 1}, got {self.seed}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.architecture not in ARCHITECTURE_NAMES:
            raise ValueError(f"architecture {self.architecture!r} is not one of {list(ARCHITECTURE_NAMES)}")
        if any(units < 1 for units in self.hidden_units):
            raise ValueError(f"hidden_units must all be at least 1, got {list(self.hidden_units)}")

    def model_arguments(self, preprocessing: Preprocessing) -> dict[str, Any]:
        arguments: dict[str, Any] = {"numeric_inputs": preprocessing.numeric_inputs,
                                     "vocabulary_sizes": preprocessing.vocabulary_sizes}
        if self.architecture == "mlp":
            arguments |= {"hidden_units": list(self.hidden_units), "dropout": self.dropout,
                          "numeric_embedding_dim": MLP_NUMERIC_EMBEDDING_DIM}
        return arguments

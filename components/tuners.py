"""Which tuners the `tune` step knows, and what it hands on, without importing any of them.

The `tune` step with `tuner=off` (the default of a quick run) only hands the given hyperparameters on; it
imports this module and nothing of `tuning` (Optuna, MLflow, torch through the trainer, Kubernetes for Katib),
which would cost it seconds of start-up for no work. `slipway run` checks `--set tuner=` with the same rule.
"""

from __future__ import annotations

import dataclasses

from slipway.components.train_config import TrainConfig

TUNERS = ("off", "optuna", "katib")


@dataclasses.dataclass(frozen=True)
class TuningOutcome:
    """What the pipeline's `tune` step hands on: the config to train with, and how it was chosen."""

    config: TrainConfig
    markdown: str
    metrics: dict[str, float]


def checked_tuner(tuner: str) -> str:
    """`tuner` if it is one of TUNERS, else a ValueError naming them: the tune step's rule, which `slipway run`
    applies to `--set tuner=` before anything runs."""
    if tuner not in TUNERS:
        raise ValueError(f"tuner {tuner!r}: expected one of {list(TUNERS)}")
    return tuner


def untuned(base: TrainConfig) -> TuningOutcome:
    """The outcome of `tuner=off`: `base` as it is."""
    return TuningOutcome(config=base, metrics={}, markdown="Tuning is off (`tuner=off`): `train` uses the "
                         "pipeline's hyperparameters as given.\n")

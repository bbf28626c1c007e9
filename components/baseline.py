"""Train: the baseline model, a logistic regression in torch, in one process.

The baseline every later model must beat. Preprocessing is fitted on the train split only and
saved inside the model artifact, so evaluation and serving apply exactly the same transform.
Training is deterministic for a given seed (seeded shuffling, single thread). One progress line
per epoch: train loss, eval AUC and rows/s.

`train_baseline` is the library; its KFP component is `slipway.components.catalog.train`. The distributed
trainer (DDP under torchrun, DESIGN.md §4) replaces this step's body, not its contract:
Datasets in, a `Model` artifact (safetensors + JSON) and `Metrics` out.
"""

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from slipway.components.model_artifact import save_model
from slipway.components.models import LogisticRegression
from slipway.components.preprocessing import Preprocessing
from slipway.problem import Problem

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    learning_rate: float = 0.05
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    epochs: int
    train_loss: float
    eval_auc: float
    train_rows: int
    rows_per_second: float


def train_baseline(
    train_path: Path,
    eval_path: Path,
    problem: Problem,
    config: TrainConfig,
    model_dir: Path,
    lineage: dict | None = None,
) -> TrainResult:
    """Fits preprocessing and a logistic regression on train, reports eval AUC, saves the model."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible, and fast enough for a linear model
    train, evaluation = pd.read_parquet(train_path), pd.read_parquet(eval_path)
    label = problem.label.name
    preprocessing = Preprocessing.fit(train, problem)
    x_num, x_cat = preprocessing.transform(train)
    y = torch.tensor(train[label].to_numpy(), dtype=torch.float32)
    eval_num, eval_cat = preprocessing.transform(evaluation)
    eval_y = evaluation[label].to_numpy()

    arguments = {"numeric_inputs": preprocessing.numeric_inputs, "vocabulary_sizes": preprocessing.vocabulary_sizes}
    model = LogisticRegression(**arguments)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)

    log.info("training logistic regression on %d rows, %d numeric inputs, vocabularies %s",
             len(y), preprocessing.numeric_inputs, preprocessing.vocabulary_sizes)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        total = 0.0
        for batch in torch.randperm(len(y), generator=generator).split(config.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x_num[batch], x_cat[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        train_loss = total / len(y)
        eval_auc = _auc(model, eval_num, eval_cat, eval_y)
        log.info("epoch %d/%d  loss %.4f  eval_auc %.4f  %.0f rows/s", epoch, config.epochs, train_loss,
                 eval_auc, len(y) / (time.perf_counter() - epoch_started))
    elapsed = time.perf_counter() - started

    save_model(model_dir, model, "logistic_regression", arguments, preprocessing,
               lineage={**(lineage or {}), "problem": problem.name, "train_config": dataclasses.asdict(config)})
    log.info("saved model to %s", model_dir)
    return TrainResult(
        epochs=config.epochs,
        train_loss=train_loss,
        eval_auc=eval_auc,
        train_rows=len(y),
        rows_per_second=len(y) * config.epochs / elapsed,
    )


@torch.inference_mode()
def _auc(model: nn.Module, numeric: torch.Tensor, categorical: torch.Tensor, labels) -> float:
    model.eval()
    return float(roc_auc_score(labels, model(numeric, categorical).numpy()))

"""Feature preprocessing fitted on the train split only, saved with the model, applied identically in serving.

Numerics are standardised with the train split's mean and standard deviation; a missing value
becomes 0 (the mean) and sets a per-feature missing indicator, so "unknown" stays informative.
Categoricals map to integer ids through a vocabulary of values seen at least
`MIN_CATEGORY_COUNT` times in train: id 0 is "missing", id 1 "not in the vocabulary", then the
vocabulary, most frequent first. Integer-typed categoricals (community areas, hours) are keyed
by their decimal text, so the vocabulary is plain JSON.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from slipway.problem import Problem

MIN_CATEGORY_COUNT = 5
MISSING_ID = 0
UNKNOWN_ID = 1
RESERVED_IDS = 2


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    numeric: list[str]
    means: list[float]
    stds: list[float]
    categorical: list[str]
    vocabularies: list[list[str]]
    label: str

    @classmethod
    def fit(cls, train: pd.DataFrame, problem: Problem) -> Preprocessing:
        """Learns the transform from the train split (never from eval: that would leak)."""
        means, stds = [], []
        for column in problem.features.numeric:
            values = train[column].astype("float64")
            mean, std = values.mean(), values.std()
            means.append(0.0 if math.isnan(mean) else float(mean))
            stds.append(1.0 if math.isnan(std) or std == 0 else float(std))
        vocabularies = []
        for column in problem.features.categorical:
            counts = _as_category_text(train[column]).value_counts()
            kept = counts[counts >= MIN_CATEGORY_COUNT]
            vocabularies.append(sorted(kept.index, key=lambda v: (-kept[v], v)))
        return cls(
            numeric=list(problem.features.numeric),
            means=means,
            stds=stds,
            categorical=list(problem.features.categorical),
            vocabularies=vocabularies,
            label=problem.label.name,
        )

    @property
    def numeric_inputs(self) -> int:
        """Width of the numeric input: one standardised value and one missing indicator per feature."""
        return 2 * len(self.numeric)

    @property
    def vocabulary_sizes(self) -> list[int]:
        return [RESERVED_IDS + len(v) for v in self.vocabularies]

    def transform(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (numeric float32 [N, numeric_inputs], categorical int64 [N, len(categorical)])."""
        missing_columns = [c for c in self.numeric + self.categorical if c not in frame.columns]
        if missing_columns:
            raise KeyError(f"input is missing feature column(s) {missing_columns}")
        raw = frame[self.numeric].astype("float64").to_numpy(na_value=np.nan)
        is_missing = np.isnan(raw)
        scaled = np.where(is_missing, 0.0, (raw - np.array(self.means)) / np.array(self.stds))
        numeric = np.concatenate([scaled, is_missing.astype("float64")], axis=1)
        ids = np.empty((len(frame), len(self.categorical)), dtype=np.int64)
        for i, (column, vocabulary) in enumerate(zip(self.categorical, self.vocabularies, strict=True)):
            index = {value: RESERVED_IDS + j for j, value in enumerate(vocabulary)}
            text = _as_category_text(frame[column])
            known = text.map(index)  # NaN for both missing and unseen values
            ids[:, i] = known.where(text.notna(), MISSING_ID).fillna(UNKNOWN_ID).astype("int64").to_numpy()
        return torch.from_numpy(numeric.astype(np.float32)), torch.from_numpy(ids)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


def _as_category_text(values: pd.Series) -> pd.Series:
    """Category keys as text: integers as "32" (not "32.0"), strings unchanged, missing stays missing."""
    if pd.api.types.is_float_dtype(values):
        values = values.astype("Int64")
    return values.astype("string")

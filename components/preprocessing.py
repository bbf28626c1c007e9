"""Feature preprocessing fitted on the train split only, saved with the model, applied identically in serving.

The model's features are the problem's raw trip features and, when the problem has a
`feature_store` section, every Feast feature of its point-in-time training set
(`"{view}__{feature}"`, numeric): `model_features` is that one list, which training checks its
data against and the saved preprocessing records, so serving asks for exactly these.

Numerics are standardised with the train split's mean and standard deviation; a missing value
becomes 0 (the mean) and sets a per-feature missing indicator, so "unknown" stays informative.
Categoricals map to integer ids through a vocabulary of values seen at least
`MIN_CATEGORY_COUNT` times in train: id 0 is "missing", id 1 "not in the vocabulary", then the
vocabulary, most frequent first. Integer-typed categoricals (community areas, hours) are keyed
by their decimal text, so the vocabulary is plain JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from slipway.components.feature_store import joined_columns
from slipway.problem import Problem

MIN_CATEGORY_COUNT = 5
MISSING_ID = 0
UNKNOWN_ID = 1
RESERVED_IDS = 2


class FeatureInputError(ValueError):
    """The input's feature columns cannot be transformed: the message names the column and what was expected."""


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
        numeric, categorical = model_features(problem)
        means, stds = [], []
        for column in numeric:
            values = train[column].astype("float64")
            mean, std = values.mean(), values.std()
            means.append(0.0 if math.isnan(mean) else float(mean))
            stds.append(1.0 if math.isnan(std) or std == 0 else float(std))
        vocabularies = []
        for column in categorical:
            counts = _key_counts(train[column])
            kept = counts[counts >= MIN_CATEGORY_COUNT]
            vocabularies.append(sorted(kept.index, key=lambda v: (-kept[v], v)))
        return cls(
            numeric=numeric,
            means=means,
            stds=stds,
            categorical=categorical,
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

    def transform(self, columns: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (numeric float32 [N, numeric_inputs], categorical int64 [N, len(categorical)]).

        `columns` maps each feature name to its N values: a DataFrame in training and evaluation, a
        dict of lists in the model server. Both go through this one code path, so what training saw
        is exactly what serving computes; it works value by value in plain Python and numpy because
        pandas' per-call overhead (milliseconds) would dominate a one-row request. A typed column of a
        DataFrame has each category's key worked out once per distinct value instead (the same
        `category_key`, a million rows in a fraction of a second).
        """
        missing_columns = [c for c in self.numeric + self.categorical if c not in columns]
        if missing_columns:
            raise FeatureInputError(f"missing feature column(s) {missing_columns}")
        numeric_values = [_as_floats(column, columns[column]) for column in self.numeric]
        categorical_values = [v if _is_typed_series(v := columns[column]) else _values(v)
                              for column in self.categorical]
        rows = {len(values) for values in numeric_values + categorical_values}
        if len(rows) > 1:
            lengths = {c: len(v) for c, v in zip(self.numeric + self.categorical,
                                                   numeric_values + categorical_values, strict=True)}
            raise FeatureInputError(f"feature columns differ in length: {lengths}")
        raw = np.stack(numeric_values, axis=1) if numeric_values else np.empty((rows.pop(), 0))
        is_missing = np.isnan(raw)
        scaled = np.where(is_missing, 0.0, (raw - np.array(self.means)) / np.array(self.stds))
        numeric = np.concatenate([scaled, is_missing.astype("float64")], axis=1)
        ids = np.empty((len(raw), len(self.categorical)), dtype=np.int64)
        for i, (values, index) in enumerate(zip(categorical_values, self.vocabulary_ids, strict=True)):
            ids[:, i] = _category_ids(values, index)
        return torch.from_numpy(numeric.astype(np.float32)), torch.from_numpy(ids)

    @functools.cached_property
    def vocabulary_ids(self) -> list[dict[str, int]]:
        """Each categorical's vocabulary key -> embedding id (after the reserved missing and unknown ids)."""
        return [{value: RESERVED_IDS + j for j, value in enumerate(vocabulary)} for vocabulary in self.vocabularies]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


def model_features(problem: Problem) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns the model reads: the problem's features, then its Feast features."""
    return [*problem.features.numeric, *joined_columns(problem)], list(problem.features.categorical)


def category_key(value: Any) -> str | None:
    """A category's vocabulary key: integers as "32" (also when stored as 32.0), text unchanged, None if missing."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    return str(value)


def _category_ids(values: Any, index: dict[str, int]) -> np.ndarray | list[int]:
    """Each value's embedding id: MISSING_ID, its vocabulary id from `index`, or UNKNOWN_ID."""
    if _is_typed_series(values):
        codes, distinct = pd.factorize(values)  # missing values get code -1: the lookup's last entry
        lookup = np.array([_category_id(v, index) for v in distinct] + [MISSING_ID], dtype=np.int64)
        return lookup[codes]
    return [_category_id(v, index) for v in _values(values)]


def _category_id(value: Any, index: dict[str, int]) -> int:
    return MISSING_ID if (key := category_key(value)) is None else index.get(key, UNKNOWN_ID)


def _key_counts(values: pd.Series) -> pd.Series:
    """How many times each category key occurs among the values (missing ones not counted), indexed by key."""
    if _is_typed_series(values):
        codes, distinct = pd.factorize(values)
        counts = np.bincount(codes[codes >= 0], minlength=len(distinct))
        # Distinct values may share a key (32 and 32.0 in a float column are both "32"): add theirs up.
        return pd.Series(counts, index=pd.Index([category_key(v) for v in distinct], dtype="string")).groupby(
            level=0).sum()
    return pd.Series([category_key(v) for v in _values(values)], dtype="string").value_counts()


def _is_typed_series(values: Any) -> bool:
    """A Series of one type (integer, float, string...): its distinct values have distinct keys, so keys can be
    worked out once per distinct value. Python objects are not: 1 and True are one distinct value to pandas
    but two keys, "1" and "True"; those go value by value."""
    return isinstance(values, pd.Series) and values.dtype != object


def _values(values: Any) -> list[Any]:
    """A column's values as a Python list, whatever holds them (Series, ndarray, list, tuple)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _as_floats(column: str, values: Any) -> np.ndarray:
    """A numeric column as float64 with NaN for missing; a value that is not a number names its column."""
    try:
        if isinstance(values, pd.Series):
            return values.astype("float64").to_numpy(na_value=np.nan)
        return np.array([np.nan if v is None else v for v in values], dtype="float64")
    except (TypeError, ValueError) as error:
        raise FeatureInputError(f"feature {column!r}: expected numbers (or null), got {error}") from None

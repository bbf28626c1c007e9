"""The statistical drift tests, from alibi-detect: the one module that imports it (runs in the `drift` runtime).

alibi-detect cannot share the core environment (REFERENCE.md: every release conflicts with feast or
kserve), so `components/drift_detection.py` calls these functions through `slipway.runtime_call` in the
`drift` environment, paths in and plain results out. Another detector library could replace this
module without touching anything else: the contract is `drift_tests` (one call per comparison, so
that the runtime's start-up, about 5 s of importing alibi-detect and torch, is paid once).

Version: alibi-detect 0.11.4, the last release under the Apache License 2.0 (0.11.5 and later are
under the Business Source License 1.1); see requirements/drift.in.

- `univariate_tests`: per feature, alibi-detect's `TabularDrift` on that one column, which runs a
  two-sample Kolmogorov-Smirnov test for a numeric feature and a Chi-squared test of the category
  counts for a categorical one. Each feature is tested on its own non-missing values (missing values
  are not a distribution to compare, and a NaN would turn KS's p-value into NaN); the p-values come
  back uncorrected, `components/drift_detection.py` corrects them for the number of features.
- A model's scores (`scores`: the champion's probability for each row, one column) are tested like a
  numeric feature, with KS, but left out of the MMD test: a score is a function of the features, not
  one more of them, and MMD compares the features' joint distribution.
- `mmd_test`: a multivariate Maximum Mean Discrepancy test (`MMDDrift`, PyTorch backend, a
  permutation p-value) on a random sample of rows of both sides: numerics standardised by the
  reference, categoricals one-hot. It sees changes in how features move together that no
  per-feature test sees.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def drift_tests(reference_path: str, current_path: str, numeric: list[str], categorical: list[str], min_rows: int,
                mmd_sample_rows: int, scores: list[str] | None = None) -> dict[str, Any]:
    """Both kinds of test on two Parquet files, read once: {"features": {...}, "mmd": {...} or None, "seconds": {...}}.

    `scores` are numeric columns of a model's scores: in "features" (KS) beside the features, not in the MMD.
    `seconds` times each part (import, read, univariate, mmd) for the benchmark.
    """
    started = time.perf_counter()
    import alibi_detect.cd  # noqa: F401 - about 4 s (it imports torch and transformers): timed on its own

    seconds = {"import": time.perf_counter() - started}
    started = time.perf_counter()
    univariate = list(numeric) + list(scores or [])
    columns = univariate + list(categorical)
    reference, current = _read(reference_path, columns), _read(current_path, columns)
    seconds["read"] = time.perf_counter() - started
    started = time.perf_counter()
    features = univariate_tests(reference, current, univariate, categorical, min_rows)
    seconds["univariate"] = time.perf_counter() - started
    mmd = None
    mmd_numeric = [name for name in numeric if "p_value" in features[name]]
    mmd_categorical = [name for name in categorical if "p_value" in features[name]]
    if mmd_sample_rows and (mmd_numeric or mmd_categorical):
        started = time.perf_counter()
        mmd = mmd_test(reference, current, mmd_numeric, mmd_categorical, mmd_sample_rows)
        seconds["mmd"] = time.perf_counter() - started
    return {"features": features, "mmd": mmd, "seconds": seconds}


def univariate_tests(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                     min_rows: int = 1) -> dict[str, dict[str, Any]]:
    """KS (numeric) or Chi-squared (categorical) per feature: {feature: {test, statistic, p_value, rows...}}.

    A feature with fewer than `min_rows` values on a side is not tested: its entry says why (`insufficient`).
    """
    columns = list(numeric) + list(categorical)
    started = time.perf_counter()
    # One feature per thread: the sorting and counting inside the tests release the GIL.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(columns, pool.map(
            lambda name: _test(reference[name], current[name], name in categorical, min_rows), columns), strict=True))
    log.info("KS and Chi-squared tests of %d features (%d vs %d rows) in %.2f s", len(columns), len(reference),
             len(current), time.perf_counter() - started)
    return results


def _test(reference: pd.Series, current: pd.Series, categorical: bool, min_rows: int) -> dict[str, Any]:
    from alibi_detect.cd import TabularDrift

    ref, cur = reference.dropna(), current.dropna()
    entry: dict[str, Any] = {"test": "chi2" if categorical else "ks", "reference_rows": len(ref),
                             "current_rows": len(cur)}
    if min(len(ref), len(cur)) < max(min_rows, 1):
        side = "reference" if len(ref) < len(cur) else "current"
        return {**entry, "insufficient": f"{min(len(ref), len(cur))} values of {reference.name!r} in the {side} "
                                         f"data, fewer than {min_rows}"}
    if categorical:
        x_ref, x_cur, categories = _category_codes(ref, cur)
        detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature={0: categories})
    else:
        detector = TabularDrift(_column(ref), p_val=0.05, categories_per_feature={})
        x_cur = _column(cur)
    outcome = detector.predict(x_cur, drift_type="feature", return_p_val=True, return_distance=True)["data"]
    return {**entry, "statistic": float(outcome["distance"][0]), "p_value": float(outcome["p_val"][0])}


def mmd_test(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
             sample_rows: int, seed: int = 0, permutations: int = 100) -> dict[str, Any]:
    """MMD between samples of `sample_rows` complete rows of each side: {statistic, p_value, threshold, rows}."""
    from alibi_detect.cd import MMDDrift

    columns = list(numeric) + list(categorical)
    reference, current = reference[columns].dropna(), current[columns].dropna()
    if len(reference) < 2 or len(current) < 2:
        return {"insufficient": f"MMD needs complete rows on both sides: {len(reference)} reference, "
                                f"{len(current)} current"}
    rng = np.random.default_rng(seed)
    reference = reference.iloc[rng.permutation(len(reference))[:sample_rows]]
    current = current.iloc[rng.permutation(len(current))[:sample_rows]]
    x_ref, x_cur = _design_matrix(reference, current, numeric, categorical)
    started = time.perf_counter()
    detector = MMDDrift(x_ref, backend="pytorch", p_val=0.05, n_permutations=permutations, device="cpu")
    outcome = detector.predict(x_cur, return_p_val=True, return_distance=True)["data"]
    log.info("MMD on %d vs %d rows, %d permutations, in %.2f s", len(x_ref), len(x_cur), permutations,
             time.perf_counter() - started)
    return {"statistic": float(outcome["distance"]), "p_value": float(outcome["p_val"]),
            "threshold": float(outcome["distance_threshold"]), "reference_rows": len(x_ref),
            "current_rows": len(x_cur), "permutations": permutations}


def _read(path: str, columns: list[str]) -> pd.DataFrame:
    """The columns of a Parquet file, text columns as pandas categoricals (read dictionary-encoded: faster to code)."""
    schema = pq.read_schema(path)
    text = [c for c in columns if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(
        schema.field(c).type)]
    return pq.read_table(path, columns=columns, read_dictionary=text).to_pandas()


def _column(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=np.float64).reshape(-1, 1)


def _category_codes(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Integer codes over the categories of both sides (a category new in `current` is a category too)."""
    categories = pd.Index(reference.unique()).union(pd.Index(current.unique()))
    ref_codes = pd.Categorical(reference, categories=categories).codes.astype(np.float64).reshape(-1, 1)
    cur_codes = pd.Categorical(current, categories=categories).codes.astype(np.float64).reshape(-1, 1)
    return ref_codes, cur_codes, list(range(len(categories)))


def _design_matrix(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Numerics standardised by the reference's mean and spread; categoricals one-hot over both sides' values."""
    parts_ref, parts_cur = [], []
    if numeric:
        ref = reference[numeric].to_numpy(dtype=np.float64)
        cur = current[numeric].to_numpy(dtype=np.float64)
        mean, std = ref.mean(axis=0), ref.std(axis=0)
        std[std == 0] = 1.0
        parts_ref.append((ref - mean) / std)
        parts_cur.append((cur - mean) / std)
    for name in categorical:
        values = pd.Index(pd.concat([reference[name], current[name]]).unique())
        parts_ref.append(np.eye(len(values))[values.get_indexer(reference[name].to_numpy())])
        parts_cur.append(np.eye(len(values))[values.get_indexer(current[name].to_numpy())])
    return (np.hstack(parts_ref).astype(np.float32), np.hstack(parts_cur).astype(np.float32))

"""The statistical drift tests, from alibi-detect: the one module that imports it (runs in the `drift` runtime).

alibi-detect cannot share the core environment (REFERENCE.md: every release conflicts with feast or
kserve), so `components/drift_detection.py` calls these functions through `slipway.runtime_call` in the
`drift` environment, paths in and plain results out. Another detector library could replace this
module without touching anything else: the contract is `drift_tests` (one call per comparison, so
that the runtime's start-up is paid once).

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

Imports (`alibi_module`): `import alibi_detect.cd.tabular` would first run alibi_detect/__init__.py
and alibi_detect/cd/__init__.py, which import every detector and model alibi-detect has, torch and
transformers with them: about 4 of the 6.5 s the drift step took on 1M rows a side, for tests that
need scipy. The KS/Chi-squared tests import only `alibi_detect.cd.tabular` and what it imports; MMD
imports torch when it is asked for, and only then.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

# The module of alibi-detect's TabularDrift: KS for a numeric feature, Chi-squared for a categorical one.
TABULAR = "alibi_detect.cd.tabular"
# The deep-learning backends that alibi_detect.utils.frameworks probes for by importing them, whichever
# detector is asked for (torch alone is about 1 s of start-up); its probe is all the tabular tests need of it.
BACKENDS = ("tensorflow", "torch", "pykeops")
FRAMEWORKS = "alibi_detect.utils.frameworks"
MMD = "alibi_detect.cd.mmd"


def drift_tests(reference_path: str, current_path: str, numeric: list[str], categorical: list[str], min_rows: int,
                mmd_sample_rows: int, scores: list[str] | None = None) -> dict[str, Any]:
    """Both kinds of test on two Parquet files, read once: {"features": {...}, "mmd": {...} or None, "seconds": {...}}.

    `scores` are numeric columns of a model's scores: in "features" (KS) beside the features, not in the MMD.
    `seconds` times each part for the benchmark: import (alibi-detect's tabular tests), read (the wait for both
    files after that import, which their reading overlaps), univariate, and when MMD runs, mmd_import (torch) and
    mmd.
    """
    univariate = list(numeric) + list(scores or [])
    columns = univariate + list(categorical)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # pyarrow reads without holding the GIL, so the files are read while the tests' modules import.
        reading = [pool.submit(read_columns, path, columns) for path in (reference_path, current_path)]
        started = time.perf_counter()
        tabular = alibi_module(TABULAR)
        seconds = {"import": time.perf_counter() - started}
        started = time.perf_counter()
        reference, current = (future.result() for future in reading)
    seconds["read"] = time.perf_counter() - started
    started = time.perf_counter()
    features = univariate_tests(reference, current, univariate, categorical, min_rows, tabular)
    seconds["univariate"] = time.perf_counter() - started
    mmd = None
    mmd_numeric = [name for name in numeric if "p_value" in features[name]]
    mmd_categorical = [name for name in categorical if "p_value" in features[name]]
    if mmd_sample_rows and (mmd_numeric or mmd_categorical):
        started = time.perf_counter()
        importlib.import_module(MMD)  # torch, paid only here: timed on its own
        seconds["mmd_import"] = time.perf_counter() - started
        started = time.perf_counter()
        mmd = mmd_test(reference, current, mmd_numeric, mmd_categorical, mmd_sample_rows)
        seconds["mmd"] = time.perf_counter() - started
    return {"features": features, "mmd": mmd, "seconds": seconds}


def univariate_tests(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                     min_rows: int = 1, tabular: ModuleType | None = None) -> dict[str, dict[str, Any]]:
    """KS (numeric) or Chi-squared (categorical) per feature: {feature: {test, statistic, p_value, rows...}}.

    A feature with fewer than `min_rows` values on a side is not tested: its entry says why (`insufficient`).
    `tabular` is alibi-detect's module of TabularDrift, when the caller has imported it already.
    """
    tabular_drift = (tabular or alibi_module(TABULAR)).TabularDrift
    columns = list(numeric) + list(categorical)
    started = time.perf_counter()
    # One feature per thread: the sorting and counting inside the tests release the GIL.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(columns, pool.map(
            lambda name: _test(tabular_drift, reference[name], current[name], name in categorical, min_rows),
            columns), strict=True))
    log.info("KS and Chi-squared tests of %d features (%d vs %d rows) in %.2f s", len(columns), len(reference),
             len(current), time.perf_counter() - started)
    return results


def _test(tabular_drift: type, reference: pd.Series, current: pd.Series, categorical: bool,
          min_rows: int) -> dict[str, Any]:
    """One feature's test on its non-missing values, as a column of one: Chi-squared over the category codes of
    both sides, or KS over the values."""
    x_ref, x_cur, categories = _category_codes(reference, current) if categorical else (
        _present(reference), _present(current), [])
    entry: dict[str, Any] = {"test": "chi2" if categorical else "ks", "reference_rows": len(x_ref),
                             "current_rows": len(x_cur)}
    if min(len(x_ref), len(x_cur)) < max(min_rows, 1):
        side = "reference" if len(x_ref) < len(x_cur) else "current"
        return {**entry, "insufficient": f"{min(len(x_ref), len(x_cur))} values of {reference.name!r} in the {side} "
                                         f"data, fewer than {min_rows}"}
    detector = tabular_drift(x_ref, p_val=0.05, categories_per_feature={0: categories} if categorical else {})
    outcome = detector.predict(x_cur, drift_type="feature", return_p_val=True, return_distance=True)["data"]
    return {**entry, "statistic": float(outcome["distance"][0]), "p_value": float(outcome["p_val"][0])}


def mmd_test(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
             sample_rows: int, seed: int = 0, permutations: int = 100) -> dict[str, Any]:
    """MMD between samples of `sample_rows` complete rows of each side: {statistic, p_value, threshold, rows}."""
    from alibi_detect.cd.mmd import MMDDrift  # torch: imported here, when MMD is asked for

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


def alibi_module(name: str) -> ModuleType:
    """alibi-detect's module `name` (e.g. "alibi_detect.cd.tabular"), importing only what that module imports.

    Its packages (alibi_detect, alibi_detect.cd) are registered without running their __init__.py, which would
    import every detector and model; each runs in full the first time something asks its package for a name
    it does not hold yet, so `from alibi_detect.cd import MMDDrift` still works afterwards. The backends that
    alibi_detect.utils.frameworks probes for are hidden from that probe while the module is imported (unless
    already imported), and the probe's module is then forgotten: the next module that imports it (MMD's)
    probes again and finds torch; the modules imported here use its answers only in type annotations.
    """
    if name in sys.modules:
        return sys.modules[name]
    parts = name.split(".")
    for depth in range(1, len(parts)):
        _defer_package_init(".".join(parts[:depth]))
    with _backends_hidden():
        return importlib.import_module(name)


def _defer_package_init(name: str) -> None:
    """Registers the package `name` with its __init__.py not yet run; it runs when the package lacks a name asked."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    package = importlib.util.module_from_spec(spec)

    def complete(attribute: str) -> Any:
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, attribute)

    package.__getattr__ = complete  # type: ignore[method-assign]  # PEP 562: asked only for a missing name
    sys.modules[name] = package


@contextlib.contextmanager
def _backends_hidden() -> Iterator[None]:
    """While inside, `import torch` (tensorflow, pykeops) fails for alibi-detect's backend probe, when that probe
    has not run yet and none of them is imported; afterwards they import again and the probe will run anew."""
    if FRAMEWORKS in sys.modules or any(backend in sys.modules for backend in BACKENDS):
        yield
        return
    sys.modules.update(dict.fromkeys(BACKENDS))  # None in sys.modules: the import raises ImportError
    try:
        yield
    finally:
        for backend in BACKENDS:
            del sys.modules[backend]
        sys.modules.pop(FRAMEWORKS, None)


def read_columns(path: str, columns: list[str]) -> pd.DataFrame:
    """The columns of a Parquet file, text columns as pandas categoricals (read dictionary-encoded: faster to code)."""
    schema = pq.read_schema(path)
    text = [c for c in columns if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(
        schema.field(c).type)]
    return pq.read_table(path, columns=columns, read_dictionary=text).to_pandas(split_blocks=True)


def present_values(values: pd.Series) -> np.ndarray:
    """The values that are not missing, as float64 (numpy's filter: pandas' dropna also rebuilds the index); the
    column's own array, not a copy, when it is float64 with nothing missing."""
    if not values.hasnans:
        return values.to_numpy(dtype=np.float64)
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return array[~np.isnan(array)]


def _present(values: pd.Series) -> np.ndarray:
    return present_values(values).reshape(-1, 1)


def _category_codes(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Integer codes of the values that are not missing, over the categories of both sides (a category new in
    `current` is a category too); a missing value is the code -1, left out.

    The codes keep pandas' smallest integer type (int8 up to 127 categories): TabularDrift counts each category
    with a comparison over the whole column, an eighth of the memory to scan that float64 codes would be, for
    the same counts."""
    categories = pd.Index(reference.unique()).dropna().union(pd.Index(current.unique()).dropna())
    ref_codes = pd.Categorical(reference, categories=categories).codes
    cur_codes = pd.Categorical(current, categories=categories).codes
    return ref_codes[ref_codes >= 0].reshape(-1, 1), cur_codes[cur_codes >= 0].reshape(-1, 1), list(
        range(len(categories)))


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

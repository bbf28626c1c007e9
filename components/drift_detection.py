"""Drift: how far a batch of data (or a window of traffic) has moved from the data the model was trained on.

Two measures per feature, because each answers a question the other cannot:

- **PSI** (`slipway.psi`), how far: bins fitted on the reference (its deciles for a numeric feature,
  its categories, plus one bin for categories it never saw, for a categorical one), each bin's share
  floored at `psi.EPSILON` so that an emptied bin counts as a large but finite move. PSI is on the
  same scale whatever the sample sizes, so its usual bands are the levels: < 0.1 none, 0.1-0.2
  warning, > 0.2 critical.
- **A test** (`components/drift_detectors.py`: alibi-detect's KS for numerics, Chi-squared for
  categoricals, in the `drift` runtime), how sure: its p-value, corrected for the number of features
  tested (Bonferroni, or Benjamini-Hochberg FDR).

A feature's level is its PSI band when its corrected p-value is below `alpha`, and `none` when it is
not: on a small window, sampling noise alone can put PSI in the warning band (psi.py: about 22 /
n_eff at the 99th percentile), and the test is what tells noise from movement. On a large batch the
test rejects at the smallest shift, and PSI is what says whether the shift matters. The overall level
is the worst feature's. A multivariate MMD test on a sample of complete rows is reported beside them
(it sees features that move together differently); it does not set the level.

Given the model that serves (the champion), its scores are measured too, as one more row,
`prediction`: the model scores every reference row and every current row, and the two score
distributions are compared like a numeric feature (PSI over the reference scores' deciles, KS). The
row is corrected together with the features and counts toward the overall level, because it is the
drift that matters most: a moved score distribution changes the decisions the model makes, even when
each feature moved too little to be flagged on its own. The model reads its own columns, which may
include Feast features that only a point-in-time join adds ("{view}__{feature}"); when either side
lacks one, the row is `insufficient data`, naming the columns, rather than a score of something else.

Each feature is measured on its non-missing values; the share of missing values on each side is
reported. A feature with fewer than `min_rows` values on either side is reported as `insufficient
data` instead of measured.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from slipway import psi as psi_module
from slipway import runtime_call, runtimes
from slipway.atomic import atomic_output
from slipway.components.drift_detectors import present_values, read_columns
from slipway.components.ingestion import IngestError, enforce_types, read_table
from slipway.problem import Problem
from slipway.psi import Level
from slipway.storage import StorageError, download

if TYPE_CHECKING:
    from slipway.components.model_artifact import LoadedModel

log = logging.getLogger(__name__)

Correction = Literal["bonferroni", "fdr"]
CORRECTIONS: tuple[Correction, ...] = ("bonferroni", "fdr")
LEVELS: tuple[Level, ...] = ("none", "warning", "critical")
INSUFFICIENT = "insufficient data"
MAX_PLOTTED_CATEGORIES = 20  # the most frequent reference categories a report shows one by one
DETECTORS = "slipway.components.drift_detectors"
PREDICTION = "prediction"  # the row of the model's scores
Kind = Literal["numeric", "categorical", "score"]


class DriftInputError(ValueError):
    """The two datasets cannot be compared; the message names the file and the column."""


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """How drift is measured: PSI bins, the tests' significance and correction, the MMD sample."""

    bins: int = 10
    alpha: float = 0.05
    correction: Correction = "bonferroni"
    min_rows: int = 100
    mmd_sample_rows: int = 1000  # rows per side for the MMD test; 0 skips it

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"bins: expected at least 2, got {self.bins}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha: expected a probability in (0, 1), got {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction: expected one of {list(CORRECTIONS)}, got {self.correction!r}")
        if self.min_rows < 1 or self.mmd_sample_rows < 0:
            raise ValueError(f"min_rows must be >= 1 and mmd_sample_rows >= 0, got {self.min_rows}, "
                             f"{self.mmd_sample_rows}")


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: PSI over the reference's bins, the test's p-value, and the level they give."""

    feature: str
    kind: Kind
    level: Level | Literal["insufficient data"]
    psi: float | None
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    p_value_corrected: float | None
    reference_rows: int
    current_rows: int
    reference_missing: float  # share of rows without a value
    current_missing: float
    bins: tuple[str, ...] = ()  # the PSI bins, for plots
    reference_shares: tuple[float, ...] = ()
    current_shares: tuple[float, ...] = ()
    reason: str = ""  # why it is insufficient data


@dataclasses.dataclass(frozen=True)
class MMDResult:
    statistic: float | None
    p_value: float | None
    reference_rows: int
    current_rows: int
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    config: DriftConfig
    reference_rows: int
    current_rows: int
    mmd: MMDResult | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    scored_by: str = ""  # the model whose scores are the `prediction` row; "" when none was given

    @property
    def level(self) -> Level:
        """The worst measured feature's level (`none` when none could be measured)."""
        measured = [f.level for f in self.features if f.level != INSUFFICIENT]
        return max(measured, key=LEVELS.index, default="none")

    @property
    def insufficient(self) -> list[str]:
        return [f.feature for f in self.features if f.level == INSUFFICIENT]

    def table(self) -> str:
        """A plain-text table, worst first: what `slipway drift` prints."""
        rows = [("feature", "kind", "PSI", "test", "p (corrected)", "level")]
        for f in self.ranked():
            rows.append((f.feature, f.kind, _fmt(f.psi, 3), f.test, format_p(f.p_value_corrected),
                         f.level if f.level != INSUFFICIENT else f"{INSUFFICIENT}: {f.reason}"))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5]
                 for row in rows]
        if self.scored_by:
            lines.append(f"({PREDICTION}: the scores of {self.scored_by} on each row)")
        return "\n".join(lines)

    def ranked(self) -> list[FeatureDrift]:
        """Worst level first, then largest PSI; insufficient data last."""
        def key(f: FeatureDrift) -> tuple[int, float]:
            rank = -1 if f.level == INSUFFICIENT else LEVELS.index(f.level)
            return (-rank, -(f.psi or 0.0))
        return sorted(self.features, key=key)

    def metrics(self) -> dict[str, float]:
        """Per-feature PSI and corrected p-values, and the level as a number (0 none, 1 warning, 2 critical)."""
        values: dict[str, float] = {"drift_level": float(LEVELS.index(self.level))}
        for f in self.features:
            if f.psi is not None:
                values[f"psi_{f.feature}"] = round(f.psi, 6)
            if f.p_value_corrected is not None:
                values[f"p_{f.feature}"] = f.p_value_corrected
        if self.mmd is not None and self.mmd.p_value is not None:
            values["mmd_p_value"] = self.mmd.p_value
        return values


def detect_drift(reference: Path, current: Path, numeric: Sequence[str], categorical: Sequence[str],
                 config: DriftConfig | None = None, model: LoadedModel | None = None,
                 model_name: str = "the model", current_scores: str | None = None) -> DriftReport:
    """Measures every feature of `current` against `reference` (both Parquet files with those columns), and,
    given a `model` (`model_name` says which, for people), its scores on both as the `prediction` row.

    `current_scores` names a column of `current` that already holds the model's scores, as a batch prediction
    log does: those are the current side of the `prediction` row, as the online monitor takes the answers it
    logged, rather than `current` scored again."""
    config = config or DriftConfig()
    columns = list(numeric) + list(categorical)
    if PREDICTION in columns:
        raise DriftInputError(f"a feature is named {PREDICTION!r}, the name of the model's scores' row: rename it")
    for path, side in ((reference, "reference"), (current, "current")):
        _check_schema(path, side, numeric, categorical)
    lacking = _lacking_columns(model, model_name, reference, current, current_scores) if model is not None else ""
    if model is None or lacking:
        report = _measure(reference, current, numeric, categorical, [], config)
    else:
        with tempfile.TemporaryDirectory(prefix="slipway-drift-") as tmp:
            scored = [_scored_copy(path, side, columns, model, model_name, Path(tmp) / f"{side}.parquet", logged)
                      for path, side, logged in ((reference, "reference", None), (current, "current", current_scores))]
            report = _measure(*scored, numeric, categorical, [PREDICTION], config)
    if model is not None:
        unscored = (_unscored(lacking),) if lacking else ()
        report = dataclasses.replace(report, features=report.features + unscored, scored_by=model_name)
    log.info("drift of %s against %s: %s (%d features%s; PSI %.2f s, tests and MMD %.2f s)", current, reference,
             report.level, len(report.features), f", {PREDICTION} scored by {model_name}" if model else "",
             report.seconds["psi"], report.seconds["tests"])
    return report


def _model_columns(model: LoadedModel) -> list[str]:
    """The columns the model reads: its numeric features, then its categorical ones."""
    return [*model.preprocessing.numeric, *model.preprocessing.categorical]


def _measure(reference: Path, current: Path, numeric: Sequence[str], categorical: Sequence[str],
             scores: list[str], config: DriftConfig) -> DriftReport:
    """PSI here and the tests in the drift runtime, for the features and the `scores` columns (numeric)."""
    univariate = list(numeric) + scores
    columns = univariate + list(categorical)
    # The tests' runtime starts (about a second: Python, pandas, scipy and alibi-detect's tabular tests) while both
    # files are read and PSI is computed here; it decides on its own which features have too few values to test.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        started = time.perf_counter()
        pending = pool.submit(runtime_call.call, runtimes.DRIFT, f"{DETECTORS}:drift_tests",
                              reference_path=str(reference), current_path=str(current), numeric=list(numeric),
                              categorical=list(categorical), min_rows=config.min_rows,
                              mmd_sample_rows=config.mmd_sample_rows, scores=scores)
        try:
            ref_frame = read_columns(str(reference), columns)
            cur_frame = read_columns(str(current), columns)
            psi_started = time.perf_counter()
            measured = {name: _numeric_psi(name, ref_frame[name], cur_frame[name], config) for name in univariate}
            measured |= {name: _categorical_psi(name, ref_frame[name], cur_frame[name], config)
                         for name in categorical}
            seconds = {"psi": time.perf_counter() - psi_started}
        except BaseException:
            concurrent.futures.wait([pending])  # the child's own error, if any, would only repeat this one
            raise
        tests: dict[str, Any] = pending.result()
    seconds["tests"] = time.perf_counter() - started
    seconds |= {f"tests_{part}": value for part, value in tests["seconds"].items()}
    features_tested = tests["features"]
    corrected = correct({n: t["p_value"] for n, t in features_tested.items()
                         if "p_value" in t and math.isfinite(t["p_value"])}, config.correction)
    kinds: dict[str, Kind] = {**dict.fromkeys(numeric, "numeric"), **dict.fromkeys(scores, "score"),
                              **dict.fromkeys(categorical, "categorical")}
    features = tuple(_feature(name, kinds[name], measured[name], features_tested.get(name, {}), corrected.get(name),
                              config) for name in columns)
    mmd = _mmd(tests["mmd"]) if tests["mmd"] is not None else None
    return DriftReport(features=features, config=config, reference_rows=len(ref_frame), current_rows=len(cur_frame),
                       mmd=mmd, seconds=seconds)


def _lacking_columns(model: LoadedModel, model_name: str, reference: Path, current: Path,
                     current_scores: str | None) -> str:
    """Why the `prediction` row cannot be measured, naming the columns each side lacks; "" when it can. The
    current side needs the model's columns, or only `current_scores` when its scores were logged."""
    needed = {"reference": _model_columns(model),
              "current": [current_scores] if current_scores else _model_columns(model)}
    lacking = {side: [c for c in needed[side] if c not in pq.read_schema(path).names]
               for path, side in ((reference, "reference"), (current, "current"))}
    return "; ".join(f"{model_name} reads column(s) {names} that the {side} data lacks" if side == "reference" or
                     not current_scores else f"the {side} data lacks its logged scores' column {current_scores!r}"
                     for side, names in lacking.items() if names)


def _unscored(reason: str) -> FeatureDrift:
    """The `prediction` row when the model could not score: no scores on either side, and why."""
    return FeatureDrift(feature=PREDICTION, kind="score", level=INSUFFICIENT, psi=None, test="ks", statistic=None,
                        p_value=None, p_value_corrected=None, reference_rows=0, current_rows=0,
                        reference_missing=1.0, current_missing=1.0, reason=reason)


def _scored_copy(path: Path, side: str, columns: list[str], model: LoadedModel, model_name: str, dest: Path,
                 logged: str | None = None) -> Path:
    """The file's feature `columns` and the model's score for each row (column `prediction`), written to `dest`;
    with `logged`, the scores are that column's, the ones the model gave when the rows were scored."""
    if logged:
        frame = pd.read_parquet(path, columns=list(dict.fromkeys([*columns, logged])))
        frame[columns].assign(**{PREDICTION: frame[logged].to_numpy(dtype=float)}).to_parquet(dest, index=False)
        return dest
    frame = pd.read_parquet(path, columns=list(dict.fromkeys(columns + _model_columns(model))))
    from slipway.components.preprocessing import FeatureInputError  # torch: imported with the model already

    try:
        scores = model.predict_proba(frame)
    except FeatureInputError as exc:
        raise DriftInputError(f"{path}: {model_name} cannot score the {side} data: {exc}") from None
    frame[columns].assign(**{PREDICTION: scores}).to_parquet(dest, index=False)
    return dest


def correct(p_values: dict[str, float], correction: Correction) -> dict[str, float]:
    """p-values corrected for testing them all: Bonferroni (p * m), or Benjamini-Hochberg's FDR-adjusted p."""
    if not p_values:
        return {}
    names = list(p_values)
    p = np.array([p_values[n] for n in names], dtype=float)
    m = p.size
    if correction == "bonferroni":
        adjusted = np.minimum(p * m, 1.0)
    else:
        order = np.argsort(p)
        scaled = p[order] * m / np.arange(1, m + 1)
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return dict(zip(names, adjusted.tolist(), strict=True))


def _check_schema(path: Path, side: str, numeric: Sequence[str], categorical: Sequence[str]) -> None:
    """Every feature is a column of the file, numeric ones as numbers; from the Parquet footer, before any read."""
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError) as exc:
        raise DriftInputError(f"{path}: the {side} data is not a readable Parquet file: {exc}") from None
    if metadata.num_rows == 0:
        raise DriftInputError(f"{path}: the {side} data has no rows")
    schema = metadata.schema.to_arrow_schema()
    columns = list(numeric) + list(categorical)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DriftInputError(f"{path}: the {side} data has no column(s) {missing}; expected every feature "
                              f"of the problem: {columns}")
    for name in numeric:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
            raise DriftInputError(f"{path}: column {name!r} is numeric in the problem, but the {side} data holds "
                                  f"{kind} values")


def _numeric_psi(name: str, reference: pd.Series, current: pd.Series, config: DriftConfig) -> dict[str, Any]:
    ref, cur = present_values(reference), present_values(current)
    base = _counts(reference, current, len(ref), len(cur))
    reason = _too_few(name, len(ref), len(cur), config)
    if reason:
        return {**base, "reason": reason}
    edges = psi_module.quantile_edges(ref, config.bins)
    e, a = psi_module.shares(ref, edges), psi_module.shares(cur, edges)
    labels = ([f"<= {_fmt(edges[0], 4)}"] + [f"({_fmt(lo, 4)}, {_fmt(hi, 4)}]" for lo, hi in zip(edges, edges[1:],
                                                                                                strict=False)]
              + [f"> {_fmt(edges[-1], 4)}"])
    return {**base, "psi": psi_module.psi_of_shares(e, a), "bins": labels, "e": e, "a": a}


def _categorical_psi(name: str, reference: pd.Series, current: pd.Series, config: DriftConfig) -> dict[str, Any]:
    ref, cur = reference.dropna(), current.dropna()
    base = _counts(reference, current, len(ref), len(cur))
    reason = _too_few(name, len(ref), len(cur), config)
    if reason:
        return {**base, "reason": reason}
    if pd.api.types.is_string_dtype(ref.dtype):  # pandas' string dtype: categorising plain objects is faster
        ref, cur = ref.astype(object), cur.astype(object)
    reference_categories = pd.Categorical(ref)
    if isinstance(ref.dtype, pd.CategoricalDtype):  # read dictionary-encoded: its categories as the values' would be
        used = reference_categories.remove_unused_categories()
        reference_categories = used.reorder_categories(used.categories.sort_values())
    order = np.argsort(-np.bincount(reference_categories.codes), kind="stable")  # most frequent first
    categories = reference_categories.categories[order]
    unseen = len(categories)  # one bin for every category the reference never had
    rank = np.empty(unseen + 1, dtype=np.int64)
    rank[order], rank[-1] = np.arange(unseen), unseen  # code -1 (not a reference category) -> the unseen bin
    ref_codes = rank[reference_categories.codes]
    cur_codes = rank[pd.Categorical(cur, categories=reference_categories.categories).codes]
    e = psi_module.category_shares(ref_codes, unseen + 1)
    a = psi_module.category_shares(cur_codes, unseen + 1)
    shown = min(len(categories), MAX_PLOTTED_CATEGORIES)
    labels = [str(c) for c in categories[:shown]]
    plot_e, plot_a = list(e[:shown]), list(a[:shown])
    if len(categories) > shown:
        labels.append(f"{len(categories) - shown} other categories")
        plot_e.append(float(e[shown:unseen].sum()))
        plot_a.append(float(a[shown:unseen].sum()))
    labels.append("(not in the reference)")
    plot_e.append(float(e[unseen]))
    plot_a.append(float(a[unseen]))
    return {**base, "psi": psi_module.psi_of_shares(e, a), "bins": labels, "e": np.array(plot_e),
            "a": np.array(plot_a)}


def _counts(reference: pd.Series, current: pd.Series, ref_values: int, cur_values: int) -> dict[str, Any]:
    return {"reference_rows": ref_values, "current_rows": cur_values,
            "reference_missing": 1 - ref_values / len(reference), "current_missing": 1 - cur_values / len(current)}


def _too_few(name: str, ref_values: int, cur_values: int, config: DriftConfig) -> str | None:
    if ref_values == 0 or cur_values == 0:
        return f"every value of {name!r} is missing in the {'reference' if ref_values == 0 else 'current'} data"
    if min(ref_values, cur_values) < config.min_rows:
        return (f"{min(ref_values, cur_values)} values in the {'reference' if ref_values < cur_values else 'current'}"
                f" data, fewer than min_rows {config.min_rows}")
    return None


def _feature(name: str, kind: Kind, measured: dict[str, Any], test: dict[str, Any],
             p_corrected: float | None, config: DriftConfig) -> FeatureDrift:
    common = {"feature": name, "kind": kind, "test": "chi2" if kind == "categorical" else "ks",
              "reference_rows": measured["reference_rows"], "current_rows": measured["current_rows"],
              "reference_missing": measured["reference_missing"], "current_missing": measured["current_missing"]}
    reason = measured.get("reason") or test.get("insufficient")
    if reason:
        return FeatureDrift(**common, level=INSUFFICIENT, psi=None, statistic=None, p_value=None,
                            p_value_corrected=None, reason=reason)
    value = measured["psi"]
    significant = p_corrected is not None and p_corrected < config.alpha
    return FeatureDrift(**common, level=psi_module.psi_level(value) if significant else "none", psi=value,
                        statistic=test.get("statistic"), p_value=test.get("p_value"), p_value_corrected=p_corrected,
                        bins=tuple(measured["bins"]), reference_shares=tuple(float(x) for x in measured["e"]),
                        current_shares=tuple(float(x) for x in measured["a"]))


def _mmd(result: dict[str, Any]) -> MMDResult:
    if "insufficient" in result:
        return MMDResult(statistic=None, p_value=None, reference_rows=0, current_rows=0, reason=result["insufficient"])
    return MMDResult(statistic=result["statistic"], p_value=result["p_value"], reference_rows=result["reference_rows"],
                     current_rows=result["current_rows"])


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def format_p(value: float | None) -> str:
    """A p-value for people: 3 decimals, or scientific below 0.001."""
    return "-" if value is None else f"{value:.2e}" if value < 0.001 else f"{value:.3f}"


def current_table(uri: str, problem: Problem, dest: Path, extra: Sequence[str] = ()) -> tuple[Path, str | None]:
    """`drift_table` of the current side, and, when `uri` is a batch prediction output (`batch_predict`, `slipway
    score`), the column of the scores it logged, for `detect_drift(current_scores=...)`; else None."""
    logged = None
    if Path(uri).is_dir():
        from slipway.components import batch_scoring  # torch: only for a directory, which may be a prediction log

        logged = batch_scoring.SCORE if batch_scoring.is_prediction_output(uri) else None
    return drift_table(uri, problem, dest, "current", [*extra, *([logged] if logged else [])]), logged


def drift_table(uri: str, problem: Problem, dest: Path, side: str, extra: Sequence[str] = ()) -> Path:
    """The problem's features of a CSV or Parquet file (any URI), or of a batch prediction output directory
    (`slipway score`, `batch_predict`), typed as the problem declares, as Parquet.

    Only the features are needed: a serving log or a new batch without labels or timestamps compares.
    `extra` are more numeric columns kept as floats when the file has them: those a model reads (its Feast
    features; one the file lacks is left out here, and scoring names it), or a prediction log's scores.
    """
    features = list(problem.features.all)
    with tempfile.TemporaryDirectory(prefix="slipway-drift-") as tmp:
        local = Path(tmp) / (Path(uri.split("?")[0]).name or "data")
        try:
            if Path(uri).is_dir():
                from slipway.components import batch_scoring  # torch: only for a prediction log

                try:
                    raw = batch_scoring.read_predictions(uri)
                except batch_scoring.BatchInputError as exc:
                    raise IngestError(str(exc)) from None
            else:
                download(uri, local)
                raw = read_table(local, uri)
            kept = {c: "float" for c in extra if c in raw.columns and c not in features}
            typed = enforce_types(raw, dataclasses.replace(problem, columns={
                **{c: problem.columns[c] for c in features}, **kept}), uri)
        except (IngestError, StorageError, OSError) as exc:
            raise DriftInputError(f"the {side} data: {exc}") from None
    with atomic_output(dest) as temp:
        typed.to_parquet(temp, index=False)
    return dest


def feature_psi(reference: pd.DataFrame, current: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str],
                config: DriftConfig) -> dict[str, dict[str, Any]]:
    """Every feature's PSI over the reference's bins, as the batch drift step measures it, without the tests: what
    the online monitor (serving/drift_monitor.py) computes for each window of traffic. Per feature: `psi`, `bins`
    (their labels), `e` and `a` (the shares), the value counts, or `reason` when there are too few values."""
    measured = {name: _numeric_psi(name, reference[name], current[name], config) for name in numeric}
    return measured | {name: _categorical_psi(name, reference[name], current[name], config) for name in categorical}

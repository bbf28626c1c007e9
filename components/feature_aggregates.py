"""Per-entity feature tables: time-windowed aggregates of each entity's past trips, for Feast's offline store.

The batch feature step. For each entity of the problem (`pickup_community_area`, `company`) it
writes one Parquet table with a row per distinct (entity value, timestamp at which that entity had
a trip) and, for every aggregate and window of the problem's `feature_store` section, a float64
column `<aggregate>_<window>` (`trips_24h`, `mean_fare_7d`). A row at time t aggregates only that
entity's trips with t - window <= timestamp < t:

- strictly before t, so a training row never sees its own trip (its label is computed from the
  fare and tips) nor a trip that started at the same instant (the source rounds times to 15
  minutes, so many do); the windows are half-open, [t - window, t);
- never after t, so nothing from the future leaks into a point-in-time join.

Because every trip creates a row at its own time, Feast's point-in-time join of a training trip
always finds a feature row of its entity at distance zero, and that row holds exactly the history
before the trip.

`write_feature_tables` also writes a snapshot row per key at `as_of`, one second after the batch's
last trip by default: the key's aggregates over [as_of - window, as_of), so every trip of the batch
counts, the key's latest included, and a key quiet for a week has 0 trips in its 7-day window rather
than the counts of its last busy day. It is what `materialize` loads into the online store (the
newest row of each key) and so what serving reads until the next batch; no training trip is at or
after `as_of`, so no training row ever joins it.

A missing entity value gets the problem's `missing_keys` key (`-1`, `"(unknown)"`), so trips
without a company share one history instead of having none; `entity_key_values` is that rule, for
the Feast layer and serving to use too. `feature_columns` is the one list of the feature names.

The aggregates are vectorised per entity column: trips are sorted by (entity, time), each window's
start is found with `searchsorted`, and sums are differences of prefix sums within the entity (on
the sample, means agree with a direct mean to about 1e-12, relative); no Python loop runs over trips
or rows. Measured on a 2-core machine, 3 windows x 3 aggregates: the
sample's 15,000 trips (data.csv and data2.csv) take about 15 ms per entity, and 1.5 million trips
about 1.5 s per entity, both about a million trips (and as many feature rows) per second;
`write_feature_tables` logs the rate of each run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from slipway.atomic import atomic_outputs
from slipway.expression import ExpressionError, columns_of, evaluate
from slipway.problem import AggregateSpec, FeatureStoreSpec, Problem

log = logging.getLogger(__name__)

EVENT_TIMESTAMP = "event_timestamp"
# The snapshot rows' time after a batch's last trip: late enough that the last trip counts.
SNAPSHOT_DELAY = pd.Timedelta(seconds=1)


class FeatureError(ValueError):
    """The trips cannot become feature tables; the message names the file, column or aggregate."""


def feature_name(aggregate: AggregateSpec, window: str) -> str:
    """The column of one aggregate over one window: `trips_24h`, `mean_fare_7d`."""
    return f"{aggregate.name}_{window}"


def feature_columns(problem: Problem) -> list[str]:
    """Every aggregate feature's column name, aggregate by aggregate, each over the windows in order."""
    spec = _feature_store(problem)
    return [feature_name(aggregate, window) for aggregate in spec.aggregates for window in spec.windows]


def entity_key_values(values: pd.Series, problem: Problem, entity: str) -> pd.Series:
    """The join keys of one entity: missing values (and empty text: a V2 BYTES tensor's missing value) become
    the problem's missing key.

    int64 for an integer entity, pandas string for any other, so that feature rows, training rows
    and serving requests key on identical values.
    """
    spec = _feature_store(problem)
    _check_entity(problem, entity)
    missing_key = spec.missing_keys[entity]
    if not pd.api.types.is_numeric_dtype(values):
        values = values.mask(values.astype("string") == "")
    if problem.columns[entity] == "integer":
        return values.astype("Int64").fillna(missing_key).astype("int64")
    return values.astype("string").fillna(missing_key)


def compute_entity_features(
    trips: pd.DataFrame, problem: Problem, entity: str, as_of: pd.Timestamp | None = None
) -> pd.DataFrame:
    """One entity's feature table: the key, `event_timestamp` and one float64 column per feature.

    Rows are the distinct (key, trip time) pairs, and with `as_of` (after every trip) a snapshot row
    per key at that time, sorted by key then time. `count` is the number of
    the key's trips in [t - window, t) (0.0 for none); `mean` is the mean of the aggregate's `of`
    expression over them, NaN when no trip in the window has a value. Non-finite values of `of`
    (a tip rate over a zero fare is inf or NaN) count as missing: one such trip would otherwise make
    every mean that includes it inf or NaN.
    """
    spec = _feature_store(problem)
    _check_entity(problem, entity)
    ts_column = problem.timestamp.column
    _require_columns(list(trips.columns), problem, entity)
    times = utc_times(trips[ts_column], ts_column)
    if as_of is not None:
        trips = _with_snapshot_probes(trips, entity, ts_column, times, as_of)
        times = utc_times(trips[ts_column], ts_column)
    times = times.dt.tz_localize(None).to_numpy().view("int64")
    keys = entity_key_values(trips[entity], problem, entity)

    codes, key_values = pd.factorize(keys, sort=True)
    order = np.lexsort((times, codes))
    times, codes = times[order], codes[order]
    # (key, time) as one sortable integer: the key's code, then the time's rank among all trip times.
    distinct_times = np.sort(pd.unique(times))
    position = codes * len(distinct_times) + np.searchsorted(distinct_times, times)
    # A row per first trip of each (key, time); the key's trips before it are those sorted before it.
    rows = np.flatnonzero(np.diff(position, prepend=-1) != 0)
    row_codes, row_times = codes[rows], times[rows]
    group_starts = np.diff(codes, prepend=-1) != 0

    window_starts = {}
    for window in spec.windows:
        start_rank = np.searchsorted(distinct_times, row_times - pd.Timedelta(window).value, side="left")
        window_starts[window] = np.searchsorted(position, row_codes * len(distinct_times) + start_rank, side="left")

    features = {}
    for aggregate in spec.aggregates:
        if aggregate.function == "count":
            for window, starts in window_starts.items():
                features[feature_name(aggregate, window)] = (rows - starts).astype("float64")
            continue
        values = _aggregate_values(trips, aggregate, problem)[order]
        valid = np.isfinite(values)
        sums = _prefix_within_groups(np.where(valid, values, 0.0), group_starts)
        counts = _prefix_within_groups(valid.astype("float64"), group_starts)
        for window, starts in window_starts.items():
            total, n = sums[rows] - sums[starts], counts[rows] - counts[starts]
            with np.errstate(invalid="ignore", divide="ignore"):
                features[feature_name(aggregate, window)] = np.where(n > 0, total / n, np.nan)

    table = pd.DataFrame({
        entity: pd.Series(key_values.take(row_codes), dtype=keys.dtype),
        EVENT_TIMESTAMP: pd.DatetimeIndex(row_times.view("datetime64[ns]")).tz_localize("UTC"),
    })
    return pd.concat([table, pd.DataFrame(features)[feature_columns(problem)]], axis=1)


def write_feature_tables(
    trips: Path | Sequence[Path], problem: Problem, out_dir: Path, as_of: pd.Timestamp | None = None
) -> dict[str, Path]:
    """Writes `<entity>.parquet` for every entity from the ingested trips (one Parquet file, or several read as
    one: the train and eval splits), with each key's snapshot row at `as_of` (default: `SNAPSHOT_DELAY` after
    the last trip); all tables appear together or none."""
    paths_in = [Path(trips)] if isinstance(trips, str | Path) else [Path(path) for path in trips]
    where = ", ".join(map(str, paths_in))
    out_dir = Path(out_dir)
    available = _common_columns(paths_in)
    ts_column = problem.timestamp.column
    if as_of is None and ts_column in available:  # else compute_entity_features says why
        try:
            times = utc_times(_read(paths_in, [ts_column])[ts_column], ts_column)
        except FeatureError as exc:
            raise FeatureError(f"{where}: {exc}") from exc
        as_of = times.max() + SNAPSHOT_DELAY if len(times) else None
        del times
    log.info("computing %d features for entities %s from %s, snapshot rows as of %s",
             len(feature_columns(problem)), list(problem.entities), where, as_of)
    for entity in problem.entities:  # before anything is written
        try:
            _require_columns(available, problem, entity)
        except FeatureError as exc:
            raise FeatureError(f"{where}: {exc}") from exc
    paths = feature_table_paths(problem, out_dir)
    with atomic_outputs(list(paths.values())) as temps:
        for entity, temp in zip(paths, temps, strict=True):
            # One entity at a time, from only the columns its features read: memory holds one table.
            started = time.perf_counter()
            rows = _read(paths_in, [column for column in _columns_read(problem, entity) if column in available])
            try:
                table = compute_entity_features(rows, problem, entity, as_of)
            except FeatureError as exc:
                raise FeatureError(f"{where}: {exc}") from exc
            count = len(rows)
            del rows
            table.to_parquet(temp, index=False)
            seconds = time.perf_counter() - started
            log.info("%s: %d feature rows (%d keys) from %d trips in %.3f s (%.0f trips/s)", entity, len(table),
                     table[entity].nunique(), count, seconds, count / max(seconds, 1e-9))
    log.info("wrote feature tables %s to %s", sorted(paths), out_dir)
    return paths


def feature_table_paths(problem: Problem, tables_dir: Path) -> dict[str, Path]:
    """Where `write_feature_tables` puts each entity's table in `tables_dir`: `<entity>.parquet`."""
    return {entity: Path(tables_dir) / f"{entity}.parquet" for entity in problem.entities}


def _common_columns(paths: list[Path]) -> list[str]:
    """The columns every one of the files has, in the first file's order."""
    names = None
    for path in paths:
        try:
            schema = pq.read_schema(path).names
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise FeatureError(f"{path}: not a readable Parquet file of trips: {exc}") from exc
        names = schema if names is None else [name for name in names if name in schema]
    return names or []


def _require_columns(columns: list[str], problem: Problem, entity: str) -> None:
    for column in (problem.timestamp.column, entity):
        if column not in columns:
            raise FeatureError(f"missing column {column!r} (problem {problem.name!r} needs it for the "
                               f"{entity} features); the trips have {columns}")


def _columns_read(problem: Problem, entity: str) -> list[str]:
    """What one entity's features read of the trips: the time, the key and the aggregates' `of` columns."""
    spec = _feature_store(problem)
    read = [problem.timestamp.column, entity]
    for aggregate in spec.aggregates:
        if aggregate.function != "count":
            read += sorted(columns_of(aggregate.of) - set(read))
    return read


def _read(paths: list[Path], columns: list[str]) -> pd.DataFrame:
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_parquet(path, columns=columns))
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise FeatureError(f"{path}: not a readable Parquet file of trips: {exc}") from exc
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _with_snapshot_probes(
    trips: pd.DataFrame, entity: str, ts_column: str, times: pd.Series, as_of: pd.Timestamp
) -> pd.DataFrame:
    """The trips plus one probe per entity value at `as_of`, other columns missing: each probe gets its row
    like a trip, and adds to no aggregate, because rows aggregate only what is strictly before them and
    no trip or probe of its key is at or after `as_of` except itself."""
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    if len(times) and as_of <= times.max():
        raise FeatureError(f"snapshot time {as_of.isoformat()} must be after the last trip "
                           f"({times.max().isoformat()}), or a trip would be left out of the snapshot")
    values = trips[entity].drop_duplicates()
    stamp = as_of if trips[ts_column].dt.tz is not None else as_of.tz_localize(None)  # the trips' own kind
    probes = pd.DataFrame({entity: values.to_numpy(), ts_column: pd.Series(stamp, index=range(len(values)))})
    return pd.concat([trips, probes.astype({entity: trips[entity].dtype})], ignore_index=True)


def _feature_store(problem: Problem) -> FeatureStoreSpec:
    if problem.feature_store is None:
        raise FeatureError(f"{problem.source}: problem {problem.name!r} has no feature_store section")
    return problem.feature_store


def _check_entity(problem: Problem, entity: str) -> None:
    if entity not in problem.entities:
        raise FeatureError(f"{entity!r} is not an entity of problem {problem.name!r} ({list(problem.entities)})")


def utc_times(values: pd.Series, column: str, rows: str = "trip(s)") -> pd.Series:
    """Times as datetime64[ns, UTC] (a time without a zone is taken as UTC, as everywhere in Slipway); an
    error naming `column` when it holds no timestamps or some `rows` have none."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        raise FeatureError(f"column {column!r} has type {values.dtype}, expected timestamps")
    if values.isna().any():
        raise FeatureError(f"column {column!r}: {int(values.isna().sum())} {rows} have no timestamp")
    utc = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
    return utc.dt.as_unit("ns")


def _aggregate_values(trips: pd.DataFrame, aggregate: AggregateSpec, problem: Problem) -> np.ndarray:
    """The aggregate's `of` expression per trip, as float64 with NaN where it has no value."""
    where = f"feature_store aggregate {aggregate.name!r}: of {aggregate.of!r}"
    try:
        values = evaluate(aggregate.of, trips)
    except (ExpressionError, TypeError, ValueError, ArithmeticError) as exc:  # a term of the wrong type
        raise FeatureError(f"{where} cannot be evaluated ({problem.source}): {exc}") from exc
    if not isinstance(values, pd.Series) or not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    ):
        kind = values.dtype if isinstance(values, pd.Series) else type(values).__name__
        raise FeatureError(f"{where} must give a number per trip, got {kind} ({problem.source})")
    return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _prefix_within_groups(values: np.ndarray, group_starts: np.ndarray) -> np.ndarray:
    """prefix[i] = sum of values[start:i], start = the first index of i's group.

    Restarting at each group keeps a difference of two prefixes accurate to about 1e-16 times the
    entity's own running total, whatever the other entities add up to.
    """
    inclusive = pd.Series(values).groupby(np.cumsum(group_starts)).cumsum().to_numpy()
    prefix = np.zeros_like(values)
    prefix[1:] = inclusive[:-1]
    prefix[group_starts] = 0.0
    return prefix

"""The point-in-time join of entity rows (trips) with their entities' feature rows, on DuckDB's ASOF JOIN.

Feast stays the registry (which views exist, their sources, features and TTL), the materialization into
the online store and online serving; the historical join runs here, on DuckDB, because none of
Feast 0.67's offline stores joins in O(n log n):

- the file (dask) store joins every entity row with every feature row of its key, then filters by
  time: memory and time grow with the square of the rows per key (80,000 trips: killed at 23.5 GB);
- the DuckDB/ibis store (`feast.infra.offline_stores.ibis.point_in_time_join`) is an inner join on the
  key with the time window as a residual predicate, then a ROW_NUMBER dedup: the same pairs, enumerated
  by DuckDB's hash join; and it keeps rows past the TTL.

DuckDB's ASOF JOIN finds each row's latest feature row at or before its time by sorting both sides:
O(n log n), in parallel, spilling to disk past `memory_limit`. The semantics are exactly the training
sets' since v0.1 (tests/test_feature_store.py): a row gets, per view, the key's latest feature row with
`row time - ttl <= feature time <= row time`; a row whose key has feature rows but none in that window
is dropped; a key with no feature rows at all keeps its row with missing features; duplicate rows are
kept and the order is the input's. Times are compared as integer nanoseconds, so nothing is rounded.

A join reads only the feature rows of the time span it is asked about (`[first row - ttl, last row]`,
pushed down into the Parquet scan), so a large input joined chunk by chunk, in time order, reads each
feature row about once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slipway.duckdb_sql import identifier, string_literal

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

ROW = "__row"  # the input row's position, carried through the join to restore the order
KEPT = "__kept"  # false where the row's key has feature rows but none within the ttl
EVENT_NS = "__event_ns"  # the row's time in nanoseconds since the epoch, UTC


@dataclasses.dataclass(frozen=True)
class ViewTable:
    """One feature view as the join needs it: its entity (the key column on both sides), its Parquet table
    (a local path), the feature columns wanted from it and its ttl."""

    view: str
    entity: str
    path: str
    features: tuple[str, ...]
    ttl: timedelta
    timestamp: str = "event_timestamp"


@dataclasses.dataclass(frozen=True)
class JoinSettings:
    """DuckDB's resources: `memory_limit` (DuckDB's syntax, "2GB") bounds what a join holds in memory, the
    rest spills to `temp_dir`; `threads` defaults to every core."""

    memory_limit: str = "2GB"
    threads: int = 0
    temp_dir: str = ""

    @classmethod
    def from_env(cls) -> JoinSettings:
        """SLIPWAY_JOIN_MEMORY_LIMIT and SLIPWAY_JOIN_THREADS override the defaults (a pod with more memory)."""
        return cls(memory_limit=os.environ.get("SLIPWAY_JOIN_MEMORY_LIMIT", cls.memory_limit),
                   threads=int(os.environ.get("SLIPWAY_JOIN_THREADS", "0") or 0))


class PointInTimeJoin:
    """A DuckDB connection with each view's table and the keys it holds, reused for every chunk of a run."""

    def __init__(self, tables: Sequence[ViewTable], settings: JoinSettings = JoinSettings()) -> None:
        import duckdb

        self.tables = tuple(tables)
        self.connection: duckdb.DuckDBPyConnection = duckdb.connect(config=_duckdb_config(settings))
        for index, table in enumerate(self.tables):
            # The keys a view has any feature row for: a row whose key is not among them keeps its row.
            self.connection.execute(
                f"CREATE TEMP TABLE keys_{index} AS SELECT DISTINCT {identifier(table.entity)} AS key "
                f"FROM read_parquet({string_literal(table.path)})"
            )

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> PointInTimeJoin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def join(self, rows: pa.Table) -> dict[str, np.ndarray]:
        """`rows` holds ROW (0 to n - 1), EVENT_NS and each view's entity column (keys typed as the feature
        tables' keys); the answer has KEPT and every view's features as "{view}__{feature}", as numpy arrays
        in input order (the caller drops the rows not KEPT)."""
        if rows.num_rows == 0:
            return {KEPT: np.zeros(0, bool), **{name: np.zeros(0) for name in self.output_columns()}}
        first, last = (value.as_py() for value in pc.min_max(rows[EVENT_NS]).values())
        selects, joins, kept = [], [], []
        for index, table in enumerate(self.tables):
            ttl_ns = int(table.ttl / timedelta(microseconds=1)) * 1_000
            alias, keys = f"f{index}", f"keys_{index}"
            entity, timestamp = identifier(table.entity), identifier(table.timestamp)
            columns = ", ".join(f"{identifier(name)} AS {identifier(f'{table.view}__{name}')}"
                                for name in table.features)
            joins.append(
                f"ASOF LEFT JOIN (SELECT {entity} AS key, epoch_ns({timestamp}) AS ns, "
                f"{columns} FROM read_parquet({string_literal(table.path)}) "
                f"WHERE epoch_ns({timestamp}) BETWEEN {first - ttl_ns} AND {last}) "
                f"{alias} ON r.{entity} = {alias}.key AND r.{EVENT_NS} >= {alias}.ns "
                f"LEFT JOIN {keys} ON r.{entity} = {keys}.key"
            )
            within = f"coalesce({alias}.ns >= r.{EVENT_NS} - {ttl_ns}, false)"
            kept.append(f"({within} OR {keys}.key IS NULL)")
            selects += [f"CASE WHEN {within} THEN {alias}.{identifier(f'{table.view}__{name}')} END::DOUBLE "
                        f"AS {identifier(f'{table.view}__{name}')}" for name in table.features]
        query = (f"SELECT r.{ROW}, {' AND '.join(kept)} AS {KEPT}, {', '.join(selects)} "
                 f"FROM rows_in r {' '.join(joins)}")
        self.connection.register("rows_in", rows)
        try:
            answer = self.connection.sql(query).to_arrow_table()
        finally:
            self.connection.unregister("rows_in")
        # DuckDB answers in whatever order its threads finish: each row goes back to its input position.
        positions = answer[ROW].to_numpy()
        ordered = {}
        for name in [KEPT, *self.output_columns()]:
            values = answer[name].to_numpy(zero_copy_only=False)
            ordered[name] = np.empty_like(values)
            ordered[name][positions] = values
        return ordered

    def output_columns(self) -> list[str]:
        return [f"{table.view}__{name}" for table in self.tables for name in table.features]


def _duckdb_config(settings: JoinSettings) -> dict[str, str | int]:
    config: dict[str, str | int] = {"memory_limit": settings.memory_limit, "preserve_insertion_order": "false"}
    if settings.threads:
        config["threads"] = settings.threads
    if settings.temp_dir:
        config["temp_directory"] = settings.temp_dir
    return config

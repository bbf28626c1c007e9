"""The Feast layer: a feature repository generated from the problem, served offline and online.

The problem's `feature_store` section is the only description of the features. From it and the
per-entity tables that `feature_aggregates` writes, this module builds the Feast objects in code
(`definitions`): one `Entity` per problem entity, and one `FeatureView` `<entity>_stats` over that
entity's Parquet table with a Float64 field per aggregate and window. There is no
`feature_store.yaml` and no feature repo to keep in sync: `StoreConfig` builds Feast's `RepoConfig`
itself, so where the store lives is configuration (`StoreConfig.from_env`), never a code change:

| | local default (embedded) | cluster |
|---|---|---|
| registry | `<repo_dir>/registry.db` | `SLIPWAY_FEAST_REGISTRY`: `s3://…`, `gs://…`, or a SQL URL |
| offline store | the Parquet tables, read in process (Feast's file store) | the same |
| online store | SQLite `<repo_dir>/online.db` | `SLIPWAY_FEAST_ONLINE_STORE=redis`, `SLIPWAY_FEAST_REDIS=host:port` |

The steps the pipelines and the server call:

    store = open_store(StoreConfig.from_env(run_dir / "feature_repo"), problem)
    apply(store, problem, {"pickup_community_area": Path("…/pickup_community_area.parquet"), …})
    rows = training_set(store, problem, trips)     # point in time (on DuckDB), for training and batch scoring
    materialize(store, end=latest_trip_time)        # offline -> online store
    online_features(store, problem, {"pickup_community_area": [8, None], "company": ["Flash Cab", "x"]})

The historical (point-in-time) join runs on DuckDB, not in Feast (components/point_in_time.py says why:
Feast 0.67's offline stores join every entity row with every feature row of its key), over the tables and
TTLs Feast's registry holds (`point_in_time_join`, batch scoring's), or over the feature tables folder read as
`feast_apply` registers it (`point_in_time_join_from_tables`, the training set step's, which needs no Feast),
with the file store's semantics kept and tested against it:

- **TTL drops rows.** An entity row whose entity has feature rows but none within `ttl` before the
  row's time is dropped from the result, not given nulls (a key that has no feature rows at all
  keeps its row, with nulls). `training_set` keeps the row order, returns the surviving rows with
  their original index and logs how many were dropped. The problem's `ttl` must be longer than the
  quietest entity's gap between trips.
- **Duplicate entity rows are kept**, each joined on its own (Feast's file store collapsed rows with
  the same key and time, even when their other entities differed).

What Feast 0.67 does that these functions guard against (each has a test):

- **The first incremental materialization starts at wall-clock now minus the TTL**, so data
  older than that (any historical sample) is never loaded, and the view is still marked as
  materialized up to `end`. `materialize` loads a view's first window as [end - ttl, end], the
  same window a point-in-time join at `end` looks back over, so online and offline agree.
- **"Not found" differs by online store**: SQLite marks an unknown entity NOT_FOUND, Redis marks
  it PRESENT with empty values. `online_features` decides `found` from the feature row's event
  timestamp, which both leave empty for an unknown key.
- **A missing registry is created empty on first read**, and the error is then "feature view does
  not exist". Reads check first and say to run feast_apply.
- **Online reads do not apply the TTL**: a materialized row is served however old it is (the tests
  serve rows from 2024), while a point-in-time join drops it. Materializing regularly, with `end` the
  latest data time, is what keeps the two in step. The newest row of each key is its snapshot row
  (feature_aggregates), the aggregates as of just after the batch's last trip.

Importing Feast takes 6-8 s (it imports torch and FastAPI), so it is imported inside the
functions that need it: a step that imports this module only for `feature_refs` does not pay.
Its torch import (2 s, for `to_tensor` methods Slipway never calls) is deferred to a call
(`_defer_feasts_torch_import`), so feast_apply, materialize and the Feast transformer load no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import time
import types
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import pandas as pd

from slipway.components.feature_aggregates import (
    EVENT_TIMESTAMP,
    FeatureError,
    entity_key_values,
    feature_columns,
    feature_table_paths,
    utc_times,
)
from slipway.problem import Problem
from slipway.storage import StorageConfig, boto3_environment, download

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

    from slipway.components.point_in_time import JoinSettings, PointInTimeJoin, ViewTable

log = logging.getLogger(__name__)

PIPELINE_REPO_DIR = "feature_repo"  # the embedded store's folder under a pipeline root
# Trips joined at a time when a training set is written: 800,000 trips in 250,000-row chunks peak at 0.7 GB and
# take 3.0 s, in one chunk 1.3 GB and 3.8 s (2 cores).
TRAINING_SET_CHUNK_ROWS = 250_000

OnlineStore = Literal["sqlite", "redis"]
# The environment variables that select the store on a cluster (see StoreConfig.from_env).
ENV_REPO_DIR = "SLIPWAY_FEAST_REPO_DIR"
ENV_ONLINE_STORE = "SLIPWAY_FEAST_ONLINE_STORE"
ENV_REDIS = "SLIPWAY_FEAST_REDIS"
ENV_REDIS_PASSWORD = "SLIPWAY_FEAST_REDIS_PASSWORD"  # from the Secret `slipway-auth` on a cluster (slipway.cluster)
ENV_REGISTRY = "SLIPWAY_FEAST_REGISTRY"
# Feast's current entity key encoding (v3, since Feast 0.38): every writer and reader of one
# online store must use the same, or lookups silently miss.
ENTITY_KEY_SERIALIZATION_VERSION = 3
OBJECT_STORE_SCHEMES = ("s3", "gs")
FOUND_SUFFIX = "__found"

T = TypeVar("T")


class FeatureStoreError(ValueError):
    """The feature store cannot do what was asked; the message names the column, reference or path."""


class EntityKeyError(FeatureStoreError):
    """A lookup key is not of its entity's type: the asker's error, not the store's."""


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """How to reach the feature store: where its registry and online store live.

    `repo_dir` is a local folder: the SQLite online store (`online.db`) and, unless `registry`
    says otherwise, the registry (`registry.db`) live in it; the embedded default is a folder in
    the run's directory. `registry` is a local path, an object store URI (`s3://bucket/key`,
    `gs://bucket/key`: several pipeline steps and the server share it) or a SQLAlchemy URL
    (`postgresql://…`, `mysql://…`, `sqlite:///…`). `redis_url` is Feast's connection string
    (`host:port`, options after commas: `redis:6379,db=0,password=…`) or a `redis://` /
    `rediss://` URL, used when `online` is "redis"; `redis_password`, when set, is sent as its password.
    """

    repo_dir: Path
    online: OnlineStore = "sqlite"
    redis_url: str = "localhost:6379"
    redis_password: str = dataclasses.field(default="", repr=False)
    registry: str = ""

    def __post_init__(self) -> None:
        if self.online not in get_args(OnlineStore):
            raise FeatureStoreError(f"online store {self.online!r} is not one of {list(get_args(OnlineStore))}")
        if "," in self.redis_password:
            raise FeatureStoreError(f"{ENV_REDIS_PASSWORD}: Feast's Redis connection string splits its options at "
                                    "',', so the password cannot hold one: choose another")

    @classmethod
    def for_pipeline(cls, feature_repo: str | Path, pipeline_root: str | Path) -> StoreConfig:
        """The store a pipeline step uses: `from_env`, whose embedded default is `feature_repo` when given, else
        the one under the pipeline root, `<pipeline_root>/feature_repo`, which every step of a run shares."""
        return cls.from_env(Path(feature_repo or Path(pipeline_root) / PIPELINE_REPO_DIR))

    @classmethod
    def from_env(cls, default_repo_dir: Path, env: Mapping[str, str] | None = None) -> StoreConfig:
        """The configuration a pod is given, else the embedded store under `default_repo_dir`.

        SLIPWAY_FEAST_REPO_DIR (local folder), SLIPWAY_FEAST_REGISTRY (path, s3:// or gs:// URI, or
        SQL URL), SLIPWAY_FEAST_ONLINE_STORE (sqlite or redis), SLIPWAY_FEAST_REDIS (the Redis
        address; setting it alone selects Redis) and SLIPWAY_FEAST_REDIS_PASSWORD (Redis' `requirepass`,
        from the Secret `slipway-auth` on a cluster). Empty values count as unset. An s3:// registry
        takes its endpoint and credentials from the same variables as our data (StorageConfig).
        """
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip()

        redis_url = get(ENV_REDIS)
        online = get(ENV_ONLINE_STORE) or ("redis" if redis_url else "sqlite")
        return cls(
            repo_dir=Path(get(ENV_REPO_DIR) or default_repo_dir),
            online=online,  # type: ignore[arg-type]  # checked in __post_init__
            redis_url=redis_url or cls.redis_url,
            redis_password=get(ENV_REDIS_PASSWORD),
            registry=get(ENV_REGISTRY),
        )

    @property
    def registry_location(self) -> str:
        return self.registry or str(Path(self.repo_dir).resolve() / "registry.db")

    def repo_config(self, project: str) -> RepoConfig:
        """Feast's configuration, built in code: local provider, Parquet offline store, our online store."""
        _defer_feasts_torch_import()
        from feast import RepoConfig
        from feast.errors import FeastExtrasDependencyImportError
        from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
        from feast.repo_config import RegistryConfig

        repo_dir = Path(self.repo_dir).resolve()
        location = self.registry_location
        if _registry_kind(location) == "sql":
            from feast.infra.registry.sql import SqlRegistryConfig

            registry: RegistryConfig = SqlRegistryConfig(path=location)
        else:
            registry = RegistryConfig(path=location)
        if self.online == "redis":
            try:
                from feast.infra.online_stores.redis import RedisOnlineStoreConfig
            except FeastExtrasDependencyImportError as exc:
                raise FeatureStoreError(
                    "online store 'redis' needs the redis client package, which this environment lacks: it comes "
                    f"with feast[redis] (requirements/core.in); rebuild the environment with `make env`: {exc}"
                ) from exc
            password = f",password={self.redis_password}" if self.redis_password else ""
            online: Any = RedisOnlineStoreConfig(connection_string=_feast_redis_string(self.redis_url) + password)
        else:
            online = SqliteOnlineStoreConfig(path=str(repo_dir / "online.db"))
        return RepoConfig(
            project=project,
            provider="local",
            registry=registry,
            online_store=online,
            offline_store=DaskOfflineStoreConfig(type="file"),
            entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
            repo_path=repo_dir,
        )


def open_store(config: StoreConfig, problem: Problem) -> FeatureStore:
    """A Feast FeatureStore for the problem; its Feast project is the problem's name.

    One project per problem keeps two problems' views apart in a shared registry and Redis.
    Nothing is read or created until the first call that needs it, except an s3:// registry (below).
    """
    _defer_feasts_torch_import()
    from feast import FeatureStore

    Path(config.repo_dir).mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=config.repo_config(problem.name))
    if config.registry_location.startswith("s3://"):
        # Feast's S3 registry makes its boto3 client once, when it is built (which reads the registry,
        # or creates it empty), from FEAST_S3_ENDPOINT_URL and boto3's own variables: build it now with
        # the endpoint and credentials our storage layer uses (the environment, else the mounted Secret
        # of SLIPWAY_STORAGE_SECRET_DIR; AWS_ENDPOINT_URL, or KServe's S3_ENDPOINT), leaving nothing set.
        with boto3_environment(StorageConfig.from_env()):
            store.registry  # noqa: B018 (built for its side effect)
    return store


def view_name(entity: str) -> str:
    """The feature view of one entity's aggregates: `company_stats`."""
    return f"{entity}_stats"


def feature_refs(problem: Problem) -> list[str]:
    """Every feature as Feast references it, "{view}:{feature}", entity by entity."""
    return [f"{view_name(entity)}:{column}" for entity in problem.entities for column in feature_columns(problem)]


def full_feature_name(ref: str) -> str:
    """The column a feature gets in training sets and online vectors: "{view}__{feature}"."""
    view, feature = ref.split(":", 1)
    return f"{view}__{feature}"


def joined_columns(problem: Problem) -> list[str]:
    """The columns a training set adds and an online lookup answers, "{view}__{feature}" for every feature,
    in `feature_refs` order; none for a problem without a feature_store section (its model reads raw columns)."""
    if problem.feature_store is None:
        return []
    return [full_feature_name(ref) for ref in feature_refs(problem)]


def definitions(problem: Problem, tables: Mapping[str, str | Path]) -> list[Any]:
    """The Feast objects of the problem: an Entity per entity, then a FeatureView per entity.

    `tables` maps each entity to its feature table (feature_aggregates' Parquet). A local table is
    checked now for the columns the view declares, so a wrong file fails here, naming the file and
    columns, rather than at the first retrieval. The view's TTL is the problem's `ttl`: how far
    back a point-in-time join looks for an entity's latest feature row, and what a first
    materialization loads; rows older than it are dropped from training sets (see the module doc).
    """
    _defer_feasts_torch_import()
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    spec = problem.feature_store
    if spec is None:
        raise FeatureStoreError(f"{problem.source}: problem {problem.name!r} has no feature_store section")
    missing = [entity for entity in problem.entities if entity not in tables]
    if missing:
        raise FeatureStoreError(f"no feature table for entity {missing[0]!r}: tables were given for {sorted(tables)}")
    columns = feature_columns(problem)
    ttl = view_ttl(problem)
    entities, views = [], []
    for entity in problem.entities:
        path = _table_location(tables[entity])
        _check_table(path, entity, columns)
        key = Entity(
            name=entity,
            join_keys=[entity],
            value_type=ValueType.INT64 if problem.columns[entity] == "integer" else ValueType.STRING,
            description=f"{problem.name}: {entity} (missing values share the key {spec.missing_keys[entity]!r})",
        )
        entities.append(key)
        views.append(FeatureView(
            name=view_name(entity),
            entities=[key],
            ttl=ttl,
            schema=[Field(name=column, dtype=Float64) for column in columns],
            source=FileSource(name=f"{view_name(entity)}_source", path=path, timestamp_field=EVENT_TIMESTAMP),
            online=True,
            description=f"{problem.name}: aggregates of each {entity}'s earlier trips over {', '.join(spec.windows)}",
        ))
    return entities + views


def view_ttl(problem: Problem) -> timedelta:
    """Every view's TTL: the problem's feature_store.ttl."""
    return pd.Timedelta(problem.feature_store.ttl).to_pytimedelta()


def apply(store: FeatureStore, problem: Problem, tables: Mapping[str, str | Path]) -> None:
    """Registers the problem's entities and views (creating the registry), and removes views it no longer has."""
    objects = definitions(problem, tables)
    names = {obj.name for obj in objects}
    stale = [view for view in store.list_feature_views() if view.name not in names]
    started = time.perf_counter()
    store.apply(objects, objects_to_delete=stale, partial=not stale)
    log.info("applied %d feature views %s to the registry at %s in %.2f s%s", len(objects) - len(problem.entities),
             sorted(view_name(e) for e in problem.entities), store.config.registry.path, time.perf_counter() - started,
             f" (removed {sorted(v.name for v in stale)})" if stale else "")


def materialize(store: FeatureStore, end: datetime) -> None:
    """Loads every view's newest feature rows up to `end` (inclusive) into the online store, incrementally.

    A view never materialized loads [end - ttl, end]; after that each call continues from where the
    last one ended. `end` is data time (the latest trip time of the batch), not the wall clock: a
    sample from years ago is served as of its own last day. Logs feature rows read per second.
    """
    end = _aware(end)
    _require_registry(store)
    views = store.list_feature_views()
    if not views:
        raise FeatureStoreError(f"no feature views in project {store.project!r} of the feature store registry at "
                                f"{store.config.registry.path}: run feast_apply first")
    for view in views:
        previous = view.most_recent_end_time
        start = _aware(previous) if previous is not None else end - view.ttl
        if start >= end:
            log.info("%s: already materialized up to %s", view.name, start.isoformat())
            continue
        started = time.perf_counter()
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        seconds = time.perf_counter() - started
        rows = _rows_between(view.batch_source.path, start, end)
        log.info("materialized %s [%s, %s] into %s: %d feature rows in %.2f s (%.0f rows/s)", view.name,
                 start.isoformat(), end.isoformat(), store.config.online_store.type, rows, seconds,
                 rows / max(seconds, 1e-9))


def training_set(
    store: FeatureStore, problem: Problem, entity_rows: pd.DataFrame, features: Sequence[str] | None = None,
    join: PointInTimeJoin | None = None,
) -> pd.DataFrame:
    """The entity rows with each feature added as of the row's own time (point in time), no later.

    `entity_rows` are trips: the entity columns (missing values allowed: they join through the
    problem's missing key) and the problem's timestamp column, which the join keys on.
    `features` are "{view}:{feature}" references, all of the problem's by default. Each feature
    becomes a float64 column "{view}__{feature}" holding the entity's latest feature row at or before
    the row's time, or NaN when the entity has no feature row at all. Rows keep their order and
    index; a row whose entity's latest feature row is older than the TTL is dropped and logged with the
    count. The join runs on DuckDB (components/point_in_time.py) over the tables Feast's registry names;
    `join` reuses an open one (`point_in_time_join`) across chunks, else one is opened for this call.
    """
    ts_column = problem.timestamp.column
    if ts_column not in entity_rows.columns:
        raise FeatureStoreError(f"entity rows have no {ts_column!r} column (the problem's timestamp, which the "
                                f"point-in-time join keys on); they have {list(entity_rows.columns)}")
    by_view = _by_view(problem, features)
    for view in by_view:
        entity = _entity_of(problem, view)
        if entity not in entity_rows.columns:
            raise FeatureStoreError(f"entity rows have no {entity!r} column, the key of {view}; "
                                    f"they have {list(entity_rows.columns)}")
    if join is None:
        with point_in_time_join(store, problem, features) as opened:
            return training_set(store, problem, entity_rows, features, opened)
    started = time.perf_counter()
    kept, features_joined = _join(join, problem, entity_rows)
    result = entity_rows.copy()
    for column, values in features_joined.items():
        result[column] = values
    _log_join(problem, len(entity_rows), int(kept.sum()), len(features_joined), time.perf_counter() - started)
    return result[kept]


def write_training_set(
    store: FeatureStore, problem: Problem, trips: Path, out: Path, chunk_rows: int = TRAINING_SET_CHUNK_ROWS,
) -> tuple[int, int, list[str]]:
    """`write_joined_training_set` over the tables Feast's registry names (`point_in_time_join`)."""
    with point_in_time_join(store, problem) as join:
        return write_joined_training_set(join, problem, trips, out, chunk_rows)


def write_joined_training_set(
    join: PointInTimeJoin, problem: Problem, trips: Path, out: Path, chunk_rows: int = TRAINING_SET_CHUNK_ROWS,
) -> tuple[int, int, list[str]]:
    """`training_set` of a Parquet file of trips through an open `join`, streamed: read, joined and written
    `chunk_rows` at a time into one Parquet file at `out` (whole or not at all), so memory holds a chunk, not the
    data set. The trips' columns keep their types; the features are float64. Returns (rows read, rows written,
    columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from slipway.atomic import atomic_output

    try:
        source = pq.ParquetFile(trips)
    except (OSError, pa.ArrowException) as exc:
        raise FeatureStoreError(f"{trips}: not a readable Parquet file of trips: {exc}") from exc
    # A saved pandas index is left behind: a training set's rows are positions, and chunks would restart it.
    columns = [name for name in source.schema_arrow.names if not name.startswith("__index_level_")]
    keys = [problem.timestamp.column, *problem.entities]
    started, rows_in, rows_out = time.perf_counter(), 0, 0
    with atomic_output(Path(out)) as temp:
        writer = None
        try:
            for batch in source.iter_batches(batch_size=chunk_rows, columns=columns):
                chunk = pa.Table.from_batches([batch])
                entity_rows = chunk.select([name for name in keys if name in columns]).to_pandas()
                kept, features = _join(join, problem, entity_rows)
                for name, values in features.items():
                    chunk = chunk.append_column(name, pa.array(values, pa.float64()))
                if writer is None:
                    # pandas' metadata, so that a reader gets the trips' pandas types back (Int64, string).
                    metadata = pa.Schema.from_pandas(chunk.slice(0, 1).to_pandas(), preserve_index=False).metadata
                    writer = pq.ParquetWriter(temp, chunk.schema.with_metadata(metadata))
                writer.write_table(chunk.filter(pa.array(kept)).replace_schema_metadata(writer.schema.metadata))
                rows_in, rows_out = rows_in + chunk.num_rows, rows_out + int(kept.sum())
                log.info("training set %s: %d rows joined (%.0f rows/s)", Path(out).name, rows_in,
                         rows_in / max(time.perf_counter() - started, 1e-9))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no rows: the empty training set still has every column
            _write_empty(source, columns, join.output_columns(), temp)
    _log_join(problem, rows_in, rows_out, len(join.output_columns()), time.perf_counter() - started)
    return rows_in, rows_out, [*columns, *join.output_columns()]


def _write_empty(source: Any, columns: list[str], features: list[str], path: Path) -> None:
    empty = source.schema_arrow.empty_table().select(columns).to_pandas()
    for name in features:
        empty[name] = pd.Series(dtype="float64")
    empty.to_parquet(path, index=False)


def _join(join: PointInTimeJoin, problem: Problem, entity_rows: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
    """Which rows survive the join, and each feature column (float64 numpy, one value per row)."""
    import pyarrow as pa

    from slipway.components.point_in_time import EVENT_NS, KEPT, ROW

    ts_column = problem.timestamp.column
    try:
        times = utc_times(entity_rows[ts_column], ts_column, rows="entity row(s)")
    except FeatureError as error:
        raise FeatureStoreError(str(error)) from None
    keys = {ROW: pa.array(range(len(entity_rows)), pa.int64()),
            EVENT_NS: pa.array(times.astype("int64").to_numpy())}
    for table in join.tables:
        keys[table.entity] = pa.array(entity_key_values(entity_rows[table.entity], problem, table.entity))
    answer = join.join(pa.table(keys))
    return answer[KEPT].astype(bool), {name: answer[name].astype("float64") for name in join.output_columns()}


def _log_join(problem: Problem, rows: int, kept: int, features: int, seconds: float) -> None:
    if rows > kept:
        log.warning("training set: dropped %d of %d entity rows whose latest feature row is older than the ttl "
                    "(%s); a longer feature_store.ttl keeps them", rows - kept, rows, problem.feature_store.ttl)
    log.info("training set: %d rows x %d features in %.2f s (%.0f rows/s)", kept, features, seconds,
             rows / max(seconds, 1e-9))


@contextlib.contextmanager
def point_in_time_join(
    store: FeatureStore, problem: Problem, features: Sequence[str] | None = None,
    settings: JoinSettings | None = None,
) -> Iterator[PointInTimeJoin]:
    """An open DuckDB join over the views' tables as Feast's registry has them (source, ttl, timestamp field);
    a table on object storage is downloaded first, into a folder removed on exit. What batch scoring joins
    through, which has the registry but not the pipeline's tables artifact."""
    from slipway.components.point_in_time import ViewTable

    _require_registry(store)
    with tempfile.TemporaryDirectory(prefix="slipway-join-") as scratch:
        tables = []
        for view, names in _by_view(problem, features).items():
            registered = _with_registry(store, view, functools.partial(store.get_feature_view, view))
            path = registered.batch_source.path
            if "://" in path and not path.startswith("file://"):
                local = Path(scratch) / f"{view}.parquet"
                download(path, local)
                path = str(local)
            tables.append(ViewTable(view=view, entity=_entity_of(problem, view), path=path, features=tuple(names),
                                    ttl=registered.ttl, timestamp=registered.batch_source.timestamp_field))
        with _open_join(tables, settings, scratch) as join:
            yield join


@contextlib.contextmanager
def point_in_time_join_from_tables(
    problem: Problem, tables_dir: Path, features: Sequence[str] | None = None, settings: JoinSettings | None = None,
) -> Iterator[PointInTimeJoin]:
    """The same join as `point_in_time_join`, over the feature tables in `tables_dir` (the `feature_tables`
    step's artifact) read as `feast_apply` registers them, without Feast: the training set step joins with this,
    so it neither imports Feast (6-8 s) nor waits for the registry."""
    with tempfile.TemporaryDirectory(prefix="slipway-join-") as scratch:
        with _open_join(view_tables(problem, tables_dir, features), settings, scratch) as join:
            yield join


def view_tables(problem: Problem, tables_dir: Path, features: Sequence[str] | None = None) -> list[ViewTable]:
    """Each feature view as the join reads it, from the problem and the feature tables in `tables_dir`: the
    entity's table (checked for the view's columns, naming the file), the features asked for (all by default),
    `view_ttl` and the tables' timestamp column, exactly what `definitions` registers."""
    from slipway.components.point_in_time import ViewTable

    paths = feature_table_paths(problem, tables_dir)
    tables = []
    for view, names in _by_view(problem, features).items():
        entity = _entity_of(problem, view)
        path = _table_location(paths[entity])
        _check_table(path, entity, names)
        tables.append(ViewTable(view=view, entity=entity, path=path, features=tuple(names), ttl=view_ttl(problem),
                                timestamp=EVENT_TIMESTAMP))
    return tables


@contextlib.contextmanager
def _open_join(tables: Sequence[ViewTable], settings: JoinSettings | None, scratch: str) -> Iterator[PointInTimeJoin]:
    """A `PointInTimeJoin` over `tables` with `settings` (default: the environment's), spilling to `scratch`
    unless the settings name a folder."""
    from slipway.components.point_in_time import JoinSettings, PointInTimeJoin

    config = settings or JoinSettings.from_env()
    with PointInTimeJoin(tables, dataclasses.replace(config, temp_dir=config.temp_dir or scratch)) as join:
        yield join


def local_store(splits: Sequence[Path], problem: Problem, repo_dir: Path) -> FeatureStore:
    """The pipeline's feature steps up to `feast_apply` in one call, for work outside a pipeline (`slipway
    train`, tests, benchmarks, a notebook): the aggregate tables of every split's trips in
    `repo_dir/tables`, and an embedded store in `repo_dir` with the views applied. Then
    `write_training_sets` (or `training_set`) joins the splits."""
    from slipway.components.feature_aggregates import write_feature_tables

    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(StoreConfig(repo_dir=repo_dir), problem)
    apply(store, problem, write_feature_tables([Path(split) for split in splits], problem, repo_dir / "tables"))
    return store


def write_training_sets(store: FeatureStore, problem: Problem, splits: Sequence[Path], out_dir: Path) -> list[Path]:
    """Each split's `write_training_set`, to `out_dir/<the split's file name>`; the paths, in order."""
    paths = [Path(out_dir) / Path(split).name for split in splits]
    for split, path in zip(splits, paths, strict=True):
        write_training_set(store, problem, Path(split), path)
    return paths


def online_features(
    store: FeatureStore, problem: Problem, entity_keys: Mapping[str, Sequence[Any]],
    features: Sequence[str] | None = None,
) -> dict[str, list[Any]]:
    """What serving calls: entity keys in, the latest materialized feature vectors out, row by row.

    `entity_keys` maps each entity to one key per request row (all lists the same length);
    missing keys (None, NaN) are looked up as the problem's missing key, as in training. The
    answer holds each entity's looked-up keys, each feature under "{view}__{feature}" (None
    where the entity is unknown or the value is missing, e.g. a mean over no trips), and per view
    "{view}__found": whether the online store has a feature row for that key at all, so a caller
    can tell an unknown entity from a known one with missing values.
    """
    by_view = _by_view(problem, features)
    entities = [_entity_of(problem, view) for view in by_view]
    absent = [entity for entity in entities if entity not in entity_keys]
    if absent:
        raise FeatureStoreError(f"online_features needs keys for entity {absent[0]!r} (the features asked for "
                                f"include {view_name(absent[0])}); got keys for {sorted(entity_keys)}")
    lengths = {entity: len(entity_keys[entity]) for entity in entities}
    if len(set(lengths.values())) > 1:
        raise FeatureStoreError(f"entity key lists differ in length: {lengths}")
    rows = {entity: online_keys(entity_keys[entity], problem, entity) for entity in entities}
    _require_registry(store)
    refs = [f"{view}:{name}" for view, names in by_view.items() for name in names]
    response = _with_registry(store, next(iter(by_view)), functools.partial(
        store.get_online_features, features=refs, entity_rows=rows, full_feature_names=True))
    names = list(response.proto.metadata.feature_names.val)
    vectors = dict(zip(names, response.proto.results, strict=True))
    answer: dict[str, list[Any]] = dict(rows)
    values = response.to_dict()
    for view, features_of_view in by_view.items():
        for name in features_of_view:
            answer[f"{view}__{name}"] = values[f"{view}__{name}"]
        # An unknown key has no event timestamp in every online store; its status does not say so
        # in all of them (Redis reports PRESENT with empty values).
        stamps = vectors[f"{view}__{features_of_view[0]}"].event_timestamps
        answer[view + FOUND_SUFFIX] = [stamp.seconds > 0 for stamp in stamps]
    return answer


def _by_view(problem: Problem, features: Sequence[str] | None) -> dict[str, list[str]]:
    """The requested features grouped by view, in the problem's order; refuses references it does not define."""
    known = feature_refs(problem)
    if features is not None:
        unknown = [ref for ref in features if ref not in known]
        if unknown:
            raise FeatureStoreError(f"unknown feature reference {unknown[0]!r}: problem {problem.name!r} defines "
                                    f"{known}")
        if not features:
            raise FeatureStoreError("no features asked for: give feature references, or None for all")
    wanted = set(known if features is None else features)
    by_view: dict[str, list[str]] = {}
    for ref in known:
        if ref in wanted:
            view, name = ref.split(":", 1)
            by_view.setdefault(view, []).append(name)
    return by_view


def _entity_of(problem: Problem, view: str) -> str:
    return next(entity for entity in problem.entities if view_name(entity) == view)


def online_keys(values: Sequence[Any], problem: Problem, entity: str) -> list[Any]:
    """Request keys as the online store holds them: entity_key_values' rule (a missing value or empty text
    becomes the missing key; int for an integer entity, str otherwise) in plain Python, because building
    pandas Series for one request cost as much as the lookup itself (0.45 of 0.9 ms); a test holds the two
    equal."""
    missing = problem.feature_store.missing_keys[entity]
    convert = _integer_key if problem.columns[entity] == "integer" else str
    try:
        return [missing if _is_missing(value) else convert(value) for value in values]
    except (TypeError, ValueError) as exc:
        raise EntityKeyError(f"entity {entity!r} ({problem.columns[entity]}) has keys that are not "
                                f"{problem.columns[entity]}s: {list(values)[:5]}: {exc}") from exc


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or value == "" or (isinstance(value, float) and value != value)


def _integer_key(value: Any) -> int:
    key = int(value)
    if not isinstance(value, str) and key != value:
        raise ValueError(f"{value!r} is not a whole number")
    return key


FEAST_TORCH_WRAPPER = "feast.torch_wrapper"


def _defer_feasts_torch_import() -> None:
    """Feast 0.67's `feast.torch_wrapper` imports torch (2 s) when Feast is imported, for the `to_tensor` methods
    alone, which Slipway never calls; before Feast is first imported, a wrapper with the same `get_torch` that
    imports torch when called stands in for it. A process that has imported Feast already keeps what it has."""
    if FEAST_TORCH_WRAPPER in sys.modules or "feast" in sys.modules:
        return
    wrapper = types.ModuleType(FEAST_TORCH_WRAPPER, "Feast's torch wrapper, importing torch on first use (Slipway).")
    wrapper.TORCH_AVAILABLE = importlib.util.find_spec("torch") is not None

    def get_torch() -> types.ModuleType:
        try:
            return importlib.import_module("torch")
        except Exception as exc:  # as Feast's own wrapper: a CUDA library missing is not an ImportError
            raise ImportError(f"Torch is not available or failed to import: {exc}") from exc

    wrapper.get_torch = get_torch
    sys.modules[FEAST_TORCH_WRAPPER] = wrapper


def _registry_kind(location: str) -> Literal["file", "object", "sql"]:
    scheme = urllib.parse.urlparse(location).scheme.lower() if "://" in location else ""
    if not scheme or scheme == "file":
        return "file"
    return "object" if scheme in OBJECT_STORE_SCHEMES else "sql"


def _require_registry(store: FeatureStore) -> None:
    """Refuses to read a local registry that does not exist, before Feast creates an empty one."""
    location = store.config.registry.path
    if _registry_kind(location) == "file" and not Path(location.removeprefix("file://")).exists():
        raise FeatureStoreError(f"no feature store registry at {location}: run feast_apply first")


def _with_registry(store: FeatureStore, view: str, call: Callable[[], T]) -> T:
    """Runs a read; when a view is missing, rereads the registry once (it is cached for minutes, and
    another process may have applied since), then says to apply instead of Feast's trace."""
    from feast.errors import FeatureViewNotFoundException

    try:
        return call()
    except FeatureViewNotFoundException:
        store.refresh_registry()
    try:
        return call()
    except FeatureViewNotFoundException as exc:
        raise FeatureStoreError(f"feature view {view!r} is not in project {store.project!r} of the feature store "
                                f"registry at {store.config.registry.path}: run feast_apply first ({exc})") from exc


def _feast_redis_string(url: str) -> str:
    """Feast's Redis connection string ("host:port,key=value") from itself or a redis:// / rediss:// URL."""
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise FeatureStoreError(f"Redis address {url!r}: expected host:port, or a redis:// or rediss:// URL")
    options = [f"{parts.hostname}:{parts.port or 6379}"]
    if parts.path.strip("/"):
        options.append(f"db={parts.path.strip('/')}")
    if parts.username:
        options.append(f"username={urllib.parse.unquote(parts.username)}")
    if parts.password:
        options.append(f"password={urllib.parse.unquote(parts.password)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def _table_location(table: str | Path) -> str:
    """A local table as an absolute path (Feast resolves relative ones against the repo); a URI as is."""
    text = os.fspath(table)
    return text if "://" in text else str(Path(text).resolve())


def _check_table(path: str, entity: str, columns: list[str]) -> None:
    """A local table must exist and have the key, event_timestamp and every feature column."""
    if "://" in path:
        return
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as exc:
        raise FeatureStoreError(f"feature table of {entity!r} at {path}: not a readable Parquet file: {exc}") from exc
    missing = [column for column in [entity, EVENT_TIMESTAMP, *columns] if column not in names]
    if missing:
        raise FeatureStoreError(f"feature table of {entity!r} at {path} lacks columns {missing}; it has {names}")


def _rows_between(path: str, start: datetime, end: datetime) -> int:
    """How many feature rows a materialization of [start, end] read (the rows/s in its log line)."""
    import pyarrow.dataset as ds

    timestamps = ds.field(EVENT_TIMESTAMP)
    return ds.dataset(path).count_rows(filter=(timestamps >= start) & (timestamps <= end))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


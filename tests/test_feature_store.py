"""The Feast layer, run for real: a registry, the point-in-time join over its Parquet tables (on DuckDB), SQLite and
a real Redis online store.

Most tests use small hand-made feature tables of exactly feature_aggregates' shape, where every
feature row carries a recognisable value (`row * 100 + feature index`), so an assertion can say
which feature row a join picked. One test runs the real sample through feature_aggregates.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import S3_BUCKET

from slipway.components.feature_aggregates import (
    EVENT_TIMESTAMP,
    entity_key_values,
    feature_columns,
    write_feature_tables,
)
from slipway.components.feature_store import (
    FeatureStoreError,
    StoreConfig,
    apply,
    definitions,
    feature_refs,
    materialize,
    online_features,
    open_store,
    point_in_time_join,
    point_in_time_join_from_tables,
    training_set,
    view_tables,
    write_training_set,
)
from slipway.problem import load_problem
from slipway.storage import StorageConfig

PROBLEM = load_problem("chicago_taxi")  # ttl 30d; missing keys -1 and "(unknown)"
FEATURES = feature_columns(PROBLEM)
TS = PROBLEM.timestamp.column
AREA, COMPANY = "pickup_community_area_stats", "company_stats"


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def value(row: int, feature: str) -> float:
    """The value feature row `row` holds for `feature`; NaN for the means of row 1 (a window with no trips)."""
    if row == 1 and feature.startswith("mean_"):
        return float("nan")
    return row * 100.0 + FEATURES.index(feature)


# (key, time, row) per entity. Area 8 has three rows, the last 19 days after the others; the
# missing keys have their own history; "Old Cab" was last seen more than a TTL (30 days) ago.
AREA_ROWS = [(8, "2024-01-01 10:00", 1), (8, "2024-01-01 12:00", 2), (8, "2024-01-20 12:00", 3),
             (-1, "2024-01-01 09:00", 4), (32, "2024-01-01 11:00", 5)]
COMPANY_ROWS = [("Flash Cab", "2024-01-01 09:00", 10), ("Flash Cab", "2024-01-01 12:00", 11),
                ("(unknown)", "2024-01-01 08:00", 12), ("Old Cab", "2023-10-01 12:00", 13),
                ("Yellow", "2024-01-01 11:30", 14)]


def feature_table(entity: str, rows: list[tuple[Any, str, int]]) -> pd.DataFrame:
    """A table as feature_aggregates writes it: key (int64 or string), event_timestamp (UTC), float64 features."""
    dtype = "int64" if PROBLEM.columns[entity] == "integer" else "string"
    table = pd.DataFrame({
        entity: pd.Series([key for key, _, _ in rows], dtype=dtype),
        EVENT_TIMESTAMP: pd.DatetimeIndex([at(time) for _, time, _ in rows]).as_unit("ns"),
    })
    for feature in FEATURES:
        table[feature] = [value(row, feature) for _, _, row in rows]
    return table


def write_tables(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tables = {}
    for entity, rows in (("pickup_community_area", AREA_ROWS), ("company", COMPANY_ROWS)):
        tables[entity] = folder / f"{entity}.parquet"
        feature_table(entity, rows).to_parquet(tables[entity], index=False)
    return tables


def trips(*rows: tuple[Any, Any, str]) -> pd.DataFrame:
    """Entity rows as ingest writes trips: nullable Int64 area, string company, UTC timestamps."""
    return pd.DataFrame({
        "pickup_community_area": pd.array([area for area, _, _ in rows], dtype="Int64"),
        "company": pd.array([company for _, company, _ in rows], dtype="string"),
        TS: pd.DatetimeIndex([at(time) for _, _, time in rows]).as_unit("ns"),
    })


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, Path]:
    return write_tables(tmp_path / "tables")


@pytest.fixture
def store(tmp_path: Path, tables: dict[str, Path]) -> Any:
    """An applied store on the embedded defaults: file registry, SQLite online store."""
    store = open_store(StoreConfig(repo_dir=tmp_path / "repo"), PROBLEM)
    apply(store, PROBLEM, tables)
    return store


def test_definitions_are_generated_from_the_problem(tables: dict[str, Path]) -> None:
    from feast import Entity, FeatureView, ValueType
    from feast.types import Float64

    objects = definitions(PROBLEM, tables)
    entities = [obj for obj in objects if isinstance(obj, Entity)]
    views = [obj for obj in objects if isinstance(obj, FeatureView)]
    assert [(e.name, e.join_key, e.value_type) for e in entities] == [
        ("pickup_community_area", "pickup_community_area", ValueType.INT64),
        ("company", "company", ValueType.STRING),
    ]
    assert [view.name for view in views] == [AREA, COMPANY]
    for view, entity in zip(views, ("pickup_community_area", "company"), strict=True):
        assert view.entities == [entity]
        assert [(field.name, field.dtype) for field in view.features] == [(name, Float64) for name in FEATURES]
        assert view.ttl == pd.Timedelta(PROBLEM.feature_store.ttl).to_pytimedelta()
        assert (view.batch_source.path, view.batch_source.timestamp_field) == (str(tables[entity]), EVENT_TIMESTAMP)
    assert feature_refs(PROBLEM)[:2] == [f"{AREA}:trips_1h", f"{AREA}:trips_24h"]
    assert len(feature_refs(PROBLEM)) == 2 * len(FEATURES) == 18


def test_a_feature_table_without_the_declared_columns_is_refused_at_apply(tmp_path: Path,
                                                                       tables: dict[str, Path]) -> None:
    feature_table("company", COMPANY_ROWS).drop(columns=["mean_fare_7d"]).to_parquet(tables["company"])
    with pytest.raises(FeatureStoreError, match=r"feature table of 'company' at .*company.parquet lacks columns "
                                                r"\['mean_fare_7d'\]"):
        apply(open_store(StoreConfig(repo_dir=tmp_path / "repo"), PROBLEM), PROBLEM, tables)
    with pytest.raises(FeatureStoreError, match=r"no feature table for entity 'company'"):
        definitions(PROBLEM, {"pickup_community_area": tables["pickup_community_area"]})


def test_the_training_set_is_point_in_time_correct_and_keeps_every_row_in_order(store: Any) -> None:
    rows = trips(
        (8, "Flash Cab", "2024-01-01 11:59"),   # area row 1 (10:00); company row 10 (09:00)
        (8, "Flash Cab", "2024-01-01 12:00"),   # a feature row at the very time is used: 2 and 11
        (8, "Yellow", "2024-01-01 12:00"),      # same area and time, another company: must not collapse
        (8, "Flash Cab", "2024-01-01 12:00"),   # an exact duplicate: kept
        (8, "Flash Cab", "2024-01-20 11:00"),   # row 3 (20 Jan 12:00) is an hour in the future: still 2
        (None, None, "2024-01-01 12:00"),       # missing keys join the missing keys' history: 4 and 12
        (77, "Nobody Cab", "2024-01-01 12:00"),  # keys with no feature rows at all: kept, NaN
    ).set_axis([10, 11, 12, 13, 14, 15, 16])
    result = training_set(store, PROBLEM, rows)

    assert result.index.tolist() == [10, 11, 12, 13, 14, 15, 16]
    pd.testing.assert_frame_equal(result[rows.columns], rows)
    expected = {AREA: [1, 2, 2, 2, 2, 4, None], COMPANY: [10, 11, 14, 11, 11, 12, None]}
    for view, picked in expected.items():
        for feature in FEATURES:
            column = result[f"{view}__{feature}"]
            assert column.dtype == "float64"
            want = [np.nan if row is None else value(row, feature) for row in picked]
            np.testing.assert_array_equal(column.to_numpy(), want, err_msg=f"{view}__{feature}")


def test_a_row_past_the_ttl_is_dropped_and_the_training_set_says_so(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Area 8's latest feature row is 20 Jan 12:00: 19 Feb is exactly the 30-day ttl later (kept: the
    # window includes its start), 9 Mar is 49 days later.
    rows = trips((8, "Flash Cab", "2024-03-09 12:00"), (8, "Flash Cab", "2024-02-19 12:00"),
                 (32, "Flash Cab", "2024-01-02 12:00"))
    with caplog.at_level(logging.WARNING, logger="slipway.components.feature_store"):
        result = training_set(store, PROBLEM, rows, features=[f"{AREA}:trips_1h"])
    assert result.index.tolist() == [1, 2]
    assert result[f"{AREA}__trips_1h"].tolist() == [300.0, 500.0]
    assert "dropped 1 of 3 entity rows whose latest feature row is older than the ttl (30d)" in caplog.text


def test_the_ttl_window_is_closed_to_the_nanosecond_and_a_key_seen_only_later_is_dropped(store: Any) -> None:
    """The file store's rules, kept by the DuckDB join: feature time in [row time - ttl, row time]; a key with
    feature rows but none in that window drops its row (Feast's file store did so too); times are not rounded."""
    last = at("2024-01-20 12:00")  # area 8's last feature row
    ttl = pd.Timedelta(PROBLEM.feature_store.ttl)
    one_ns = pd.Timedelta(1, "ns")
    rows = trips((8, None, "2024-01-01")).iloc[[0, 0, 0, 0, 0]].reset_index(drop=True)
    rows[TS] = pd.DatetimeIndex([last + ttl, last + ttl + one_ns, last - one_ns, at("2023-12-31 23:59"),
                                 at("2024-01-01 10:00")]).as_unit("ns")
    result = training_set(store, PROBLEM, rows, features=[f"{AREA}:trips_1h"])
    # kept: exactly the ttl after row 3; 1 ns before row 3 (row 2); dropped: 1 ns past the ttl, and a time
    # before area 8's first feature row (its key has rows, none at or before); at 10:00 row 1 itself.
    assert result.index.tolist() == [0, 2, 4]
    assert result[f"{AREA}__trips_1h"].tolist() == [300.0, 200.0, 100.0]


def test_the_join_equals_feasts_own_file_store_join_on_real_trips(taxi_splits: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """Today's semantics, checked against the engine they came from: Feast's file (dask) store, on 600 real
    trips in shuffled order with duplicates, a time shift that puts some rows past the ttl and some keys no
    table has. Feast collapses duplicate (key, time) rows and answers one view at a time correctly, so it
    is asked per view for the distinct pairs, and its answers joined back (what training_set did up to 0.1)."""
    trips_frame = pd.read_parquet(taxi_splits[0]).sort_values(TS, kind="stable").head(600)
    trips_path = tmp_path / "trips.parquet"
    trips_frame.to_parquet(trips_path)
    tables = write_feature_tables(trips_path, PROBLEM, tmp_path / "tables")
    store = open_store(StoreConfig(repo_dir=tmp_path / "repo"), PROBLEM)
    apply(store, PROBLEM, tables)
    rng = np.random.default_rng(7)
    rows = trips_frame.sample(frac=1.0, random_state=7)
    rows = pd.concat([rows, rows.head(50)])  # duplicates
    shifts = rng.choice([0, 0, 0, 20, 45], size=len(rows))  # days later: some within the 30-day ttl, some past
    rows[TS] = rows[TS] + pd.to_timedelta(shifts, unit="D")
    rows.loc[rows.index[:20], "company"] = "A Company With No Trips"
    rows = rows.reset_index(drop=True)

    ours = training_set(store, PROBLEM, rows)

    kept = pd.Series(True, index=rows.index)
    theirs = rows.copy()
    for entity in PROBLEM.entities:
        view = f"{entity}_stats"
        keyed = pd.DataFrame({entity: entity_key_values(rows[entity], PROBLEM, entity), EVENT_TIMESTAMP: rows[TS]})
        answer = store.get_historical_features(entity_df=keyed.drop_duplicates(ignore_index=True),
                                               features=[f"{view}:{f}" for f in FEATURES],
                                               full_feature_names=True).to_df()
        answer[EVENT_TIMESTAMP] = answer[EVENT_TIMESTAMP].dt.as_unit("ns")
        joined = keyed.merge(answer, how="left", on=[entity, EVENT_TIMESTAMP], indicator=True, validate="many_to_one")
        kept &= (joined["_merge"] == "both").to_numpy()
        for feature in FEATURES:
            theirs[f"{view}__{feature}"] = joined[f"{view}__{feature}"].to_numpy(dtype="float64")
    assert 0 < (~kept).sum() < len(rows) // 2, "the shifts must drop some rows past the ttl, not most"
    pd.testing.assert_frame_equal(ours, theirs[kept.to_numpy()])


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_materialize_then_look_up_online(online: str, request: pytest.FixtureRequest, tmp_path: Path,
                                         tables: dict[str, Path]) -> None:
    redis_url = request.getfixturevalue("redis_server") if online == "redis" else "unused:0"
    # Its own Feast project: the Redis server is the session's, and keys are namespaced by project.
    problem = dataclasses.replace(PROBLEM, name=f"lookup_{online}")
    store = open_store(StoreConfig(repo_dir=tmp_path / "repo", online=online, redis_url=redis_url), problem)
    apply(store, problem, tables)
    keys = {"pickup_community_area": [8, None, 77, 32], "company": ["Flash Cab", None, "Nobody Cab", "Old Cab"]}

    # The sample is from the past: a first materialization loads [end - ttl, end] of data time.
    materialize(store, end=datetime.fromisoformat("2024-01-01T12:30:00+00:00"))
    first = online_features(store, problem, keys)
    assert first[f"{AREA}__trips_1h"] == [200.0, 400.0, None, 500.0]
    assert first[f"{AREA}__found"] == [True, True, False, True]
    assert first[f"{COMPANY}__trips_1h"] == [1100.0, 1200.0, None, None]
    assert first[f"{COMPANY}__found"] == [True, True, False, False], "Old Cab is older than the ttl: not loaded"
    assert first["pickup_community_area"] == [8, -1, 77, 32]
    assert first["company"] == ["Flash Cab", "(unknown)", "Nobody Cab", "Old Cab"]

    # Incremental: the next call continues where the last ended and brings area 8's 20 Jan row.
    materialize(store, end=datetime.fromisoformat("2024-01-20T13:00:00+00:00"))
    second = online_features(store, problem, keys, features=[f"{AREA}:trips_1h", f"{AREA}:mean_fare_1h"])
    assert sorted(second) == sorted(["pickup_community_area", f"{AREA}__trips_1h", f"{AREA}__mean_fare_1h",
                                     f"{AREA}__found"])
    assert second[f"{AREA}__trips_1h"] == [300.0, 400.0, None, 500.0]
    assert second[f"{AREA}__mean_fare_1h"] == [value(3, "mean_fare_1h"), value(4, "mean_fare_1h"), None,
                                               value(5, "mean_fare_1h")]


def test_a_known_entity_with_missing_values_is_found_and_an_unknown_one_is_not(tmp_path: Path,
                                                                              tables: dict[str, Path]) -> None:
    store = open_store(StoreConfig(repo_dir=tmp_path / "repo"), PROBLEM)
    apply(store, PROBLEM, tables)
    materialize(store, end=datetime.fromisoformat("2024-01-01T11:00:00+00:00"))  # area 8's row 1: no mean
    result = online_features(store, PROBLEM, {"pickup_community_area": [8, 5]}, features=[f"{AREA}:mean_fare_24h",
                                                                                          f"{AREA}:trips_24h"])
    assert result[f"{AREA}__mean_fare_24h"] == [None, None]
    assert result[f"{AREA}__trips_24h"] == [101.0, None]
    assert result[f"{AREA}__found"] == [True, False]


def test_online_keys_follow_the_same_missing_key_rule_as_the_feature_tables(store: Any) -> None:
    areas = [8, 8.0, np.int64(8), np.float64(8.0), "8", "", None, np.nan, pd.NA]
    companies = ["Flash Cab", 5, "", None, np.nan, pd.NA, "(unknown)", "Yellow", "Yellow"]
    answer = online_features(store, PROBLEM, {"pickup_community_area": areas, "company": companies})
    for entity, values in (("pickup_community_area", areas), ("company", companies)):
        expected = [entity_key_values(pd.Series([value], dtype=object), PROBLEM, entity).tolist()[0]
                    for value in values]
        assert answer[entity] == expected
        assert [type(key) for key in answer[entity]] == [type(key) for key in expected]
    assert answer["pickup_community_area"][5] == -1 and answer["company"][2] == "(unknown)"  # "" is missing


def test_online_vectors_equal_the_offline_point_in_time_vectors_at_the_same_time(store: Any) -> None:
    end = "2024-01-20 12:00"
    materialize(store, end=at(end).to_pydatetime())
    areas, companies = [8, -1, 32], ["Flash Cab", "(unknown)", "Yellow"]
    online = online_features(store, PROBLEM, {"pickup_community_area": areas, "company": companies})
    offline = training_set(store, PROBLEM, trips(*[(a, c, end) for a, c in zip(areas, companies, strict=True)]))
    assert len(offline) == 3
    for ref in feature_refs(PROBLEM):
        column = ref.replace(":", "__")
        served = [np.nan if v is None else v for v in online[column]]
        np.testing.assert_array_equal(served, offline[column].to_numpy(), err_msg=f"skew in {column}")


def test_bad_input_is_refused_naming_the_thing(tmp_path: Path, store: Any) -> None:
    rows = trips((8, "Flash Cab", "2024-01-01 12:00"))
    with pytest.raises(FeatureStoreError, match=r"^entity rows have no 'trip_start_timestamp' column \(the "
                                                r"problem's timestamp, which the point-in-time join keys on\); "
                                                r"they have \['pickup_community_area', 'company', 'ts'\]$"):
        training_set(store, PROBLEM, rows.rename(columns={TS: "ts"}))
    with pytest.raises(FeatureStoreError, match=rf"^unknown feature reference '{AREA}:trips_2h': problem "
                                                r"'chicago_taxi' defines \["):
        online_features(store, PROBLEM, {"pickup_community_area": [8]}, features=[f"{AREA}:trips_2h"])
    with pytest.raises(FeatureStoreError, match=r"^online_features needs keys for entity 'company'"):
        online_features(store, PROBLEM, {"pickup_community_area": [8]})
    for bad in ("eight", 8.5):
        with pytest.raises(FeatureStoreError, match=rf"entity 'pickup_community_area' \(integer\) has keys that "
                                                    rf"are not integers: \[{bad!r}\]"):
            online_features(store, PROBLEM, {"pickup_community_area": [bad]}, features=[f"{AREA}:trips_1h"])


def test_reading_before_apply_says_to_run_feast_apply(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    store = open_store(StoreConfig(repo_dir=repo), PROBLEM)
    message = rf"^no feature store registry at {repo.resolve() / 'registry.db'}: run feast_apply first$"
    with pytest.raises(FeatureStoreError, match=message):
        online_features(store, PROBLEM, {"pickup_community_area": [8], "company": ["Flash Cab"]})
    with pytest.raises(FeatureStoreError, match=message):
        training_set(store, PROBLEM, trips((8, "Flash Cab", "2024-01-01 12:00")))
    with pytest.raises(FeatureStoreError, match=message):
        materialize(store, end=datetime.fromisoformat("2024-01-02T00:00:00+00:00"))
    assert not (repo / "registry.db").exists(), "a read must not create an empty registry"


def test_a_sql_registry_is_shared_and_an_unapplied_view_is_named(tmp_path: Path, tables: dict[str, Path]) -> None:
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    reader = open_store(StoreConfig(repo_dir=tmp_path / "serving", registry=registry), PROBLEM)
    with pytest.raises(FeatureStoreError, match=rf"^feature view '{AREA}' is not in project 'chicago_taxi' of the "
                                                rf"feature store registry at {registry}: run feast_apply first"):
        online_features(reader, PROBLEM, {"pickup_community_area": [8]}, features=[f"{AREA}:trips_1h"])

    writer = open_store(StoreConfig(repo_dir=tmp_path / "serving", registry=registry), PROBLEM)
    apply(writer, PROBLEM, tables)
    materialize(writer, end=datetime.fromisoformat("2024-01-01T12:30:00+00:00"))
    # The reader cached the empty registry; it rereads it once instead of failing.
    found = online_features(reader, PROBLEM, {"pickup_community_area": [8]}, features=[f"{AREA}:trips_1h"])
    assert found[f"{AREA}__trips_1h"] == [200.0]


@pytest.mark.servers
def test_a_registry_on_s3_is_reached_with_the_storage_layers_variables(
    s3_config: StorageConfig, tmp_path: Path, tables: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # KServe's variables (an endpoint without a scheme, plain http): only our StorageConfig knows them.
    monkeypatch.setenv("S3_ENDPOINT", s3_config.s3_endpoint.removeprefix("http://"))
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_config.s3_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_config.s3_secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_config.s3_region)
    monkeypatch.delenv("FEAST_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    registry = f"s3://{S3_BUCKET}/feast/{tmp_path.name}/registry.pb"
    env = {"SLIPWAY_FEAST_REGISTRY": registry}

    apply(open_store(StoreConfig.from_env(tmp_path / "pipeline", env), PROBLEM), PROBLEM, tables)
    elsewhere = open_store(StoreConfig.from_env(tmp_path / "elsewhere", env), PROBLEM)
    assert sorted(view.name for view in elsewhere.list_feature_views()) == [COMPANY, AREA]


def test_the_store_is_selected_by_environment_variables(tmp_path: Path) -> None:
    embedded = StoreConfig.from_env(tmp_path / "run", env={})
    assert embedded == StoreConfig(repo_dir=tmp_path / "run", online="sqlite")
    assert embedded.registry_location == str((tmp_path / "run" / "registry.db").resolve())

    cluster = StoreConfig.from_env(tmp_path / "run", env={
        "SLIPWAY_FEAST_REDIS": "rediss://:s3cret@feast-redis.kubeflow:6380/2",
        "SLIPWAY_FEAST_REGISTRY": "gs://features/registry.pb",
        "SLIPWAY_FEAST_REPO_DIR": str(tmp_path / "repo"),
    })
    assert (cluster.online, cluster.registry, cluster.repo_dir) == ("redis", "gs://features/registry.pb",
                                                                   tmp_path / "repo")
    config = cluster.repo_config("chicago_taxi")
    assert (config.provider, config.offline_store.type, config.entity_key_serialization_version) == (
        "local", "file", 3)
    assert config.online_store.connection_string == "feast-redis.kubeflow:6380,db=2,password=s3cret,ssl=true"
    assert config.registry.path == "gs://features/registry.pb"

    sql = StoreConfig(repo_dir=tmp_path, registry="postgresql+psycopg://feast@db/feast").repo_config("p")
    assert (sql.registry.registry_type, sql.online_store.type) == ("sql", "sqlite")
    with pytest.raises(FeatureStoreError, match=r"online store 'memcached' is not one of \['sqlite', 'redis'\]"):
        StoreConfig.from_env(tmp_path, env={"SLIPWAY_FEAST_ONLINE_STORE": "memcached"})


def test_the_real_sample_joins_each_trip_to_the_history_before_it(taxi_splits: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    trips_frame = pd.read_parquet(taxi_splits[0]).sort_values(TS, kind="stable")
    trips_path = tmp_path / "trips.parquet"
    trips_frame.to_parquet(trips_path)
    tables = write_feature_tables(trips_path, PROBLEM, tmp_path / "tables")
    store = open_store(StoreConfig(repo_dir=tmp_path / "repo"), PROBLEM)
    apply(store, PROBLEM, tables)

    result = training_set(store, PROBLEM, trips_frame)

    assert len(result) == len(trips_frame), "with a 30-day ttl no sample trip is dropped"
    assert result.index.equals(trips_frame.index)
    # Every trip has a feature row at its own time (the history strictly before it): the join must pick it.
    for entity in PROBLEM.entities:
        table = pd.read_parquet(tables[entity])
        keys = pd.DataFrame({entity: entity_key_values(trips_frame[entity], PROBLEM, entity),
                             EVENT_TIMESTAMP: trips_frame[TS].dt.as_unit("ns")}).reset_index(drop=True)
        own = keys.merge(table, how="left", on=[entity, EVENT_TIMESTAMP], validate="many_to_one")
        for feature in FEATURES:
            np.testing.assert_array_equal(result[f"{entity}_stats__{feature}"].to_numpy(), own[feature].to_numpy(),
                                          err_msg=f"{entity}_stats__{feature}")


def test_the_tables_folder_and_the_registry_give_the_join_the_same_views(store: Any, tables: dict[str, Path]) -> None:
    """The training set step opens its join from the problem and the feature tables folder, without Feast; batch
    scoring opens it from Feast's registry. Were the views to differ (a table, a ttl, a feature), a model would be
    scored with other features than it was trained with."""
    folder = tables["company"].parent
    with point_in_time_join(store, PROBLEM) as registered, point_in_time_join_from_tables(PROBLEM, folder) as opened:
        assert opened.tables == registered.tables
        assert [table.view for table in opened.tables] == [AREA, COMPANY]
    some = [f"{COMPANY}:{FEATURES[0]}"]
    with point_in_time_join(store, PROBLEM, some) as registered:
        assert view_tables(PROBLEM, folder, some) == list(registered.tables)


def test_a_tables_folder_without_an_entitys_table_is_refused_naming_the_file(tables: dict[str, Path]) -> None:
    tables["company"].unlink()
    with pytest.raises(FeatureStoreError, match=r"feature table of 'company' at .*company\.parquet"):
        view_tables(PROBLEM, tables["company"].parent)


def test_a_training_set_written_in_chunks_equals_the_one_joined_whole(taxi_splits: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """The streamed writer (what the pipeline's training_set step runs) holds a chunk at a time, yet writes
    exactly the rows, values and pandas types of the whole-frame join; shuffled, so chunks overlap in time."""
    trips_frame = pd.read_parquet(taxi_splits[0]).sample(frac=1.0, random_state=3)
    trips_path = tmp_path / "trips.parquet"
    trips_frame.to_parquet(trips_path)  # with its shuffled index saved: the written set leaves it behind
    tables = write_feature_tables(trips_path, PROBLEM, tmp_path / "tables")
    store = open_store(StoreConfig(repo_dir=tmp_path / "repo"), PROBLEM)
    apply(store, PROBLEM, tables)

    rows_in, rows_out, columns = write_training_set(store, PROBLEM, trips_path, tmp_path / "set.parquet",
                                                    chunk_rows=999)

    whole = training_set(store, PROBLEM, trips_frame).reset_index(drop=True)
    written = pd.read_parquet(tmp_path / "set.parquet")
    pd.testing.assert_frame_equal(written, whole)
    assert (rows_in, rows_out, columns) == (len(trips_frame), len(whole), list(whole.columns))


def test_an_empty_split_gives_an_empty_training_set_with_every_column(taxi_splits: tuple[Path, Path],
                                                                      store: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(taxi_splits[0]).head(0).to_parquet(empty, index=False)
    assert write_training_set(store, PROBLEM, empty, tmp_path / "set.parquet")[:2] == (0, 0)
    written = pd.read_parquet(tmp_path / "set.parquet")
    assert len(written) == 0 and list(written.columns[-18:]) == [ref.replace(":", "__") for ref in
                                                                 feature_refs(PROBLEM)]

"""Feature tables: each row aggregates only its entity's trips strictly before its time, checked on real trips."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import files_in

from slipway.components.feature_aggregates import (
    EVENT_TIMESTAMP,
    SNAPSHOT_DELAY,
    FeatureError,
    compute_entity_features,
    entity_key_values,
    feature_columns,
    write_feature_tables,
)
from slipway.problem import AggregateSpec, load_problem

PROBLEM = load_problem("chicago_taxi")
SPEC = PROBLEM.feature_store
TS = PROBLEM.timestamp.column


@pytest.fixture(scope="module")
def trips(taxi_splits: tuple[Path, Path]) -> pd.DataFrame:
    """All 10,000 real trips of data.csv, train and eval, as ingest typed them."""
    return pd.concat([pd.read_parquet(path) for path in taxi_splits], ignore_index=True)


@pytest.fixture(scope="module")
def tables(trips: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {entity: compute_entity_features(trips, PROBLEM, entity) for entity in PROBLEM.entities}


def frame(rows: list[tuple[str, str | None, float, float]]) -> pd.DataFrame:
    """A few typed trips: (time, company, fare, tips); all in community area 8."""
    return pd.DataFrame({
        TS: pd.to_datetime([r[0] for r in rows], utc=True),
        "company": pd.array([r[1] for r in rows], dtype="string"),
        "pickup_community_area": pd.array([8] * len(rows), dtype="Int64"),
        "fare": [r[2] for r in rows],
        "tips": [r[3] for r in rows],
    })


def row_at(table: pd.DataFrame, entity: str, key: object, when: str | pd.Timestamp) -> pd.Series:
    match = table[(table[entity] == key) & (table[EVENT_TIMESTAMP] == pd.Timestamp(when))]
    assert len(match) == 1, f"expected one feature row for {entity}={key!r} at {when}, got {len(match)}"
    return match.iloc[0]


def brute_force(trips: pd.DataFrame, entity: str, key: object, when: pd.Timestamp) -> dict[str, float]:
    """Every feature of (key, when), recounted from the raw trips with a plain filter: when - window <= ts < when."""
    keys = trips[entity].fillna(SPEC.missing_keys[entity])
    expected = {}
    for aggregate in SPEC.aggregates:
        values = None if aggregate.function == "count" else trips.eval(aggregate.of, engine="python")
        for window in SPEC.windows:
            inside = (keys == key) & (trips[TS] >= when - pd.Timedelta(window)) & (trips[TS] < when)
            name = f"{aggregate.name}_{window}"
            if values is None:
                expected[name] = float(inside.sum())
            else:
                finite = values[inside][np.isfinite(values[inside])]
                expected[name] = float(finite.mean()) if len(finite) else float("nan")
    return expected


def chosen_rows(trips: pd.DataFrame, entity: str) -> pd.DataFrame:
    """(key, time) pairs where leakage would show: simultaneous trips, a trip soon after, the missing key."""
    pairs = pd.DataFrame({"key": trips[entity].fillna(SPEC.missing_keys[entity]), "time": trips[TS]})
    per_pair = pairs.groupby(["key", "time"]).size().rename("trips").reset_index()
    per_pair["next"] = per_pair.groupby("key")["time"].shift(-1)
    simultaneous = per_pair[per_pair["trips"] > 1]
    # A trip of the same key within 30 minutes after: inside a 1h window if it were centred on the row.
    followed = per_pair[per_pair["next"] - per_pair["time"] <= pd.Timedelta("30min")]
    missing_key = per_pair[per_pair["key"] == SPEC.missing_keys[entity]]
    assert len(simultaneous) >= 12 and len(followed) >= 12, "the sample no longer has the rows this test needs"
    parts = [simultaneous.sample(12, random_state=0), followed.sample(12, random_state=1),
             per_pair.sample(8, random_state=2)]
    if len(missing_key):
        parts.append(missing_key.sample(8, random_state=3))
    return pd.concat(parts).drop_duplicates(["key", "time"])


@pytest.mark.parametrize("entity", PROBLEM.entities)
def test_every_feature_of_leak_prone_rows_equals_a_brute_force_recount_of_earlier_trips(
    trips: pd.DataFrame, tables: dict[str, pd.DataFrame], entity: str
) -> None:
    chosen = chosen_rows(trips, entity)
    assert len(chosen) >= 30
    for key, when in zip(chosen["key"], chosen["time"], strict=True):
        actual = row_at(tables[entity], entity, key, when)
        expected = brute_force(trips, entity, key, when)
        for name, value in expected.items():
            assert actual[name] == pytest.approx(value, rel=1e-9, nan_ok=True), f"{entity}={key!r} at {when}: {name}"


@pytest.mark.parametrize("entity", PROBLEM.entities)
def test_every_snapshot_row_of_the_sample_equals_a_brute_force_recount(trips: pd.DataFrame, entity: str) -> None:
    as_of = trips[TS].max() + SNAPSHOT_DELAY
    table = compute_entity_features(trips, PROBLEM, entity, as_of=as_of)
    snapshot = table[table[EVENT_TIMESTAMP] == as_of]
    assert len(snapshot) == entity_key_values(trips[entity], PROBLEM, entity).nunique()
    assert snapshot["trips_7d"].sum() == (trips[TS] >= as_of - pd.Timedelta("7d")).sum(), "every trip of the last week"
    for _, actual in snapshot.iterrows():
        expected = brute_force(trips, entity, actual[entity], as_of)
        for name, value in expected.items():
            assert actual[name] == pytest.approx(value, rel=1e-9, nan_ok=True), f"{entity}={actual[entity]!r}: {name}"


def test_the_chosen_rows_would_catch_a_window_that_includes_its_own_or_later_trips(trips: pd.DataFrame) -> None:
    # The brute-force test is only as good as its rows: on these, a [t - w, t] or centred window differs.
    chosen = chosen_rows(trips, "company")
    keys = trips["company"].fillna(SPEC.missing_keys["company"])
    changed_by_same_time = changed_by_later = 0
    for key, when in zip(chosen["key"], chosen["time"], strict=True):
        same_key = trips[TS][keys == key]
        changed_by_same_time += int((same_key == when).sum() > 1)
        changed_by_later += int(((same_key > when) & (same_key <= when + pd.Timedelta("30min"))).any())
    assert changed_by_same_time >= 12 and changed_by_later >= 12


def test_a_later_trip_and_a_simultaneous_trip_are_left_out_and_the_window_start_is_kept() -> None:
    trips = frame([
        ("2015-03-01 10:00", "A", 10.0, 1.0),
        ("2015-03-01 10:30", "A", 20.0, 2.0),
        ("2015-03-01 10:30", "A", 20.0, 8.0),  # simultaneous: each 10:30 trip must not see the other
        ("2015-03-01 10:45", "A", 1000.0, 0.0),  # later: the 10:30 row must not see it
        ("2015-03-01 10:30", "B", 500.0, 0.0),  # another company: never in A's features
        ("2015-03-01 11:00", "A", 30.0, 3.0),
    ])
    table = compute_entity_features(trips, PROBLEM, "company")
    at_1030 = row_at(table, "company", "A", "2015-03-01 10:30Z")
    assert (at_1030["trips_1h"], at_1030["mean_fare_1h"], at_1030["mean_tip_rate_1h"]) == (1.0, 10.0, 0.1)
    at_1045 = row_at(table, "company", "A", "2015-03-01 10:45Z")
    assert (at_1045["trips_1h"], at_1045["mean_fare_1h"]) == (3.0, pytest.approx(50 / 3))
    # 11:00 - 1h is 10:00 exactly: the window is [t - 1h, t), so the 10:00 trip is in it.
    at_1100 = row_at(table, "company", "A", "2015-03-01 11:00Z")
    assert (at_1100["trips_1h"], at_1100["mean_fare_1h"]) == (4.0, pytest.approx(1050 / 4))
    first = row_at(table, "company", "A", "2015-03-01 10:00Z")
    assert first["trips_7d"] == 0.0 and np.isnan(first["mean_fare_7d"])


def test_the_snapshot_row_counts_every_trip_before_it_the_latest_included() -> None:
    trips = frame([
        ("2015-03-01 10:00", "A", 10.0, 1.0),
        ("2015-03-01 10:30", "A", 20.0, 2.0),
        ("2015-02-01 09:00", "B", 40.0, 0.0),  # quiet for a month before the snapshot
        ("2015-03-01 10:30", None, 5.0, 0.0),
    ])
    as_of = pd.Timestamp("2015-03-01 10:30:01Z")
    table = compute_entity_features(trips, PROBLEM, "company", as_of=as_of)
    snapshot = table[table[EVENT_TIMESTAMP] == as_of].set_index("company")
    assert sorted(snapshot.index) == ["(unknown)", "A", "B"]
    # A's last trip (10:30) is in its snapshot, though no trip row of A ever sees it.
    assert (snapshot.loc["A", "trips_1h"], snapshot.loc["A", "mean_fare_1h"]) == (2.0, 15.0)
    assert row_at(table, "company", "A", "2015-03-01 10:30Z")["trips_1h"] == 1.0
    assert snapshot.loc["(unknown)", "trips_1h"] == 1.0
    # B had no trip within 7 days: zero, and no mean, rather than the counts of its last busy day.
    assert snapshot.loc["B", "trips_7d"] == 0.0 and np.isnan(snapshot.loc["B", "mean_fare_7d"])
    # The trip rows are exactly those of a table without a snapshot.
    without = compute_entity_features(trips, PROBLEM, "company")
    pd.testing.assert_frame_equal(table[table[EVENT_TIMESTAMP] < as_of].reset_index(drop=True), without)
    with pytest.raises(FeatureError, match="snapshot time 2015-03-01T10:30:00.*must be after the last trip"):
        compute_entity_features(trips, PROBLEM, "company", as_of=pd.Timestamp("2015-03-01 10:30Z"))


def test_a_tip_rate_over_a_zero_fare_is_missing_instead_of_poisoning_the_mean() -> None:
    trips = frame([
        ("2015-03-01 10:00", "A", 0.0, 2.0),  # tips / fare = inf
        ("2015-03-01 10:05", "A", 0.0, 0.0),  # tips / fare = NaN
        ("2015-03-01 10:10", "A", 10.0, 3.0),
        ("2015-03-01 10:20", "A", 12.0, 1.0),
    ])
    table = compute_entity_features(trips, PROBLEM, "company")
    only_zero_fares = row_at(table, "company", "A", "2015-03-01 10:10Z")
    assert only_zero_fares["trips_1h"] == 2.0, "the trips still count"
    assert np.isnan(only_zero_fares["mean_tip_rate_1h"]), "no trip in the window has a tip rate"
    assert only_zero_fares["mean_fare_1h"] == 0.0
    last = row_at(table, "company", "A", "2015-03-01 10:20Z")
    assert (last["trips_1h"], last["mean_tip_rate_1h"]) == (3.0, pytest.approx(0.3))


def test_missing_entity_values_share_the_missing_key_and_its_own_history(trips: pd.DataFrame) -> None:
    # The sample has trips without a company but none without a community area: remove some.
    trips = trips.copy()
    trips.loc[trips.index[1000:1600:3], "pickup_community_area"] = pd.NA  # ingest sorted the trips by time
    without_area = trips[trips["pickup_community_area"].isna()]
    table = compute_entity_features(trips, PROBLEM, "pickup_community_area")
    unknown = table[table["pickup_community_area"] == -1]
    assert list(unknown[EVENT_TIMESTAMP]) == sorted(without_area[TS].unique())
    for window in SPEC.windows:
        for when, count in zip(unknown[EVENT_TIMESTAMP], unknown[f"trips_{window}"], strict=True):
            earlier = (without_area[TS] < when) & (without_area[TS] >= when - pd.Timedelta(window))
            assert count == earlier.sum(), f"the missing key at {when} must count only trips without an area"
    assert unknown["trips_1h"].sum() > 0, "the missing key should have some history to check"


def test_entity_key_values_is_the_one_missing_key_rule_for_typed_frames_and_requests() -> None:
    areas = entity_key_values(pd.Series(pd.array([8, None], dtype="Int64")), PROBLEM, "pickup_community_area")
    assert (list(areas), str(areas.dtype)) == ([8, -1], "int64")
    as_json = entity_key_values(pd.Series([8.0, None]), PROBLEM, "pickup_community_area")
    assert (list(as_json), str(as_json.dtype)) == ([8, -1], "int64")
    companies = entity_key_values(pd.Series(["Flash Cab", None]), PROBLEM, "company")
    assert (list(companies), str(companies.dtype)) == (["Flash Cab", "(unknown)"], "string")


@pytest.mark.parametrize("entity", PROBLEM.entities)
def test_one_row_per_entity_and_trip_time_sorted_with_the_contract_dtypes(
    trips: pd.DataFrame, tables: dict[str, pd.DataFrame], entity: str
) -> None:
    table = tables[entity]
    keys = trips[entity].fillna(SPEC.missing_keys[entity])
    assert len(table) == len(pd.DataFrame({"k": keys, "t": trips[TS]}).drop_duplicates())
    assert list(table.columns) == [entity, EVENT_TIMESTAMP, *feature_columns(PROBLEM)]
    assert str(table[entity].dtype) == ("int64" if entity == "pickup_community_area" else "string")
    assert str(table[EVENT_TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert all(str(table[c].dtype) == "float64" for c in feature_columns(PROBLEM))
    assert table.equals(table.sort_values([entity, EVENT_TIMESTAMP]).reset_index(drop=True))
    assert table[[c for c in table if c.startswith("trips_")]].notna().all().all()


def test_feature_columns_lists_each_aggregate_over_each_window() -> None:
    assert feature_columns(PROBLEM) == [
        "trips_1h", "trips_24h", "trips_7d",
        "mean_fare_1h", "mean_fare_24h", "mean_fare_7d",
        "mean_tip_rate_1h", "mean_tip_rate_24h", "mean_tip_rate_7d",
    ]


@pytest.mark.parametrize("entity", PROBLEM.entities)
def test_every_training_trip_joins_a_feature_row_at_its_own_time_so_the_ttl_drops_none(
    taxi_splits: tuple[Path, Path], entity: str
) -> None:
    # Feast's point-in-time join: the latest feature row with event_timestamp <= the trip's time, within the TTL.
    train = pd.read_parquet(taxi_splits[0])
    table = compute_entity_features(train, PROBLEM, entity)
    rows = pd.DataFrame({entity: entity_key_values(train[entity], PROBLEM, entity), TS: train[TS]})
    joined = pd.merge_asof(rows.sort_values(TS), table.sort_values(EVENT_TIMESTAMP), left_on=TS,
                           right_on=EVENT_TIMESTAMP, by=entity, tolerance=pd.Timedelta(SPEC.ttl))
    assert joined[EVENT_TIMESTAMP].notna().all()
    assert (joined[EVENT_TIMESTAMP] == joined[TS]).all()


def test_write_feature_tables_writes_one_parquet_per_entity(
    taxi_splits: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="slipway.components.feature_aggregates"):
        paths = write_feature_tables(taxi_splits[0], PROBLEM, tmp_path / "features")
    assert paths == {entity: tmp_path / "features" / f"{entity}.parquet" for entity in PROBLEM.entities}
    assert files_in(tmp_path / "features") == ["company.parquet", "pickup_community_area.parquet"]
    train = pd.read_parquet(taxi_splits[0])
    expected = compute_entity_features(train, PROBLEM, "company", as_of=train[TS].max() + SNAPSHOT_DELAY)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["company"]), expected)
    assert len(expected) == len(compute_entity_features(train, PROBLEM, "company")) + train["company"].nunique(
        dropna=False), "one snapshot row per company, the missing company's included"
    assert "company: " in caplog.text and "trips/s" in caplog.text


@pytest.mark.parametrize("column", [TS, "company"])
def test_an_input_without_the_timestamp_or_an_entity_is_named_and_nothing_is_written(
    taxi_splits: tuple[Path, Path], tmp_path: Path, column: str
) -> None:
    source = tmp_path / "trips.parquet"
    pd.read_parquet(taxi_splits[0]).drop(columns=[column]).to_parquet(source)
    with pytest.raises(FeatureError, match=f"^{source}: missing column '{column}'"):
        write_feature_tables(source, PROBLEM, tmp_path / "features")
    assert not (tmp_path / "features").exists()


@pytest.mark.parametrize(
    ("of", "expected"),
    [
        ("tip / fare", "feature_store aggregate 'mean_tip_rate': of 'tip / fare' cannot be evaluated"),
        ("company", "feature_store aggregate 'mean_tip_rate': of 'company' must give a number per trip, got string"),
    ],
)
def test_an_aggregate_whose_expression_fails_is_named(
    taxi_splits: tuple[Path, Path], tmp_path: Path, of: str, expected: str
) -> None:
    aggregates = (*SPEC.aggregates[:2], AggregateSpec("mean_tip_rate", "mean", of))
    problem = dataclasses.replace(PROBLEM, feature_store=dataclasses.replace(SPEC, aggregates=aggregates))
    with pytest.raises(FeatureError) as caught:
        write_feature_tables(taxi_splits[0], problem, tmp_path)
    assert str(caught.value).startswith(f"{taxi_splits[0]}: {expected}")


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    source.write_text("trip_start_timestamp,company\n")
    with pytest.raises(FeatureError, match=f"^{source}: not a readable Parquet file of trips"):
        write_feature_tables(source, PROBLEM, tmp_path / "features")


def test_a_problem_without_a_feature_store_or_an_unknown_entity_is_refused() -> None:
    trips = frame([("2015-03-01 10:00", "A", 10.0, 1.0)])
    with pytest.raises(FeatureError, match="problem 'chicago_taxi' has no feature_store section"):
        compute_entity_features(trips, dataclasses.replace(PROBLEM, feature_store=None), "company")
    with pytest.raises(FeatureError, match=r"'fare' is not an entity of problem 'chicago_taxi' \("):
        compute_entity_features(trips, PROBLEM, "fare")

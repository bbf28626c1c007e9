"""The feature components in a real kfp.local run: aggregates -> Feast apply -> point-in-time training set -> online."""

from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl

from slipway.components.catalog import feast_apply, feature_tables, ingest, materialize, training_set
from slipway.components.feature_aggregates import compute_entity_features, feature_columns
from slipway.components.feature_store import StoreConfig, full_feature_name, online_features, open_store, view_name
from slipway.pipelines.local import LocalRun, run_local
from slipway.problem import load_problem

PROBLEM = load_problem("chicago_taxi")


@dsl.pipeline(name="features-under-test")
def features_under_test(source_uri: str, feature_repo: str) -> dsl.Dataset:
    ingested = ingest(source_uri=source_uri, problem="chicago_taxi")
    tables = feature_tables(train_data=ingested.outputs["train_data"], eval_data=ingested.outputs["eval_data"],
                            problem="chicago_taxi")
    store = {"problem": "chicago_taxi", "feature_repo": feature_repo, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER}
    applied = feast_apply(tables=tables.outputs["tables"], **store)
    materialize(tables=tables.outputs["tables"], registry=applied.output, **store)
    return training_set(trips=ingested.outputs["train_data"], tables=tables.outputs["tables"],
                        problem="chicago_taxi").outputs["features"]


@pytest.fixture(scope="module")
def run(taxi_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalRun, Path]:
    repo = tmp_path_factory.mktemp("feature_repo")
    root = tmp_path_factory.mktemp("runs")
    return run_local(features_under_test, {"source_uri": str(taxi_csv), "feature_repo": str(repo)}, root), repo


@pytest.mark.pipeline
def test_the_training_set_holds_every_train_trip_with_its_point_in_time_features(run, taxi_splits) -> None:
    local, _ = run
    joined = pd.read_parquet(local.outputs["Output"].path)
    trips = pd.read_parquet(taxi_splits[0])
    assert len(joined) == len(trips), "every trip has a feature row at its own time: the TTL drops none"
    for entity in PROBLEM.entities:
        table = compute_entity_features(pd.concat([trips, pd.read_parquet(taxi_splits[1])]), PROBLEM, entity)
        row = joined.iloc[len(joined) // 2]
        key = table[entity] == (row[entity] if pd.notna(row[entity]) else PROBLEM.feature_store.missing_keys[entity])
        expected = table[key & (table["event_timestamp"] <= row[PROBLEM.timestamp.column])].iloc[-1]
        for name in feature_columns(PROBLEM):
            assert joined.iloc[len(joined) // 2][full_feature_name(f"{view_name(entity)}:{name}")] == pytest.approx(
                expected[name], nan_ok=True), (entity, name)


@pytest.mark.pipeline
def test_online_features_after_materialize_equal_the_offline_point_in_time_vector(run) -> None:
    local, repo = run
    store = open_store(StoreConfig(repo_dir=repo), PROBLEM)
    tables = local.run_dir / "feature-tables" / "tables"
    table = pd.read_parquet(tables / "company.parquet")
    latest = table[table["event_timestamp"] == table.groupby("company")["event_timestamp"].transform("max")]
    busiest = latest.sort_values("trips_7d").iloc[-1]
    online = online_features(store, PROBLEM, {"company": [busiest["company"]], "pickup_community_area": [8]})
    assert online[view_name("company") + "__found"] == [True]
    for name in feature_columns(PROBLEM):
        value, expected = online[f"{view_name('company')}__{name}"][0], busiest[name]
        # A mean over no trips is NaN offline and null (None) online: the same missing value.
        assert value is None if pd.isna(expected) else value == pytest.approx(expected), name


@pytest.mark.pipeline
def test_slipway_features_looks_up_a_known_and_an_unknown_key(run) -> None:
    from click.testing import CliRunner

    from slipway.pipelines.cli import cli

    local, repo = run
    table = pd.read_parquet(local.run_dir / "feature-tables" / "tables" / "company.parquet")
    recent = table.sort_values("event_timestamp").iloc[-1]["company"]  # materialized: its rows are within the TTL
    result = CliRunner().invoke(cli, ["features", "--feature-repo", str(repo), "--entity", f"company={recent}",
                                      "--entity", "pickup_community_area=999"])
    assert result.exit_code == 0, result.output
    assert f"company={recent!r}:\n  trips_1h" in result.output
    assert "pickup_community_area=999: unknown to the online store" in result.output
    wrong = CliRunner().invoke(cli, ["features", "--feature-repo", str(repo), "--entity", "driver=7"])
    assert wrong.exit_code == 2 and "NAME one of ['pickup_community_area', 'company']" in wrong.output

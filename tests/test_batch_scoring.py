"""Batch scoring (components/batch_scoring.py): the model's own scores, in bounded memory, all or nothing.

Every test scores rows of the real taxi training sets (with their point-in-time Feast features) with
the real trained model of `taxi_model`; the big inputs are in bench/batch_scoring.py, not here.
"""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

from slipway.components.batch_scoring import (
    JOIN_DROPPED,
    MANIFEST_FILE,
    REJECTS_FILE,
    ROW_ID,
    BatchInputError,
    ChunkScorer,
    OutputConflictError,
    ScoringConfig,
    read_manifest,
    read_predictions,
    read_rejects,
    score_file,
)
from slipway.components.model_artifact import load_model
from slipway.pipelines.cli import cli


@pytest.fixture(scope="module")
def rows(taxi_training_sets: tuple[Path, Path]) -> pd.DataFrame:
    """The eval training set: 2,000 real trips with every column the model reads."""
    return pd.read_parquet(taxi_training_sets[1])


@pytest.fixture(scope="module")
def rows_file(rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.parquet"
    rows.to_parquet(path, row_group_size=500)
    return path


def score(source: Path, model: Path, output: Path, **config) -> object:
    return score_file(source, model, output, model_version="7", run_id="run-1", config=ScoringConfig(**config))


def test_scores_are_the_models_own_and_every_row_names_the_model_version_and_run(
        rows: pd.DataFrame, rows_file: Path, taxi_model: Path, tmp_path: Path) -> None:
    result = score(rows_file, taxi_model, tmp_path / "scores", chunk_rows=500, batch_size=128)
    predictions = read_predictions(tmp_path / "scores")
    assert (result.rows_in, result.scored, result.rejected) == (len(rows), len(rows), 0)
    np.testing.assert_allclose(predictions["score"], load_model(taxi_model).predict_proba(rows), atol=1e-6)
    assert (predictions["model_version"] == "7").all() and (predictions["run_id"] == "run-1").all()
    # The input's columns come through in the input's order, so a score can be traced to its trip.
    pd.testing.assert_frame_equal(predictions[list(rows.columns)], rows)
    # Readers that skip _-prefixed names (pandas, pyarrow) see the predictions alone.
    assert len(pd.read_parquet(tmp_path / "scores")) == len(rows)


def test_the_features_are_exactly_what_preprocessing_transform_gives(rows: pd.DataFrame, taxi_model: Path) -> None:
    """The vectorised transform is the training transform: same standardisation, indicators and category ids,
    also for a never-seen company, a missing one, an area stored as float, and a missing numeric."""
    model = load_model(taxi_model)
    odd = rows.head(300).copy()
    odd.loc[odd.index[0], "company"] = "A Cab Company Never Seen"
    odd.loc[odd.index[1], "company"] = None
    odd["pickup_community_area"] = odd["pickup_community_area"].astype("float64")
    odd.loc[odd.index[2], "pickup_community_area"] = math.nan
    odd.loc[odd.index[3], "trip_miles"] = math.nan
    numeric, categorical, reasons = ChunkScorer(model).transform(pa.Table.from_pandas(odd))
    expected_numeric, expected_categorical = model.preprocessing.transform(odd)
    assert torch.equal(numeric, expected_numeric)
    assert torch.equal(categorical, expected_categorical)
    assert not reasons.any()  # all of these the model handles by design: none is a reject


def test_chunking_does_not_change_the_scores(rows_file: Path, taxi_model: Path, tmp_path: Path) -> None:
    score(rows_file, taxi_model, tmp_path / "small", chunk_rows=37, batch_size=16)
    score(rows_file, taxi_model, tmp_path / "large", chunk_rows=100_000)
    small, large = read_predictions(tmp_path / "small"), read_predictions(tmp_path / "large")
    assert len(read_manifest(tmp_path / "small")["parts"]) == math.ceil(len(large) / 37)
    np.testing.assert_allclose(small["score"], large["score"], atol=1e-6)
    pd.testing.assert_frame_equal(small.drop(columns="score"), large.drop(columns="score"))


def test_the_scorer_holds_one_chunk_at_a_time_and_rows_the_join_drops_are_rejects(
        rows: pd.DataFrame, rows_file: Path, taxi_model: Path, tmp_path: Path) -> None:
    """The join (Feast's point-in-time join in the pipeline) sees at most chunk_rows rows per call; it may drop
    rows (Feast drops rows past the TTL) and reorder them: the dropped ones are rejected, the rest keep their
    input order and their own scores."""
    seen = []

    def join(chunk: pd.DataFrame) -> pd.DataFrame:
        seen.append(len(chunk))
        kept = chunk[chunk[ROW_ID] % 10 != 0]  # drops every tenth row
        return kept.iloc[::-1]  # and answers in another order

    result = score_file(rows_file, taxi_model, tmp_path / "scores", model_version="7", run_id="run-1", join=join,
                        config=ScoringConfig(chunk_rows=300))
    assert max(seen) == 300 and sum(seen) == len(rows)
    dropped = rows.iloc[np.flatnonzero(np.arange(len(rows)) % 300 % 10 == 0)]
    assert result.rejects_by_reason == {JOIN_DROPPED: len(dropped)}
    assert result.rows_in == result.scored + result.rejected == len(rows)
    rejects = read_rejects(tmp_path / "scores")
    pd.testing.assert_frame_equal(rejects.drop(columns="reason"), dropped.reset_index(drop=True))
    predictions = read_predictions(tmp_path / "scores")
    kept = rows.drop(index=dropped.index)
    pd.testing.assert_frame_equal(predictions[list(rows.columns)], kept.reset_index(drop=True))
    np.testing.assert_allclose(predictions["score"], load_model(taxi_model).predict_proba(kept), atol=1e-6)


def test_rows_that_cannot_be_scored_are_rejected_with_the_column_and_the_reason(
        rows: pd.DataFrame, taxi_model: Path, tmp_path: Path) -> None:
    """A word in a numeric column, an infinite number, a missing fare (the problem's required feature) are
    rejects; a missing trip_miles (imputed) and a never-seen company (the unknown id) are scored."""
    csv = rows.head(200).copy()
    csv["trip_miles"] = csv["trip_miles"].astype(object)
    csv.loc[csv.index[0], "trip_miles"] = "three"
    csv.loc[csv.index[1], "trip_seconds"] = math.inf
    csv.loc[csv.index[[2, 3]], "fare"] = math.nan
    csv.loc[csv.index[4], "trip_miles"] = None
    csv.loc[csv.index[5], "company"] = "A Cab Company Never Seen"
    csv.to_csv(tmp_path / "trips.csv", index=False)

    result = score(tmp_path / "trips.csv", taxi_model, tmp_path / "scores", chunk_rows=64)
    assert result.rejects_by_reason == {"trip_miles: not a number": 1, "trip_seconds: not finite": 1,
                                        "fare: missing (required)": 2}
    assert (result.rows_in, result.scored, result.rejected) == (200, 196, 4)
    rejects = read_rejects(tmp_path / "scores")
    assert rejects["reason"].tolist() == ["trip_miles: not a number", "trip_seconds: not finite",
                                          "fare: missing (required)", "fare: missing (required)"]
    assert rejects["trip_miles"].iloc[0] == "three"  # the row as it came, to be fixed and rescored
    predictions = read_predictions(tmp_path / "scores")
    assert len(predictions) == 196 and predictions["score"].between(0, 1).all()
    assert predictions["trip_miles"].dtype == "float64"  # the scored rows carry the numbers the model read
    assert result.metrics()["rejected: fare: missing (required)"] == 2


def test_an_input_that_cannot_be_scored_names_the_file_and_the_column_and_writes_nothing(
        rows: pd.DataFrame, taxi_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match=r"trips\.parquet: not found"):
        score(tmp_path / "trips.parquet", taxi_model, tmp_path / "scores")
    rows.drop(columns=["company"]).head(50).to_csv(tmp_path / "no_company.csv", index=False)
    with pytest.raises(BatchInputError, match=r"no_company\.csv: no column\(s\) \['company'\], which the model"):
        score(tmp_path / "no_company.csv", taxi_model, tmp_path / "scores")
    raw = rows.loc[:, ~rows.columns.str.contains("__")].head(50)
    raw.to_parquet(tmp_path / "raw.parquet")
    with pytest.raises(BatchInputError, match=r"raw\.parquet lacks the point-in-time feature column\(s\) "
                                              r"\['pickup_community_area_stats__trips_1h', .*join them first"):
        score(tmp_path / "raw.parquet", taxi_model, tmp_path / "scores")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_company.csv", "raw.parquet"]


CRASHING_SCORER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from slipway.components.batch_scoring import ScoringConfig, score_file

    def slow_join(chunk):
        time.sleep(0.2)  # a slow feature store: the run is killed between chunks
        return chunk

    source, model, output = sys.argv[1:]
    score_file(source, Path(model), output, model_version="7", run_id="crashed", join=slow_join,
               config=ScoringConfig(chunk_rows=40))
""")


def test_a_scorer_killed_mid_run_leaves_the_previous_output_whole_and_a_rerun_completes(
        rows: pd.DataFrame, rows_file: Path, taxi_model: Path, tmp_path: Path) -> None:
    output = tmp_path / "scores"
    score_file(rows_file, taxi_model, output, model_version="6", run_id="yesterday")
    scorer = subprocess.Popen([sys.executable, "-c", CRASHING_SCORER, str(rows_file), str(taxi_model), str(output)])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".scores.scoring-*/part-00002-*.parquet")):
            assert scorer.poll() is None, "the scorer ended before it could be killed"
            assert time.monotonic() < deadline, "the scorer wrote no parts in 60 s"
            time.sleep(0.05)
        scorer.send_signal(signal.SIGKILL)
    finally:
        scorer.kill()
        scorer.wait()
    assert list(tmp_path.glob(".scores.scoring-*"))  # what it had written is in its hidden staging directory
    assert set(read_predictions(output)["run_id"]) == {"yesterday"}  # the old output is untouched
    assert read_manifest(output)["rows_in"] == len(rows)

    result = score_file(rows_file, taxi_model, output, model_version="7", run_id="today",
                        config=ScoringConfig(chunk_rows=400))
    predictions = read_predictions(output)
    assert result.scored == len(predictions) == len(rows)
    assert set(predictions["run_id"]) == {"today"} and set(predictions["model_version"]) == {"7"}
    np.testing.assert_allclose(predictions["score"], load_model(taxi_model).predict_proba(rows), atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]  # the killed run's leftovers are gone
    assert {MANIFEST_FILE, REJECTS_FILE} <= {p.name for p in output.iterdir()}


def test_slipway_score_scores_a_file_and_says_where_everything_is(rows: pd.DataFrame, taxi_model: Path,
                                                                  tmp_path: Path) -> None:
    rows.head(300).to_csv(tmp_path / "trips.csv", index=False)
    result = CliRunner().invoke(cli, ["score", "--data", str(tmp_path / "trips.csv"), "--model", str(taxi_model),
                                      "--output", str(tmp_path / "scores"), "--chunk-rows", "100",
                                      "--run-id", "nightly-1"])
    assert result.exit_code == 0, result.output
    assert "Scored 300 of 300 rows with model version sha256:" in result.output
    assert f"predictions: {tmp_path / 'scores'} (3 part(s))" in result.output
    assert f"rejects:     {tmp_path / 'scores' / REJECTS_FILE} (0 row(s))" in result.output
    assert set(read_predictions(tmp_path / "scores")["run_id"]) == {"nightly-1"}

    rows.drop(columns=["fare"]).head(10).to_csv(tmp_path / "no_fare.csv", index=False)
    result = CliRunner().invoke(cli, ["score", "--data", str(tmp_path / "no_fare.csv"), "--model", str(taxi_model),
                                      "--output", str(tmp_path / "bad")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'no_fare.csv'}: no column(s) ['fare'], which the model reads" in result.output


def score_cli(*args: str):
    return CliRunner().invoke(cli, ["score", *args])


def test_a_mistyped_output_directory_that_scoring_did_not_write_survives_with_its_files(
        rows: pd.DataFrame, taxi_model: Path, tmp_path: Path) -> None:
    rows.head(50).to_csv(tmp_path / "trips.csv", index=False)
    home_data = tmp_path / "data"  # `--output ~/data` meant as `--output ~/data/scores`
    (home_data / "thesis").mkdir(parents=True)
    (home_data / "thesis" / "draft.tex").write_text("years of work")
    (home_data / "notes.txt").write_text("keep")
    result = score_cli("--data", str(tmp_path / "trips.csv"), "--model", str(taxi_model), "--output", str(home_data))
    assert result.exit_code == 2
    assert (f"Invalid value for --output: {home_data}: is a directory of 2 entries that is no Slipway scoring "
            f"output (no {MANIFEST_FILE} manifest of its own); scoring would replace it: choose another output path, "
            "or pass --overwrite to replace it") in result.output
    assert (home_data / "thesis" / "draft.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "trips.csv"], "no staging directory either"


def test_an_output_that_is_the_input_or_holds_it_is_refused_even_with_overwrite(
        rows: pd.DataFrame, rows_file: Path, taxi_model: Path, tmp_path: Path) -> None:
    rows.head(50).to_csv(tmp_path / "trips.csv", index=False)
    before = (tmp_path / "trips.csv").read_bytes()
    same = score_cli("--data", str(tmp_path / "trips.csv"), "--model", str(taxi_model),
                     "--output", str(tmp_path / "trips.csv"), "--overwrite")
    assert same.exit_code == 2
    assert (f"{tmp_path / 'trips.csv'}: is the input ({tmp_path / 'trips.csv'}); scoring into it would destroy it: "
            "choose another output path") in same.output
    holder = score_cli("--data", str(tmp_path / "trips.csv"), "--model", str(taxi_model), "--output", str(tmp_path),
                       "--overwrite")
    assert holder.exit_code == 2
    assert (f"{tmp_path}: holds the input {tmp_path / 'trips.csv'}; replacing it would destroy the input: choose "
            "another output path") in holder.output
    assert (tmp_path / "trips.csv").read_bytes() == before
    with pytest.raises(OutputConflictError, match="is the input"):  # the library refuses it the same way
        score_file(rows_file, taxi_model, rows_file, model_version="7", run_id="r", overwrite=True)


def test_an_earlier_scoring_output_is_replaced_and_overwrite_replaces_anything_else(
        rows: pd.DataFrame, taxi_model: Path, tmp_path: Path) -> None:
    rows.head(50).to_csv(tmp_path / "trips.csv", index=False)
    data = ("--data", str(tmp_path / "trips.csv"), "--model", str(taxi_model))
    assert score_cli(*data, "--output", str(tmp_path / "scores"), "--run-id", "monday").exit_code == 0
    again = score_cli(*data, "--output", str(tmp_path / "scores"), "--run-id", "tuesday")
    assert again.exit_code == 0, again.output
    assert set(read_predictions(tmp_path / "scores")["run_id"]) == {"tuesday"}

    (tmp_path / "scores.parquet").write_text("not mine")
    refused = score_cli(*data, "--output", str(tmp_path / "scores.parquet"))
    assert refused.exit_code == 2
    assert (f"{tmp_path / 'scores.parquet'}: is a file, not a Slipway scoring output; scoring would replace it: "
            "choose another output path, or pass --overwrite to replace it") in refused.output
    replaced = score_cli(*data, "--output", str(tmp_path / "scores.parquet"), "--overwrite", "--run-id", "wed")
    assert replaced.exit_code == 0, replaced.output
    assert set(read_predictions(tmp_path / "scores.parquet")["run_id"]) == {"wed"}
    (tmp_path / "empty").mkdir()
    assert score_cli(*data, "--output", str(tmp_path / "empty")).exit_code == 0  # nothing to lose
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "scores", "scores.parquet", "trips.csv"]


def test_the_model_gets_half_the_cores_the_rest_feed_it_and_torch_threads_are_restored(
        rows_file: Path, taxi_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = ChunkScorer.score

    def counting(self: ChunkScorer, *tensors: torch.Tensor) -> np.ndarray:
        seen.append(torch.get_num_threads())
        return original(self, *tensors)

    monkeypatch.setattr(ChunkScorer, "score", counting)
    before = torch.get_num_threads()
    score(rows_file, taxi_model, tmp_path / "scores")
    assert seen and set(seen) == {max(1, os.cpu_count() // 2)}
    assert torch.get_num_threads() == before


def test_memory_does_not_grow_with_the_input(rows: pd.DataFrame, taxi_model: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow's memory while scoring 80 chunks stays flat, and below half the file's size: the reader keeps nothing
    it has handed on (pyarrow's default pre_buffer keeps every column chunk read so far, growing with the file)."""
    pd.concat([rows] * 40, ignore_index=True).to_parquet(tmp_path / "big.parquet", row_group_size=1000)
    allocated = []
    original = ChunkScorer.transform

    def recording(self: ChunkScorer, table: pa.Table) -> tuple:
        allocated.append(pa.total_allocated_bytes())
        return original(self, table)

    monkeypatch.setattr(ChunkScorer, "transform", recording)
    result = score(tmp_path / "big.parquet", taxi_model, tmp_path / "scores", chunk_rows=1000)
    assert result.rows_in == 40 * len(rows)
    assert max(allocated[40:]) < 1.25 * max(allocated[:20])  # what the chunks in flight hold, no more later
    assert max(allocated) < (tmp_path / "big.parquet").stat().st_size / 2


def test_on_object_storage_the_manifest_written_last_is_what_makes_a_run_visible(
        rows_file: Path, taxi_model: Path, s3_config, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3:// has no directory rename: the parts and rejects go up first, `_SUCCESS` last. A run whose upload fails
    before its manifest leaves the previous run's manifest, which lists only the previous run's parts."""
    from slipway import storage
    from tests.conftest import S3_BUCKET

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_config.s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_config.s3_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_config.s3_secret_key)
    monkeypatch.setenv("AWS_REGION", s3_config.s3_region)
    output = f"s3://{S3_BUCKET}/batch-scoring/scores"
    score_file(rows_file, taxi_model, output, model_version="6", run_id="yesterday",
               config=ScoringConfig(chunk_rows=1000))
    assert len(read_predictions(output)) == 2002 and set(read_predictions(output)["run_id"]) == {"yesterday"}

    real_upload = storage.upload

    def upload_failing_at_the_manifest(src: Path, uri: str, config=None) -> None:
        if uri.endswith(MANIFEST_FILE):
            raise storage.StorageError(f"cannot upload {src} to {uri}: connection reset")
        real_upload(src, uri, config)

    monkeypatch.setattr(storage, "upload", upload_failing_at_the_manifest)
    with pytest.raises(storage.StorageError, match="connection reset"):  # a run with rejects, this time
        score_file(rows_file, taxi_model, output, model_version="7", run_id="today",
                   config=ScoringConfig(chunk_rows=1000, required=("fare", "company")))
    predictions = read_predictions(output)
    assert len(predictions) == 2002 and set(predictions["run_id"]) == {"yesterday"}
    assert read_rejects(output).empty  # yesterday's rejects, not the failed run's


@pytest.fixture(scope="module")
def feature_repo(taxi_splits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Feast store of the sample's aggregates (as the training sets were joined from): its folder."""
    from slipway.components.feature_store import local_store
    from slipway.problem import load_problem

    repo = tmp_path_factory.mktemp("feast") / "feature_repo"
    local_store(taxi_splits, load_problem("chicago_taxi"), repo)
    return repo


def test_raw_trips_joined_point_in_time_score_as_their_training_set_rows_do(
        taxi_splits: tuple[Path, Path], feature_repo: Path, rows_file: Path, taxi_model: Path, tmp_path: Path) -> None:
    """No skew: the batch_scoring pipeline's join (Feast's point-in-time `training_set`, the training sets' own)
    run chunk by chunk on the raw eval trips gives the rows, hence the scores, of the eval training set;
    `slipway score --feature-repo` does the same join."""
    result = CliRunner().invoke(cli, ["score", "--data", str(taxi_splits[1]), "--model", str(taxi_model),
                                      "--output", str(tmp_path / "joined"), "--feature-repo", str(feature_repo),
                                      "--chunk-rows", "1000"])
    assert result.exit_code == 0, result.output
    assert "Scored 2,002 of 2,002 rows" in result.output
    score(rows_file, taxi_model, tmp_path / "prejoined")
    np.testing.assert_allclose(read_predictions(tmp_path / "joined")["score"],
                               read_predictions(tmp_path / "prejoined")["score"], atol=1e-6)

    result = CliRunner().invoke(cli, ["score", "--data", str(taxi_splits[1]), "--model", str(taxi_model),
                                      "--output", str(tmp_path / "unjoined")])
    assert result.exit_code == 1
    assert "lacks the point-in-time feature column(s)" in result.output
    assert "(or give --feature-repo DIR to join them here)" in result.output

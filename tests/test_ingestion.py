"""Ingest, on the real taxi trips: typed columns, a label, a split by time, atomic output, clear errors."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import GS_BUCKET, S3_BUCKET

from slipway.components.ingestion import IngestError, ingest_source
from slipway.problem import load_problem
from slipway.sample_data import SAMPLE_FILES
from slipway.storage import StorageConfig, StorageError, upload

PROBLEM = load_problem("chicago_taxi")


def outputs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "out" / "train.parquet", tmp_path / "out" / "eval.parquet"


def sample_rows(taxi_csv: Path, rows: int = 300) -> pd.DataFrame:
    """The first rows of the real sample, as the text the CSV holds."""
    return pd.read_csv(taxi_csv, dtype=str, nrows=rows)


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def assert_no_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == [], "a failed ingest must leave no file behind"


def test_the_sample_becomes_typed_splits_where_eval_is_strictly_the_future(taxi_csv: Path, tmp_path: Path) -> None:
    train_path, eval_path = outputs(tmp_path)
    result = ingest_source(str(taxi_csv), PROBLEM, train_path, eval_path)
    train, evaluation = pd.read_parquet(train_path), pd.read_parquet(eval_path)

    assert result.source_sha256 == SAMPLE_FILES["data.csv"]
    assert (result.rows_read, result.rows_without_label) == (10_000, 0)
    assert (len(train), len(evaluation)) == (result.train_rows, result.eval_rows)
    assert len(train) + len(evaluation) == 10_000
    assert 0.19 <= len(evaluation) / 10_000 <= 0.21
    ts = PROBLEM.timestamp.column
    assert train[ts].max() < evaluation[ts].min(), "a timestamp must never be in both splits"
    assert evaluation[ts].min() == pd.Timestamp(result.split_timestamp)
    assert str(train[ts].dtype) == "datetime64[ns, UTC]"
    assert (str(train["pickup_community_area"].dtype), str(train["fare"].dtype)) == ("Int64", "float64")


def test_the_label_is_the_problem_expression_on_the_typed_columns(taxi_csv: Path, tmp_path: Path) -> None:
    train_path, eval_path = outputs(tmp_path)
    ingest_source(str(taxi_csv), PROBLEM, train_path, eval_path)
    both = pd.concat([pd.read_parquet(train_path), pd.read_parquet(eval_path)])
    expected = (both["tips"] > 0.2 * both["fare"]).astype("int64")
    assert both[PROBLEM.label.name].tolist() == expected.tolist()
    assert 0.15 < both[PROBLEM.label.name].mean() < 0.35  # the sample's real base rate


def test_metadata_records_the_source_its_digest_and_the_split(taxi_csv: Path, tmp_path: Path) -> None:
    result = ingest_source(str(taxi_csv), PROBLEM, *outputs(tmp_path))
    meta = result.metadata("eval")
    assert meta["source"] == str(taxi_csv) and meta["sha256"] == SAMPLE_FILES["data.csv"]
    assert (meta["split"], meta["rows"]) == ("eval", result.eval_rows)
    assert PROBLEM.label.name in meta["columns"]


def test_a_parquet_source_gives_the_same_splits_as_its_csv(taxi_csv: Path, tmp_path: Path) -> None:
    parquet = tmp_path / "trips.parquet"
    pd.read_csv(taxi_csv).to_parquet(parquet)
    from_csv = ingest_source(str(taxi_csv), PROBLEM, tmp_path / "a" / "t.parquet", tmp_path / "a" / "e.parquet")
    from_parquet = ingest_source(str(parquet), PROBLEM, tmp_path / "b" / "t.parquet", tmp_path / "b" / "e.parquet")
    assert (from_parquet.train_rows, from_parquet.eval_rows) == (from_csv.train_rows, from_csv.eval_rows)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "e.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "e.parquet"))



def test_a_parquet_source_with_real_timestamps_gives_the_same_splits_as_its_epoch_seconds(
        taxi_csv: Path, tmp_path: Path) -> None:
    """A Parquet file whose timestamp column holds times (naive ones read as UTC), not numbers of seconds."""
    frame = pd.read_csv(taxi_csv)
    parquet = tmp_path / "trips.parquet"
    frame.assign(trip_start_timestamp=pd.to_datetime(frame["trip_start_timestamp"], unit="s")).to_parquet(parquet)
    ingest_source(str(taxi_csv), PROBLEM, tmp_path / "a" / "t.parquet", tmp_path / "a" / "e.parquet")
    ingest_source(str(parquet), PROBLEM, tmp_path / "b" / "t.parquet", tmp_path / "b" / "e.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "e.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "e.parquet"), check_dtype=False)

@pytest.mark.servers
def test_a_source_on_s3_is_read_through_the_s3_api(taxi_csv: Path, tmp_path: Path, s3_config: StorageConfig) -> None:
    uri = f"s3://{S3_BUCKET}/raw/trips.csv"
    upload(taxi_csv, uri, s3_config)
    result = ingest_source(uri, PROBLEM, *outputs(tmp_path), storage=s3_config)
    assert (result.source_uri, result.source_sha256) == (uri, SAMPLE_FILES["data.csv"])
    assert result.train_rows + result.eval_rows == 10_000


@pytest.mark.servers
def test_a_source_on_gcs_is_read_through_the_gcs_api(taxi_csv: Path, tmp_path: Path, gcs_emulator: str) -> None:
    uri = f"gs://{GS_BUCKET}/raw/trips.csv"
    upload(taxi_csv, uri)
    result = ingest_source(uri, PROBLEM, *outputs(tmp_path))
    assert result.source_sha256 == SAMPLE_FILES["data.csv"]


def test_rows_whose_label_cannot_be_decided_are_dropped_and_counted(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    frame.loc[[3, 10, 42], "tips"] = None
    result = ingest_source(write_csv(frame, tmp_path / "trips.csv"), PROBLEM, *outputs(tmp_path))
    assert result.rows_without_label == 3
    assert result.train_rows + result.eval_rows == len(frame) - 3


def test_a_missing_file_is_not_found_and_nothing_is_written(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such.csv")
    with pytest.raises(StorageError, match=f"^{missing} not found$"):
        ingest_source(missing, PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_an_empty_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(IngestError, match=f"^{tmp_path / 'empty.csv'}: the file is empty$"):
        ingest_source(str(tmp_path / "empty.csv"), PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_a_header_without_rows_is_named(taxi_csv: Path, tmp_path: Path) -> None:
    path = write_csv(sample_rows(taxi_csv).iloc[:0], tmp_path / "header.csv")
    with pytest.raises(IngestError, match="header.csv: has a header but no data rows"):
        ingest_source(path, PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_a_missing_column_is_named_with_the_file_and_the_problem(taxi_csv: Path, tmp_path: Path) -> None:
    path = write_csv(sample_rows(taxi_csv).drop(columns=["company"]), tmp_path / "trips.csv")
    with pytest.raises(IngestError) as caught:
        ingest_source(path, PROBLEM, *outputs(tmp_path))
    assert str(caught.value).startswith(f"{path}: missing column(s) ['company'] required by problem 'chicago_taxi'")
    assert_no_output(tmp_path)


def test_a_value_that_does_not_parse_names_the_column_row_and_value(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    frame.loc[6, "fare"] = "twelve dollars"
    path = write_csv(frame, tmp_path / "trips.csv")
    with pytest.raises(IngestError) as caught:
        ingest_source(path, PROBLEM, *outputs(tmp_path))
    assert str(caught.value) == (
        f"{path}: column 'fare': row 7 has 'twelve dollars', expected a float (1 bad value(s) in the column)"
    )
    assert_no_output(tmp_path)


def test_a_fraction_in_an_integer_column_is_refused_not_truncated(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    frame.loc[0, "trip_start_hour"] = "7.5"
    with pytest.raises(IngestError, match=r"column 'trip_start_hour': row 1 has '7.5', expected an integer"):
        ingest_source(write_csv(frame, tmp_path / "trips.csv"), PROBLEM, *outputs(tmp_path))


def test_a_row_without_a_timestamp_is_refused(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    frame.loc[[4, 5], "trip_start_timestamp"] = None
    expected = r"column 'trip_start_timestamp': 2 row\(s\) have no timestamp \(first at row 5\)"
    with pytest.raises(IngestError, match=expected):
        ingest_source(write_csv(frame, tmp_path / "trips.csv"), PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_a_source_at_a_single_instant_cannot_be_split_by_time(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    frame["trip_start_timestamp"] = "1382319000"
    with pytest.raises(IngestError, match="cannot split 300 labelled row"):
        ingest_source(write_csv(frame, tmp_path / "trips.csv"), PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_a_label_of_one_class_is_refused_with_the_counts(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    frame["tips"] = "0"  # nobody tipped: every row is 0
    path = write_csv(frame, tmp_path / "trips.csv")
    with pytest.raises(IngestError) as caught:
        ingest_source(path, PROBLEM, *outputs(tmp_path))
    assert str(caught.value) == (f"{path}: label 'tip_over_20pct' has one class: 300 rows of 0 and none of 1; "
                                 "training needs both")
    assert_no_output(tmp_path)


def test_a_split_whose_label_has_one_class_is_refused_naming_the_split(taxi_csv: Path, tmp_path: Path) -> None:
    frame = sample_rows(taxi_csv)
    newest = frame["trip_start_timestamp"].astype(int) >= frame["trip_start_timestamp"].astype(int).quantile(0.7)
    frame.loc[newest, "tips"] = "0"  # the eval split (the newest 20%) has no big tip
    path = write_csv(frame, tmp_path / "trips.csv")
    with pytest.raises(IngestError, match=r"^.*trips\.csv: label 'tip_over_20pct' has one class in the eval split: "
                                          r"\d\d rows of 0 and none of 1; training needs both$"):
        ingest_source(path, PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_a_column_named_twice_is_refused_not_renamed(taxi_csv: Path, tmp_path: Path) -> None:
    lines = taxi_csv.read_text().splitlines()[:51]
    header = lines[0].split(",")
    fare = header.index("fare")
    # The second `fare` holds other numbers: pandas would read it as `fare.1` and the first would silently win.
    rows = [f"{line},{i}" for i, line in enumerate(lines[1:])]
    path = tmp_path / "trips.csv"
    path.write_text("\n".join([lines[0] + f",{header[fare]}", *rows]) + "\n")
    with pytest.raises(IngestError) as caught:
        ingest_source(str(path), PROBLEM, *outputs(tmp_path))
    assert str(caught.value) == (f"{path}: column 'fare' appears 2 times in the header; every column needs a name of "
                                 "its own")

    table = pa.table([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["fare", "fare"])
    pq.write_table(table, tmp_path / "trips.parquet")
    with pytest.raises(IngestError, match="trips.parquet: column 'fare' appears 2 times in the header"):
        ingest_source(str(tmp_path / "trips.parquet"), PROBLEM, *outputs(tmp_path))
    assert_no_output(tmp_path)


def test_a_source_read_in_chunks_gives_the_splits_of_a_whole_read(taxi_csv: Path, tmp_path: Path) -> None:
    """Ingest streams the source: 777-row chunks (and the labelled rows sorted by time out of core) must give
    exactly the splits of one chunk, the sorted order included (equal times keep the file's order)."""
    whole = ingest_source(str(taxi_csv), PROBLEM, tmp_path / "a" / "train.parquet", tmp_path / "a" / "eval.parquet",
                          chunk_rows=100_000)
    chunked = ingest_source(str(taxi_csv), PROBLEM, tmp_path / "b" / "train.parquet", tmp_path / "b" / "eval.parquet",
                            chunk_rows=777)
    assert chunked == whole
    for split in ("train", "eval"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / f"{split}.parquet"),
                                      pd.read_parquet(tmp_path / "a" / f"{split}.parquet"))
    train = pd.read_parquet(tmp_path / "b" / "train.parquet")
    expected = pd.read_csv(taxi_csv).sort_values(PROBLEM.timestamp.column, kind="stable")
    assert train["fare"].tolist() == expected["fare"].head(len(train)).tolist()


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_bad_value_in_a_later_chunk_is_named_by_its_row_in_the_file(taxi_csv: Path, tmp_path: Path,
                                                                      suffix: str) -> None:
    rows = sample_rows(taxi_csv, 1000)
    rows.loc[876, "fare"] = "12,50"
    source = tmp_path / f"trips.{suffix}"
    if suffix == "csv":
        write_csv(rows, source)
    else:
        rows.to_parquet(source, index=False)
    with pytest.raises(IngestError, match=r"column 'fare': row 877 has '12,50', expected a float"):
        ingest_source(str(source), PROBLEM, *outputs(tmp_path), chunk_rows=100)
    assert_no_output(tmp_path)

"""Ingest: a CSV or Parquet source, by URI, to typed train and eval Parquet splits by time.

The first step of every pipeline, and the only one that sees raw data. It

1. fetches the source (local path, `gs://`, `s3://`, `http(s)://`) and records its sha256;
2. enforces the problem's column types, naming the file, column, row and value of anything
   that does not parse (nothing is coerced to missing in silence), and refuses a column name
   that appears twice;
3. computes the label from the problem's expression, dropping (and counting) rows where the
   label cannot be decided, and refuses a label of one class (in the source or either split);
4. splits by event time: the latest `eval_fraction` of rows are the eval split, and no
   timestamp appears in both, so the model is always judged on its future;
5. writes both splits atomically, together: on any error neither file exists.

It streams: the source is typed and labelled `chunk_rows` at a time into a scratch Parquet file, and
each split is then sorted by time out of core (DuckDB), so memory is bounded by the chunk, not by the
source (1M trips: about 0.5 GB peak).

`ingest_source` is the library; its KFP component is `slipway.components.catalog.ingest`.
"""


import collections
import csv
import dataclasses
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from slipway.atomic import atomic_outputs
from slipway.duckdb_sql import identifier, string_literal
from slipway.expression import ExpressionError, evaluate
from slipway.problem import Problem
from slipway.storage import StorageConfig, download

log = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"
CHUNK_ROWS = 200_000  # rows typed at a time: a CSV chunk read as text takes about 1 KB a row in pandas
SORT_MEMORY = "1GB"  # what DuckDB's sort of a split may hold before it spills to disk
_UNREADABLE = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError,
               pa.ArrowException)


class IngestError(ValueError):
    """The source cannot become a dataset; the message names the source and the column."""


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """What ingest read and wrote: becomes the Dataset artifacts' metadata."""

    source_uri: str
    source_sha256: str
    rows_read: int
    rows_without_label: int
    train_rows: int
    eval_rows: int
    split_timestamp: str  # eval = rows at or after this instant (ISO 8601, UTC)
    columns: list[str]

    def metadata(self, split: str) -> dict[str, Any]:
        """Artifact metadata for one split (`train` or `eval`)."""
        return {
            "source": self.source_uri,
            "sha256": self.source_sha256,
            "rows": self.train_rows if split == "train" else self.eval_rows,
            "split": split,
            "split_timestamp": self.split_timestamp,
            "rows_read": self.rows_read,
            "rows_without_label": self.rows_without_label,
            "columns": self.columns,
        }


def ingest_source(
    source_uri: str,
    problem: Problem,
    train_path: Path,
    eval_path: Path,
    storage: StorageConfig | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> IngestResult:
    """Reads `source_uri`, types it, labels it, splits it by time and writes both splits, in bounded memory.

    The source is read `chunk_rows` at a time: each chunk is typed and labelled (an error names its row in the
    whole file) and appended to a labelled Parquet file, keeping only each row's time and label in memory
    (9 bytes a row). The time boundary comes from those; then DuckDB writes each split ordered by time (input
    order among equal times, as a stable sort), spilling to disk past its memory limit."""
    with tempfile.TemporaryDirectory(prefix="slipway-ingest-") as workdir:
        local = Path(workdir) / (Path(source_uri.split("?")[0]).name or "source")
        log.info("fetching %s", source_uri)
        sha256 = download(source_uri, local, storage)
        labelled_path = Path(workdir) / "labelled.parquet"
        rows_read, times, labels, columns = _label_in_chunks(local, source_uri, problem, labelled_path, chunk_rows)
        log.info("read %d rows, %d columns from %s (sha256 %s)", rows_read, len(columns) - 1, source_uri, sha256[:12])
        require_both_classes(labels, problem, source_uri)
        boundary_ns = _time_boundary(times, problem, source_uri)
        is_eval = times >= boundary_ns
        require_both_classes(labels[~is_eval], problem, source_uri, "the train split")
        require_both_classes(labels[is_eval], problem, source_uri, "the eval split")
        with atomic_outputs([train_path, eval_path]) as (train_tmp, eval_tmp):
            _write_split_by_time(labelled_path, problem, f"< {boundary_ns}", train_tmp, workdir)
            _write_split_by_time(labelled_path, problem, f">= {boundary_ns}", eval_tmp, workdir)

    result = IngestResult(
        source_uri=source_uri,
        source_sha256=sha256,
        rows_read=rows_read,
        rows_without_label=rows_read - len(labels),
        train_rows=int((~is_eval).sum()),
        eval_rows=int(is_eval.sum()),
        split_timestamp=pd.Timestamp(boundary_ns, tz="UTC").isoformat(),
        columns=columns,
    )
    log.info(
        "wrote train %d rows (before %s), eval %d rows; %d rows had no label",
        result.train_rows, result.split_timestamp, result.eval_rows, result.rows_without_label,
    )
    return result


def _label_in_chunks(
    path: Path, source_uri: str, problem: Problem, out: Path, chunk_rows: int
) -> tuple[int, np.ndarray, pd.Series, list[str]]:
    """Types and labels the source chunk by chunk into the Parquet file `out`; returns the rows read, each kept
    row's time (ns since the epoch, UTC) and label, and the columns written."""
    rows_read, times, labels, writer = 0, [], [], None
    try:
        for chunk in _chunks(path, source_uri, chunk_rows):
            if chunk.empty:
                continue
            labelled, _ = add_label(enforce_types(chunk, problem, source_uri), problem, source_uri)
            rows_read += len(chunk)
            table = pa.Table.from_pandas(labelled, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table.cast(writer.schema))
            times.append(labelled[problem.timestamp.column].astype("int64").to_numpy())
            labels.append(labelled[problem.label.name].to_numpy(dtype="int8"))
            if rows_read > chunk_rows:
                log.info("%s: %d rows typed and labelled", source_uri, rows_read)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise IngestError(f"{source_uri}: has a header but no data rows")
    return rows_read, np.concatenate(times), pd.Series(np.concatenate(labels)), writer.schema.names


def _chunks(path: Path, source_uri: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The source's rows, `chunk_rows` at a time, as `read_table` reads them; each chunk's index is its rows'
    place in the whole file, so an error names the file's row."""
    is_parquet, _ = _open_source(path, source_uri)
    kind = "Parquet" if is_parquet else "CSV"
    try:
        if is_parquet:
            offset = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                chunk = batch.to_pandas()
                chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                offset += len(chunk)
                yield chunk
        else:
            yield from pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True, chunksize=chunk_rows)
    except _UNREADABLE as exc:
        raise IngestError(f"{source_uri}: not a readable {kind} file: {exc}") from exc


def _time_boundary(times: np.ndarray, problem: Problem, source_uri: str) -> int:
    """The eval split's first instant (ns): the latest `eval_fraction` of rows are eval, and no time is in both;
    the rule of `split_by_time`."""
    ordered = np.sort(times, kind="stable")
    eval_rows = max(1, math.ceil(len(ordered) * problem.eval_fraction))
    boundary = int(ordered[len(ordered) - eval_rows])
    if not (ordered < boundary).any():
        raise IngestError(
            f"{source_uri}: cannot split {len(ordered)} labelled row(s) by {problem.timestamp.column!r} into train "
            f"and eval (eval_fraction {problem.eval_fraction}); the source needs rows at more than one point in time"
        )
    return boundary


def _write_split_by_time(labelled: Path, problem: Problem, condition: str, out: Path, workdir: str) -> None:
    """The labelled rows whose time meets `condition` (in ns), ordered by time then input order, written by
    DuckDB's sort (out of core) through pyarrow, keeping the labelled file's schema and pandas types."""
    import duckdb

    schema = pq.read_schema(labelled)
    column = identifier(problem.timestamp.column)
    path = string_literal(labelled)
    with duckdb.connect(config={"memory_limit": SORT_MEMORY, "temp_directory": workdir}) as connection:
        reader = connection.sql(
            f"SELECT * EXCLUDE (file_row_number) FROM read_parquet({path}, file_row_number = true) "
            f"WHERE epoch_ns({column}) {condition} ORDER BY {column}, file_row_number"
        ).to_arrow_reader(batch_size=CHUNK_ROWS)
        with pq.ParquetWriter(out, schema) as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))


def read_table(path: Path, source_uri: str) -> pd.DataFrame:
    """Reads a CSV or Parquet file (by extension, else by Parquet's magic bytes) as strings/raw values.

    CSV cells are read as text so that `enforce_types` sees exactly what the file says.
    """
    is_parquet, _ = _open_source(path, source_uri)
    kind = "Parquet" if is_parquet else "CSV"
    try:
        if is_parquet:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True)
    except _UNREADABLE as exc:
        raise IngestError(f"{source_uri}: not a readable {kind} file: {exc}") from exc
    if frame.empty:
        raise IngestError(f"{source_uri}: has a header but no data rows")
    return frame


def _open_source(path: Path, source_uri: str) -> tuple[bool, list[str]]:
    """Whether the file is Parquet (by extension, else by its magic bytes) and its column names, refusing an empty
    file, an unreadable one and a column named twice."""
    name = path.name.lower()
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise IngestError(f"{source_uri}: the file is empty")
    is_parquet = name.endswith((".parquet", ".pq")) or head == PARQUET_MAGIC
    try:
        names = pq.read_schema(path).names if is_parquet else _csv_header(path)
    except _UNREADABLE as exc:
        raise IngestError(f"{source_uri}: not a readable {'Parquet' if is_parquet else 'CSV'} file: {exc}") from exc
    _refuse_duplicate_columns(names, source_uri)
    return is_parquet, names


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file as its first line spells them (pandas would rename a repeated `fare` to
    `fare.1`)."""
    with path.open(newline="", encoding="utf-8") as file:
        return [name.strip() for name in next(csv.reader(file), [])]


def _refuse_duplicate_columns(names: list[str], source_uri: str) -> None:
    """An `IngestError` naming the first column that appears more than once: which of them is the data is a guess
    this step does not make."""
    counts = collections.Counter(names)
    repeated = [name for name in counts if counts[name] > 1]
    if repeated:
        raise IngestError(f"{source_uri}: column {repeated[0]!r} appears {counts[repeated[0]]} times in the header; "
                          "every column needs a name of its own")


def require_both_classes(label: pd.Series, problem: Problem, source_uri: str, part: str = "") -> None:
    """An `IngestError` when `label` (0/1) has one class only: a model cannot learn from it, nor AUC judge it.
    `part` names the split checked ("" for the whole source)."""
    positives = int(label.sum())
    negatives = len(label) - positives
    if positives and negatives:
        return
    where = f" in {part}" if part else ""
    present, absent = (0, 1) if positives == 0 else (1, 0)
    raise IngestError(f"{source_uri}: label {problem.label.name!r} has one class{where}: {len(label):,} rows of "
                      f"{present} and none of {absent}; training needs both")


def enforce_types(frame: pd.DataFrame, problem: Problem, source_uri: str) -> pd.DataFrame:
    """Returns the declared columns, parsed to their declared types; anything else is an error."""
    missing = [c for c in problem.columns if c not in frame.columns]
    if missing:
        raise IngestError(
            f"{source_uri}: missing column(s) {missing} required by problem {problem.name!r} "
            f"({problem.source}); the file has {list(frame.columns)}"
        )
    extra = [c for c in frame.columns if c not in problem.columns]
    if extra:
        log.info("ignoring %d column(s) the problem does not declare: %s", len(extra), extra)

    typed = {}
    for column, kind in problem.columns.items():
        values = frame[column]
        if kind == "string":
            typed[column] = values.astype("string")
        elif kind == "timestamp":
            typed[column] = _parse_timestamp(values, problem, source_uri)
        else:
            typed[column] = _parse_number(values, kind, column, source_uri)
    return pd.DataFrame(typed)


def _parse_number(values: pd.Series, kind: str, column: str, source_uri: str) -> pd.Series:
    parsed = pd.to_numeric(values, errors="coerce")
    expected = "an integer" if kind == "integer" else "a float"
    _raise_on_first_bad(values, parsed.isna() & values.notna(), column, expected, source_uri)
    if kind == "float":
        return parsed.astype("float64")
    fractional = parsed.notna() & (parsed != parsed.round())
    _raise_on_first_bad(values, fractional, column, "an integer", source_uri)
    return parsed.round().astype("Int64")


def _parse_timestamp(values: pd.Series, problem: Problem, source_uri: str) -> pd.Series:
    column, unit = problem.timestamp.column, problem.timestamp.unit
    if values.isna().any():
        count = int(values.isna().sum())
        raise IngestError(
            f"{source_uri}: column {column!r}: {count} row(s) have no timestamp "
            f"(first at row {_row_number(values, values.isna())}); every row needs one for the time split"
        )
    if pd.api.types.is_datetime64_any_dtype(values):  # a Parquet file's own timestamps: already times (naive = UTC)
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    if unit == "iso8601":
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        _raise_on_first_bad(values, parsed.isna(), column, "an ISO 8601 timestamp", source_uri)
        return parsed
    numbers = pd.to_numeric(values, errors="coerce")
    _raise_on_first_bad(values, numbers.isna(), column, f"a number of {unit} since the epoch", source_uri)
    return pd.to_datetime(numbers, unit=unit, utc=True)


def _raise_on_first_bad(values: pd.Series, bad: pd.Series, column: str, expected: str, source_uri: str) -> None:
    if bad.any():
        first = bad.idxmax()
        raise IngestError(
            f"{source_uri}: column {column!r}: row {_row_number(values, bad)} has {values[first]!r}, "
            f"expected {expected} ({int(bad.sum())} bad value(s) in the column)"
        )


def _row_number(values: pd.Series, mask: pd.Series) -> int:
    """1-based data row of the first True in `mask` (the CSV line is this + 1, after the header): a chunk of the
    file keeps its rows' places as a RangeIndex."""
    first = mask.idxmax()
    if isinstance(values.index, pd.RangeIndex):
        return int(first) + 1
    return int(values.index.get_loc(first)) + 1


def add_label(frame: pd.DataFrame, problem: Problem, source_uri: str) -> tuple[pd.DataFrame, int]:
    """Adds the label column (0/1) and drops rows where the expression is undecided (a term is missing)."""
    # Nullable floats make a missing term propagate to <NA> instead of comparing as False.
    nullable = frame.astype({c: "Float64" for c, k in problem.columns.items() if k == "float"})
    try:
        label = evaluate(problem.label.expression, nullable)
    except (ExpressionError, TypeError, ValueError, ArithmeticError) as exc:  # a term of the wrong type
        raise IngestError(
            f"{problem.source}: label.expression {problem.label.expression!r} cannot be evaluated "
            f"on {source_uri}: {exc}"
        ) from exc
    if not isinstance(label, pd.Series) or not (pd.api.types.is_bool_dtype(label)):
        raise IngestError(
            f"{problem.source}: label.expression {problem.label.expression!r} must give true/false per row"
        )
    decided = label.notna()
    labelled = frame.loc[decided].copy()
    labelled[problem.label.name] = label[decided].astype("int64")
    return labelled, int((~decided).sum())


def split_by_time(
    frame: pd.DataFrame, problem: Problem, source_uri: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Train = rows before the boundary, eval = rows at or after it; one timestamp never spans both."""
    column = problem.timestamp.column
    ordered = frame.sort_values(column, kind="mergesort").reset_index(drop=True)
    eval_rows = max(1, math.ceil(len(ordered) * problem.eval_fraction))
    boundary = ordered[column].iloc[len(ordered) - eval_rows]
    is_eval = ordered[column] >= boundary
    train, evaluation = ordered.loc[~is_eval], ordered.loc[is_eval]
    if train.empty or evaluation.empty:
        raise IngestError(
            f"{source_uri}: cannot split {len(ordered)} labelled row(s) by {column!r} into train and eval "
            f"(eval_fraction {problem.eval_fraction}); the source needs rows at more than one point in time"
        )
    return train.reset_index(drop=True), evaluation.reset_index(drop=True), boundary

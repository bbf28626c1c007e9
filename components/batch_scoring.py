"""Batch scoring: a file of rows in, a Parquet dataset of scores out, in bounded memory, all or nothing.

    result = score_file("trips.parquet", Path("model"), "scores", model_version="7", run_id="run-1",
                        join=lambda rows: training_set(store, problem, rows))
    print(result.describe())
    predictions = read_predictions("scores")

The scorer streams the input, `ScoringConfig.chunk_rows` rows at a time (Parquet through
`ParquetFile.iter_batches` or `pyarrow.dataset`, CSV through `pyarrow.csv.open_csv`), so memory
is bounded by a few chunks whatever the input's size. For each chunk:

1. `join` (optional) adds columns, e.g. the point-in-time Feast features of each row's entity and
   timestamp (`feature_store.training_set`, the training sets' own join, so there is no skew). It
   gets a DataFrame of the input columns plus `ROW_ID` and must return the rows it kept, with that
   column; it may drop and reorder rows. A row it drops is rejected, not lost.
2. The model's features are taken from the chunk exactly as `Preprocessing.transform` takes them
   (same standardisation, missing indicators, vocabulary ids; `tests/test_batch_scoring.py` holds
   them equal), but vectorised: each categorical is dictionary-encoded and only its distinct values
   go through `category_key`, where `transform` walks every row in Python.
3. The model runs under `torch.inference_mode()` in batches of `batch_size` rows over tensors built
   once per chunk (on the GPU when there is one: the chunk is copied over once and only the scores
   come back).

Every core works: a reader thread reads the next chunks, `ScoringConfig.worker_threads` threads
transform them (join included; one thread when there is a join, which need not be thread-safe) and as
many write the part files of the chunks already scored, while the model scores this one (torch gets
half the cores, `ScoringConfig.torch_threads`). Arrow, numpy and torch release the GIL for their
work, so the threads run side by side. At most about 2 x workers + 2 chunks are in memory at once.

Rejects. What the model handles by design is scored: a missing numeric (imputed, with its missing
indicator), a missing or never-seen category (ids 0 and 1). A row is rejected, with a `reason`
naming the column and what is wrong, when it has a value that the preprocessing cannot turn into a
number ("trip_miles: not a number", "fare: not finite"), when a required feature is missing
("fare: missing (required)"; required = the model's problem's `features.required`, or
`ScoringConfig.required`), or when the join dropped it (`JOIN_DROPPED`). A row with several
problems is rejected for the first, in the model's feature order. `rows_in == scored + rejected`.
A column the model reads that the input lacks altogether is no reject but a `BatchInputError`
naming the file and the column(s), raised before anything is written.

Output layout (`output` is a directory; Parquet readers that skip `_`-prefixed names, pandas and
pyarrow included, read it as the prediction dataset):

    output/part-00000-<token>.parquet ...   the scored rows: the input's columns (or `keep_columns`),
                                            then `score`, `model_version`, `run_id`
    output/_rejects.parquet                 the rejected rows: the same input columns, then `reason`
    output/_SUCCESS                         the manifest (JSON: parts, counts, model version, run id)

Atomicity. Locally, everything is written into a hidden sibling directory of `output`
(`.<name>.scoring-<host>-<pid>-<hex>`), the manifest last; only then is the directory renamed to
`output` in one `os.replace`, so predictions and rejects appear together or not at all. An existing
`output` is replaced only then: it is renamed aside, the new one renamed in, the old one removed
(a reader between those two renames finds no output, never a mixed or partial one).

What may be replaced (`check_output`, before any work and again at publishing): only an earlier
scoring output (its `_SUCCESS` manifest says Slipway's scorer wrote it) or an empty directory. A
file or any other directory is refused unless `overwrite` is given (a mistyped `--output ~/data`
must not delete `~/data`), and the input itself or a directory holding it is refused even then. A crash
(even SIGKILL) leaves only the hidden directory; the next run for the same `output` on the same
host removes those whose process is gone. A failure that raises removes its own directory.

On object storage (`s3://`, `gs://`) there is no directory rename: the parts are written locally as
above, uploaded under the output URI, then the rejects, and the manifest `_SUCCESS` last.
A run's visibility point is its manifest's single PUT; readers must go through the manifest
(`read_predictions`), which lists exactly this run's parts. Part names carry a token unique to the
run (and so does the rejects file there, `_rejects-<token>.parquet`), so a crashed upload leaves
only files no manifest lists (orphans, never read; nothing deletes them), and the previous run's
manifest, parts and rejects stay valid until the new manifest replaces it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import resource
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

from slipway import storage
from slipway.components.model_artifact import LoadedModel, load_model
from slipway.components.preprocessing import MISSING_ID, UNKNOWN_ID, category_key

log = logging.getLogger(__name__)

ROW_ID = "__slipway_row"  # the input row number, given to `join` so that it can drop and reorder rows
SCORE, MODEL_VERSION, RUN_ID, REASON = "score", "model_version", "run_id", "reason"
REJECTS_FILE = "_rejects.parquet"
MANIFEST_FILE = "_SUCCESS"
MANIFEST_FORMAT = "slipway.batch_scoring/1"  # what an output's manifest says: the scorer wrote this directory
JOIN_DROPPED = "join: no feature row for the row's entity and time (dropped by the join)"
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv")
# Measured best on 2 CPU cores (bench/results/batch_scoring.md): a batch's activations stay in cache.
# A GPU wants large batches (REFERENCE.md's GPU anchor: throughput still grows at 65,536).
CPU_BATCH_SIZE = 4_096
GPU_BATCH_SIZE = 65_536

Join = Callable[[pd.DataFrame], pd.DataFrame]


class OutputConflictError(ValueError):
    """The output path holds data a scoring run must not replace: the input, or something Slipway did not write."""


class BatchInputError(ValueError):
    """The input cannot be scored at all: the message names the file and the column or what is wrong."""


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """How to score. The defaults were chosen with `bench/batch_scoring.py` on 2 CPU cores and on a 16-core
    machine with a GPU (bench/results/batch_scoring*.md)."""

    chunk_rows: int = 131_072  # rows read, joined, transformed and written at a time: memory is a few chunks
    batch_size: int = 0  # rows per model call; 0 = CPU_BATCH_SIZE on a CPU, GPU_BATCH_SIZE on a GPU
    threads: int = 0  # torch intra-op threads; 0 = half the cores (at least 1): the rest read, transform, write
    workers: int = 0  # threads transforming, and as many writing, chunks; 0 = a quarter of the cores, half on a GPU
    device: str = "auto"  # "auto" = cuda when available, else cpu; or "cpu", "cuda", "cuda:1"
    required: tuple[str, ...] | None = None  # features that must be present; None = the model problem's
    keep_columns: tuple[str, ...] | None = None  # input columns copied to the output; None = all
    work_dir: Path | None = None  # local scratch for a remote input or output; None = the system temp dir

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {self.chunk_rows}")
        for name in ("batch_size", "threads", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (automatic) or more, got {getattr(self, name)}")

    def torch_threads(self) -> int:
        """The torch threads: as configured, else half the cores, at least 1. More starve the threads that feed the
        model: on 16 cores, 15 torch threads scored at half the rate of 8 (bench/results/batch_scoring_cpu16.md)."""
        return self.threads or max(1, (os.cpu_count() or 1) // 2)

    def worker_threads(self, device: torch.device) -> int:
        """Threads transforming chunks, and as many writing them: as configured, else a quarter of the cores (half on
        a GPU, where the model needs none of them), at least 1."""
        return self.workers or max(1, (os.cpu_count() or 1) // (2 if device.type == "cuda" else 4))

    def model_batch_size(self, device: torch.device) -> int:
        return self.batch_size or (GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclasses.dataclass(frozen=True)
class ScoringResult:
    output: str  # the prediction dataset (directory or URI)
    rejects: str  # its rejects file
    rows_in: int
    scored: int
    rejected: int
    rejects_by_reason: dict[str, int]
    parts: int
    seconds: float
    model_version: str
    run_id: str
    device: str
    peak_rss_bytes: int  # this process's peak resident memory so far (VmHWM), not only this call's

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a KFP Metrics artifact: counts, rows/s, and one `rejected: <reason>` per reason."""
        numbers = {"rows_in": self.rows_in, "scored": self.scored, "rejected": self.rejected,
                   "rows_per_s": round(self.rows_per_s, 1), "seconds": round(self.seconds, 3)}
        return numbers | {f"rejected: {reason}": count for reason, count in sorted(self.rejects_by_reason.items())}

    def describe(self) -> str:
        lines = [f"Scored {self.scored:,} of {self.rows_in:,} rows with model version {self.model_version} "
                 f"(run {self.run_id}) in {self.seconds:.1f} s: {self.rows_per_s:,.0f} rows/s on {self.device}",
                 f"  predictions: {self.output} ({self.parts} part(s))",
                 f"  rejects:     {self.rejects} ({self.rejected:,} row(s))"]
        lines += [f"    {count:,} x {reason}" for reason, count in sorted(self.rejects_by_reason.items(),
                                                                           key=lambda item: -item[1])]
        return "\n".join(lines)


def score_file(
    source: Path | str,
    model_dir: Path,
    output: Path | str,
    *,
    model_version: str,
    run_id: str,
    join: Join | None = None,
    config: ScoringConfig = ScoringConfig(),
    overwrite: bool = False,
) -> ScoringResult:
    """Scores every row of `source` (CSV or Parquet file, Parquet directory, or storage URI of one file)
    with the model in `model_dir` into the dataset `output` (a path or s3://, gs:// URI), atomically.

    Raises `BatchInputError` (file or column named) when the input cannot be read or lacks a column the
    model reads, and `OutputConflictError` when `output` may not be replaced (`check_output`); nothing is
    written then.
    """
    started = time.perf_counter()
    check_output(source, output, overwrite=overwrite)
    remote_output = storage.scheme_of(str(output)) != "file"
    with contextlib.ExitStack() as stack:
        scratch = None
        if remote_output or storage.scheme_of(str(source)) != "file":
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slipway-score-",
                                                                           dir=config.work_dir)))
        local_source = _local_source(str(source), scratch)
        scorer = ChunkScorer(load_model(model_dir), config)
        token = uuid.uuid4().hex[:8]
        if remote_output:
            staging = scratch / "output"
            staging.mkdir()
        else:
            final = _local_path(str(output))
            _remove_stale_attempts(final)
            staging = final.parent / f".{final.name}.scoring-{socket.gethostname()}-{os.getpid()}-{token}"
            staging.mkdir(parents=True)
            stack.callback(shutil.rmtree, staging, ignore_errors=True)  # gone on success (renamed) or failure
        counts = _score_into(local_source, str(source), scorer, staging, token, model_version, run_id, join, config)
        # On object storage the rejects are named for the run too: uploading them must not touch the last run's.
        rejects = f"_rejects-{token}.parquet" if remote_output else REJECTS_FILE
        manifest = {"format": MANIFEST_FORMAT, "source": str(source), "model_version": model_version,
                    "run_id": run_id, "parts": counts.parts, "rejects": rejects,
                    "rows_in": counts.rows_in, "scored": counts.scored, "rejected": counts.rejected,
                    "rejects_by_reason": counts.by_reason}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if remote_output:
            _publish_remote(staging, str(output), counts.parts, rejects)
        else:
            check_output(source, output, overwrite=overwrite)  # what was checked may have changed meanwhile
            _publish_local(staging, final)
    seconds = time.perf_counter() - started
    result = ScoringResult(
        output=str(output), rejects=f"{str(output).rstrip('/')}/{rejects}", rows_in=counts.rows_in,
        scored=counts.scored, rejected=counts.rejected, rejects_by_reason=counts.by_reason,
        parts=len(counts.parts), seconds=seconds, model_version=model_version, run_id=run_id,
        device=str(scorer.device), peak_rss_bytes=peak_rss_bytes())
    log.info("scored %d, rejected %d of %d rows into %s in %.1f s", result.scored, result.rejected, result.rows_in,
             result.output, seconds)
    return result


def check_output(source: Path | str, output: Path | str, *, overwrite: bool = False) -> None:
    """Refuses, with an `OutputConflictError` naming the path, a local `output` whose replacement would destroy
    data: the input `source` or a directory holding it (always), a file or a non-empty directory that is no
    scoring output (unless `overwrite`). On object storage nothing is deleted (a new manifest supersedes the
    old one and its parts stay), so there is nothing to check."""
    if storage.scheme_of(str(output)) != "file":
        return
    final = _local_path(str(output)).resolve()
    if storage.scheme_of(str(source)) == "file":
        data = _local_path(str(source)).resolve()
        if final == data:
            raise OutputConflictError(f"{output}: is the input ({source}); scoring into it would destroy it: "
                                      "choose another output path")
        if final in data.parents:
            raise OutputConflictError(f"{output}: holds the input {source}; replacing it would destroy the input: "
                                      "choose another output path")
    if overwrite or not final.exists() or _is_scoring_output(final):
        return
    if final.is_dir():
        entries = sum(1 for _ in final.iterdir())
        if not entries:
            return
        what = (f"a directory of {entries} entr{'y' if entries == 1 else 'ies'} that is no Slipway scoring output "
                f"(no {MANIFEST_FILE} manifest of its own)")
    else:
        what = "a file, not a Slipway scoring output"
    raise OutputConflictError(f"{output}: is {what}; scoring would replace it: choose another output path, or "
                              "pass --overwrite to replace it")


def _is_scoring_output(path: Path) -> bool:
    """Whether `path` is a directory that an earlier scoring run published: its manifest says so."""
    try:
        return json.loads((path / MANIFEST_FILE).read_text()).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):  # no manifest, not JSON, or JSON that is not an object
        return False


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM from /proc (ru_maxrss would include the parent's peak when the
    process was forked from a larger one), else ru_maxrss."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_manifest(output: Path | str) -> dict[str, Any]:
    """The `_SUCCESS` manifest of a finished output; `BatchInputError` when there is none (no finished run)."""
    uri = f"{str(output).rstrip('/')}/{MANIFEST_FILE}"
    try:
        if storage.scheme_of(str(output)) == "file":
            return json.loads(_local_path(uri).read_text())
        with tempfile.TemporaryDirectory() as tmp:
            storage.download(uri, Path(tmp) / MANIFEST_FILE)
            return json.loads((Path(tmp) / MANIFEST_FILE).read_text())
    except (OSError, storage.StorageError) as error:
        raise BatchInputError(f"{output}: no finished batch scoring output ({MANIFEST_FILE} missing: {error})") \
            from None


def is_prediction_output(path: Path | str) -> bool:
    """Whether the local `path` is a finished scoring output (a directory with its manifest): a prediction log
    that drift (components/drift_detection.py) reads, judging its logged scores."""
    local = _local_path(str(path))
    return local.is_dir() and (local / MANIFEST_FILE).is_file()


def read_predictions(output: Path | str) -> pd.DataFrame:
    """The predictions of a finished output: the parts its manifest lists, in order (never a crashed run's)."""
    return _read_listed(output, read_manifest(output)["parts"])


def read_rejects(output: Path | str) -> pd.DataFrame:
    """The rejected rows of a finished output, each with its `reason`."""
    return _read_listed(output, [read_manifest(output)["rejects"]])


class ChunkScorer:
    """The model side of scoring: features and rejects of one chunk (an Arrow table), then its scores."""

    def __init__(self, model: LoadedModel, config: ScoringConfig = ScoringConfig()) -> None:
        self.model = model
        self.config = config
        self.device = config.torch_device()
        self.module = model.module.to(self.device).eval()
        self.batch_size = config.model_batch_size(self.device)
        prep = model.preprocessing
        self.numeric, self.categorical = list(prep.numeric), list(prep.categorical)
        self.means, self.stds = np.array(prep.means), np.array(prep.stds)
        self.vocabulary_ids = prep.vocabulary_ids
        self.required = set(config.required if config.required is not None else _problem_required(model))
        self._reason_index: dict[str, int] = {}  # reason -> its code in `transform`'s result (1, 2, ...)
        self._reason_lock = threading.Lock()

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    def missing_columns(self, columns: Sequence[str]) -> list[str]:
        present = set(columns)
        return [column for column in self.features if column not in present]

    def transform(self, table: pa.Table) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(numeric float32 [N, 2k], categorical int64 [N, c], reasons): `Preprocessing.transform`'s tensors,
        and per row the index + 1 in `self.reasons` of why it cannot be scored (0: it can; its tensor row is
        then meaningless)."""
        rows = table.num_rows
        codes = np.zeros(rows, dtype=np.int32)
        width = len(self.numeric)
        by_column = np.empty((2 * width, rows), dtype=np.float32)  # feature-major: each write is contiguous
        for i, column in enumerate(self.numeric):
            raw, unparsable = _floats(table.column(column))
            missing = np.isnan(raw)
            self._flag(codes, unparsable, f"{column}: not a number")
            self._flag(codes, np.isinf(raw), f"{column}: not finite")
            if column in self.required:
                self._flag(codes, missing & ~unparsable, f"{column}: missing (required)")
            # The arithmetic of Preprocessing.transform, in float64, then float32: bit-identical.
            scaled = raw - self.means[i]
            scaled /= self.stds[i]
            scaled[missing] = 0.0
            by_column[i] = scaled
            by_column[width + i] = missing
        categorical = np.empty((rows, len(self.categorical)), dtype=np.int64)
        for i, column in enumerate(self.categorical):
            categorical[:, i] = self._category_ids(table.column(column), self.vocabulary_ids[i])
            if column in self.required:
                self._flag(codes, categorical[:, i] == MISSING_ID, f"{column}: missing (required)")
        # A transposed view, not a copy: the model's first step (concatenation with the embeddings, or a
        # matrix product) reads it batch by batch in whatever layout it comes.
        return torch.from_numpy(by_column).T, torch.from_numpy(categorical), codes

    @property
    def reasons(self) -> list[str]:
        return list(self._reason_index)

    @torch.inference_mode()
    def score(self, numeric: torch.Tensor, categorical: torch.Tensor) -> np.ndarray:
        """P(positive) per row, float64 like `LoadedModel.predict_proba`; `batch_size` rows per model call."""
        rows = len(numeric)
        numeric, categorical = numeric.to(self.device), categorical.to(self.device)
        scores = torch.empty(rows, dtype=torch.float32, device=self.device)
        for start in range(0, rows, self.batch_size):
            end = min(start + self.batch_size, rows)
            scores[start:end] = torch.sigmoid(self.module(numeric[start:end], categorical[start:end]))
        return scores.cpu().numpy().astype("float64")

    def _flag(self, codes: np.ndarray, mask: np.ndarray, reason: str) -> None:
        """Rejects the rows of `mask` for `reason`, unless an earlier reason already rejected them."""
        if not mask.any():
            return
        with self._reason_lock:  # chunks are transformed in several threads: one code per reason, ever
            code = self._reason_index.setdefault(reason, len(self._reason_index) + 1)
        codes[mask & (codes == 0)] = code

    @staticmethod
    def _category_ids(values: pa.ChunkedArray, index: dict[str, int]) -> np.ndarray:
        """Each value's vocabulary id, as `Preprocessing.transform` gives it: `category_key` is applied to the
        distinct values only, then looked up by dictionary index (null: MISSING_ID)."""
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        encoded = values.combine_chunks().dictionary_encode()
        dictionary = encoded.dictionary.to_pylist()
        lookup = np.array([MISSING_ID if (key := category_key(v)) is None else index.get(key, UNKNOWN_ID)
                           for v in dictionary] + [MISSING_ID], dtype=np.int64)
        return lookup[encoded.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)]


# --- the chunk loop ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _Counts:
    rows_in: int = 0
    scored: int = 0
    rejected: int = 0
    by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    parts: list[str] = dataclasses.field(default_factory=list)


def _score_into(path: Path, source: str, scorer: ChunkScorer, staging: Path, token: str, model_version: str,
                run_id: str, join: Join | None, config: ScoringConfig) -> _Counts:
    counts = _Counts()
    threads = config.torch_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rejects_writer: pq.ParquetWriter | None = None
    input_schema: pa.Schema | None = None
    pending: list[Future] = []
    workers = config.worker_threads(scorer.device)
    prepare = functools.partial(_prepared, scorer=scorer, source=source, join=join, keep_columns=config.keep_columns)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slipway-score-write") as writer:
            chunks = enumerate(_prefetch(_chunks(path, source, config.chunk_rows, scorer.numeric)))
            for chunk, kept, positions, (numeric, categorical, codes) in _ordered_map(
                    prepare, chunks, 1 if join is not None else workers):
                input_schema = input_schema or chunk.schema
                good = codes == 0
                everything = bool(good.all())
                scores = scorer.score(numeric, categorical) if everything else \
                    scorer.score(numeric[good], categorical[good])
                reasons = np.full(chunk.num_rows, JOIN_DROPPED, dtype=object) if join is not None else None
                if reasons is not None:
                    reasons[positions] = None
                bad_positions = positions[~good]
                if len(bad_positions):
                    if reasons is None:
                        reasons = np.full(chunk.num_rows, None, dtype=object)
                    reasons[bad_positions] = np.array(scorer.reasons, dtype=object)[codes[~good] - 1]
                scored_positions = positions[good]
                order = np.argsort(scored_positions, kind="stable")  # the join may reorder: back to input order
                part = f"part-{len(counts.parts):05d}-{token}.parquet"
                in_order = join is None and everything  # nothing dropped, nothing moved: no copy
                output = _numbers_parsed(kept, scorer.numeric)
                predictions = _with_columns(output if in_order else output.take(scored_positions[order]), {
                    SCORE: pa.array(scores[order]), MODEL_VERSION: _repeat(model_version, len(order)),
                    RUN_ID: _repeat(run_id, len(order))})
                pending.append(writer.submit(pq.write_table, predictions, staging / part))
                counts.parts.append(part)
                if reasons is not None:
                    rejected = np.flatnonzero(pd.notna(reasons))
                    if len(rejected):
                        rows = _with_columns(kept.take(rejected), {REASON: pa.array(reasons[rejected].tolist(),
                                                                                   pa.string())})
                        rejects_writer = rejects_writer or pq.ParquetWriter(staging / REJECTS_FILE, rows.schema)
                        rejects_writer.write_table(rows)
                        for reason, count in zip(*np.unique(reasons[rejected].astype(str), return_counts=True),
                                                 strict=True):
                            counts.by_reason[reason] = counts.by_reason.get(reason, 0) + int(count)
                        counts.rejected += len(rejected)
                counts.rows_in += chunk.num_rows
                counts.scored += len(scored_positions)
                while len(pending) > workers:  # at most `workers` parts being written while the next is scored
                    pending.pop(0).result()
            for future in pending:
                future.result()
        if rejects_writer is None:
            schema = (input_schema if config.keep_columns is None or input_schema is None
                      else pa.schema([input_schema.field(c) for c in config.keep_columns]))
            schema = (schema or pa.schema([])).append(pa.field(REASON, pa.string()))
            pq.write_table(schema.empty_table(), staging / REJECTS_FILE)
        else:
            rejects_writer.close()
            rejects_writer = None
    finally:
        if rejects_writer is not None:
            rejects_writer.close()
        torch.set_num_threads(previous_threads)
    return counts


def _prepared(numbered: tuple[int, pa.Table], *, scorer: ChunkScorer, source: str, join: Join | None,
              keep_columns: Sequence[str] | None) -> tuple:
    """For the chunk numbered `index`: (chunk, the columns to output, the chunk position of each feature row,
    `scorer.transform`). Runs in a worker thread, so that chunks are joined and transformed beside the model."""
    index, chunk = numbered
    if index == 0 and join is None:
        _check_columns(scorer, chunk.column_names, source, joined=False)
    kept = chunk if keep_columns is None else _select(chunk, keep_columns, source)
    features, positions = chunk, np.arange(chunk.num_rows)
    if join is not None:
        features, positions = _joined(chunk, join, scorer, source, first=index == 0)
    return chunk, kept, positions, scorer.transform(features)


def _ordered_map(function: Callable[[Any], Any], items: Iterator[Any], workers: int) -> Iterator[Any]:
    """`function(item)` for each item, in the items' order, up to `workers` computed at once in threads."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slipway-score-prepare") as pool:
        pending: collections.deque[Future] = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _numbers_parsed(kept: pa.Table, numeric: Sequence[str]) -> pa.Table:
    """`kept` with each numeric feature read as text (CSV) parsed to float64: the predictions carry numbers, the
    rejects keep the text as it came."""
    for column in numeric:
        if column in kept.column_names \
                and (pa.types.is_string(kept.schema.field(column).type)
                     or pa.types.is_large_string(kept.schema.field(column).type)):
            kept = kept.set_column(kept.column_names.index(column), column,
                                   pa.array(_floats(kept.column(column))[0], pa.float64()))
    return kept


def _joined(chunk: pa.Table, join: Join, scorer: ChunkScorer, source: str, first: bool) -> tuple[pa.Table, np.ndarray]:
    """The join's result (as Arrow) and, per result row, its position in `chunk`, in the join's order."""
    frame = chunk.to_pandas()
    frame[ROW_ID] = np.arange(len(frame))
    joined = join(frame)
    if ROW_ID not in joined.columns:
        raise BatchInputError(f"the join returned no {ROW_ID!r} column: it must keep the column it is given")
    positions = joined[ROW_ID].to_numpy(dtype=np.int64)
    if len(np.unique(positions)) != len(positions):
        raise BatchInputError("the join returned some input row more than once: it must keep or drop rows, "
                              "never repeat them")
    if first:
        _check_columns(scorer, list(joined.columns), source, joined=True)
    return pa.Table.from_pandas(joined[scorer.features], preserve_index=False), positions


def _check_columns(scorer: ChunkScorer, columns: Sequence[str], source: str, joined: bool) -> None:
    missing = scorer.missing_columns(columns)
    if not missing:
        return
    raw = [c for c in missing if "__" not in c]
    store = [c for c in missing if "__" in c]
    parts = []
    if raw:
        parts.append(f"{source}: no column(s) {raw}, which the model reads")
    if store:
        parts.append(f"{'the join did not add' if joined else f'{source} lacks'} the point-in-time feature "
                     f"column(s) {store}: the model was trained with Feast features; join them first "
                     "(the batch_scoring pipeline's features step, or score_file(join=...))")
    raise BatchInputError("; ".join(parts))


def _floats(values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 with NaN for missing, mask of values present but not numbers). Text is parsed the way pandas
    parses numbers; an empty or blank text is missing."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind) or pa.types.is_null(kind):
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False), np.zeros(len(values), dtype=bool)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        text = pd.Series(values.to_pandas(), dtype=object)
        parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        blank = text.isna().to_numpy() | (text.astype(str).str.strip() == "").to_numpy()
        return np.where(blank, np.nan, parsed), np.isnan(parsed) & ~blank
    return np.full(len(values), np.nan), np.ones(len(values), dtype=bool)  # a timestamp, a list: not a number


def _select(chunk: pa.Table, columns: Sequence[str], source: str) -> pa.Table:
    missing = [c for c in columns if c not in chunk.column_names]
    if missing:
        raise BatchInputError(f"{source}: no column(s) {missing} to keep (keep_columns); it has {chunk.column_names}")
    return chunk.select(list(columns))


def _with_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    for name, values in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])  # an input column named like an output column is replaced
        table = table.append_column(name, values)
    return table


def _repeat(value: str, rows: int) -> pa.Array:
    """`value` on every row, built in Arrow (a one-entry dictionary, decoded), not as a Python list."""
    dictionary = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value]))
    return dictionary.cast(pa.string())


# --- reading ------------------------------------------------------------------------------------------


def _local_source(source: str, scratch: Path | None) -> Path:
    if storage.scheme_of(source) == "file":
        path = _local_path(source)
        if not path.exists():
            raise BatchInputError(f"{source}: not found")
        return path
    target = scratch / ("input" + "".join(Path(source.split("?", 1)[0]).suffixes[-2:]))
    try:
        storage.download(source, target)
    except storage.StorageError as error:
        raise BatchInputError(str(error)) from None
    return target


def _chunks(path: Path, source: str, chunk_rows: int, numeric: Sequence[str]) -> Iterator[pa.Table]:
    """The input as tables of exactly `chunk_rows` rows (the last one fewer); never more than a chunk plus
    one reader batch in memory."""
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in _batches(path, source, chunk_rows, numeric):
            pending.append(batch)
            held += batch.num_rows
            while held >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_rows)  # zero-copy: a slice of the reader's batches
                rest = table.slice(chunk_rows)
                pending, held = rest.to_batches(), rest.num_rows
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        raise BatchInputError(f"{source}: cannot read: {error}") from None
    if held:
        yield pa.Table.from_batches(pending)


def _batches(path: Path, source: str, chunk_rows: int, numeric: Sequence[str]) -> Iterator[pa.RecordBatch]:
    if path.is_dir():
        dataset = pads.dataset(path, format="parquet")
        yield from dataset.to_batches(batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1,
                                      fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False))
    elif path.name.lower().endswith(CSV_SUFFIXES):
        # Numeric columns are read as text and parsed per chunk: a stray word is then one rejected row,
        # where type inference on the first block would fail the whole file further on.
        header = pacsv.open_csv(path).schema.names
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in numeric if c in header},
                                       strings_can_be_null=True)
        delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
        yield from pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                  convert_options=convert)
    else:
        with path.open("rb") as file:
            if file.read(4) != b"PAR1":
                raise BatchInputError(f"{source}: neither Parquet nor CSV (.csv, .csv.gz, .tsv)")
        # pre_buffer (the default) keeps every column chunk read so far: memory would grow with the file.
        yield from pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=chunk_rows)


def _prefetch(chunks: Iterator[Any]) -> Iterator[Any]:
    """Makes the next item in a thread while the caller works on this one (Arrow and numpy release the GIL)."""
    slots: queue.Queue = queue.Queue(maxsize=1)
    done = object()
    stop = threading.Event()

    def read() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                slots.put(chunk)
            slots.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            slots.put(error)

    reader = threading.Thread(target=read, name="slipway-score-read", daemon=True)
    reader.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            slots.get_nowait()  # frees the reader if it waits to put


def _read_listed(output: Path | str, names: Sequence[str]) -> pd.DataFrame:
    base = str(output).rstrip("/")
    if storage.scheme_of(base) == "file":
        tables = [pq.read_table(_local_path(base) / name) for name in names]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tables = []
            for name in names:
                storage.download(f"{base}/{name}", Path(tmp) / name)
                tables.append(pq.read_table(Path(tmp) / name))
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables).to_pandas()


# --- publishing ---------------------------------------------------------------------------------------


def _publish_local(staging: Path, final: Path) -> None:
    """Renames the finished `staging` directory to `final`, replacing an existing one only now."""
    for file in staging.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    aside = None
    if final.exists():
        aside = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(final, aside)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    if aside is not None and aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    elif aside is not None:  # a file that --overwrite replaces
        aside.unlink(missing_ok=True)


def _publish_remote(staging: Path, output: str, parts: Sequence[str], rejects: str) -> None:
    base = output.rstrip("/")
    for local, remote in [*zip(parts, parts, strict=True), (REJECTS_FILE, rejects), (MANIFEST_FILE, MANIFEST_FILE)]:
        storage.upload(staging / local, f"{base}/{remote}")  # the manifest last: it is what makes the run visible


def _remove_stale_attempts(final: Path) -> None:
    """Removes the staging directories of earlier runs for `final` on this host whose process has died."""
    if not final.parent.is_dir():
        return
    host = socket.gethostname()
    for stale in final.parent.glob(f".{final.name}.scoring-*"):
        owner_host, _, rest = stale.name.removeprefix(f".{final.name}.scoring-").rpartition("-")[0].rpartition("-")
        if owner_host == host and rest.isdigit() and not _alive(int(rest)):
            log.info("removing %s, left by a scoring run that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _problem_required(model: LoadedModel) -> tuple[str, ...]:
    """The features the model's problem requires in every row (`features.required`), if the problem loads."""
    name = model.metadata.get("lineage", {}).get("problem")
    if not name:
        return ()
    from slipway.problem import load_problem

    try:
        return tuple(load_problem(name).features.required)
    except (OSError, ValueError) as error:
        log.warning("model problem %r not loadable (%s): no feature is required beyond what the model reads",
                    name, error)
        return ()


__all__ = ["CPU_BATCH_SIZE", "GPU_BATCH_SIZE", "JOIN_DROPPED", "MANIFEST_FILE", "MANIFEST_FORMAT", "MODEL_VERSION",
           "REASON", "REJECTS_FILE", "ROW_ID", "RUN_ID", "SCORE", "BatchInputError", "ChunkScorer",
           "OutputConflictError", "ScoringConfig", "ScoringResult", "check_output", "is_prediction_output",
           "peak_rss_bytes", "read_manifest", "read_predictions", "read_rejects", "score_file"]

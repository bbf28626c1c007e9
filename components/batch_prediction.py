"""Batch prediction by reference: a model URI (registry alias, version or folder) and a feature store in, scores out.

`slipway score` and the `batch_predict` component both come here, so that what a model version is
called on each output row, and how a batch gets its Feast features, is decided in one place:

    with feature_join(StoreConfig.from_env(Path("feature_repo")), load_problem()) as join:
        result = predict_batch("trips.parquet", "models:/chicago_taxi@champion", "scores", run_id=new_run_id(),
                               join=join)

The scoring itself (chunks, rejects, the atomic output) is `batch_scoring.score_file`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from slipway.components import feature_store
from slipway.components.batch_scoring import Join, ScoringConfig, ScoringResult, check_output, score_file
from slipway.components.ingestion import enforce_types
from slipway.components.model_artifact import WEIGHTS_FILE
from slipway.problem import Problem
from slipway.serving.model_source import ModelSource, fetch_model


def predict_batch(data: Path | str, model_ref: str, output: Path | str, *, run_id: str, tracking_uri: str = "",
                  join: Join | None = None, config: ScoringConfig | None = None,
                  overwrite: bool = False) -> ScoringResult:
    """Scores `data` with the model `model_ref` names (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, a folder or
    an s3://, gs:// folder) into `output`; each row records `model_version(...)` and `run_id`.

    The alias is resolved once, here: every row of one run is scored by the same version even if the alias
    moves meanwhile. `tracking_uri` is the registry's (empty: MLFLOW_TRACKING_URI, else the local default);
    `config` None is `ScoringConfig()`; `overwrite` as in `batch_scoring.check_output`, which runs first, before
    the model is fetched.
    """
    check_output(data, output, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="slipway-score-model-") as tmp:
        source = fetch_model(model_ref, Path(tmp), tracking_uri)
        return score_file(data, source.path, output, model_version=model_version(source), run_id=run_id, join=join,
                          config=config or ScoringConfig(), overwrite=overwrite)


def model_version(source: ModelSource) -> str:
    """What the output rows call the model: the registry version, else `sha256:` and the weights' hash (a folder
    has no version, but the same weights are the same model)."""
    if source.version:
        return source.version
    with open(source.path / WEIGHTS_FILE, "rb") as weights:
        return "sha256:" + hashlib.file_digest(weights, "sha256").hexdigest()[:12]


@contextlib.contextmanager
def feature_join(config: feature_store.StoreConfig, problem: Problem) -> Iterator[Join]:
    """The training sets' own point-in-time join (`feature_store.training_set`) over the store `config` names,
    for each chunk: a batch is scored with exactly the features its model was trained with (no skew). One
    DuckDB join is opened for the whole run, so its tables are opened once, not per chunk.

    The rows' timestamp and entity columns are typed first, as ingestion types them (a raw CSV's epoch seconds
    become UTC times): the join's keys are then exactly the training sets' keys. A value that does not parse
    stops the run with an `IngestError` naming the column and the value."""
    keys = [problem.timestamp.column, *problem.entities]
    key_types = dataclasses.replace(problem, columns={column: problem.columns[column] for column in keys})
    store = feature_store.open_store(config, problem)

    with feature_store.point_in_time_join(store, problem) as opened:
        def join(rows: pd.DataFrame) -> pd.DataFrame:
            typed = enforce_types(rows[keys], key_types, "the batch's join keys")
            return feature_store.training_set(store, problem, rows.assign(**{column: typed[column] for column in keys}),
                                              join=opened)

        yield join


def new_run_id() -> str:
    """A run id for a scoring run started by hand: `score-<UTC time>-<random>`."""
    return f"score-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"

"""Atomic file output: a step's outputs appear whole, together, or not at all.

Writers (pandas, safetensors, json) write to temporary siblings of the final paths; only when
the block completes are they renamed into place (`os.replace`, atomic on one filesystem). A
failure anywhere in the block removes every temporary file and leaves the final paths as they
were, so a reader never sees a half-written Parquet file or a train split without its eval split.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A hidden, unique name beside `path` (same folder, hence same filesystem).

    It keeps `path`'s extension, for writers that pick a format from it (the KFP compiler,
    pandas' compression inference).
    """
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.part{path.suffix}")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[Path | str]) -> Iterator[list[Path]]:
    """Yields one temporary path per final path; renames them all into place on success.

    A temporary path the caller makes into a folder is renamed (or on failure removed) whole.

        with atomic_outputs([train_path, eval_path]) as (train_tmp, eval_tmp):
            train.to_parquet(train_tmp)
            eval.to_parquet(eval_tmp)
    """
    finals = [Path(p) for p in paths]
    temps = [temp_sibling(p) for p in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        for temp in temps:
            _fsync(temp)
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
    except BaseException:
        for temp in temps:
            if temp.is_dir():
                shutil.rmtree(temp)
            else:
                temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """`atomic_outputs` for a single file."""
    with atomic_outputs([path]) as (temp,):
        yield temp


def _fsync(path: Path) -> None:
    """Flushes a finished file to disk so a crash cannot leave a renamed but empty file."""
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

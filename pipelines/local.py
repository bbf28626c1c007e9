"""Runs a pipeline on this machine with kfp.local: no cluster, no Docker.

The same compiled components that run on Kubeflow run here as subprocesses of the current
interpreter (`SubprocessRunner(use_venv=False)`: every task sees this environment, where Slipway
and its runtime are installed; components are built with `install_kfp_package=False`, so no task
pip-installs anything). Artifacts land under `<pipeline_root>/<pipeline>-<timestamp>/<task>/`.
"""

import collections
import contextlib
import dataclasses
import json
import logging
import math
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from kfp import dsl, local
from kfp.dsl.graph_component import GraphComponent

from slipway.child_process import last_error_line
from slipway.components.tracking import DEFAULT_PIPELINE_ROOT

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task and pipeline names
_MODULE_PATH = re.compile(r"^(?:\w+\.)+(?=\w+(?:Error|Exception)\b)")  # slipway.storage.StorageError -> StorageError


# KFP parameter types -> how a `--set key=value` text becomes that type.
_PARSERS = {
    "String": str,
    "Integer": int,
    "Float": lambda text: _finite(float(text)),
    "Boolean": lambda text: {"true": True, "false": False}[text.lower()],
    "List": lambda text: _parse_list(text),
}


def _finite(value: float) -> float:
    """`value` unless it is NaN or infinite, which no parameter means."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _parse_list(text: str) -> list[Any]:
    """A JSON list (`[64, 32]`) or comma-separated values (`64,32`), each read as JSON when it parses."""
    if text.strip().startswith("["):
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError(f"{text!r} is not a list")
        return value
    items = []
    for item in (piece.strip() for piece in text.split(",")):
        try:
            items.append(json.loads(item))
        except json.JSONDecodeError:
            items.append(item)
    return items


class PipelineArgumentError(ValueError):
    """A pipeline argument is unknown or does not parse to the parameter's type."""


class PipelineRunError(RuntimeError):
    """A task of a local run failed: kfp.local's verdict, naming the task, then the task's own last error line."""


@dataclasses.dataclass(frozen=True)
class LocalRun:
    pipeline: str
    run_dir: Path | None
    seconds: float
    outputs: dict[str, Any]  # pipeline output name -> artifact (with .path, .metadata)


def pipeline_parameters(pipeline: GraphComponent) -> dict[str, tuple[str, Any]]:
    """{name: (KFP type, default or None)} of the pipeline's parameters, in declaration order."""
    return {name: (spec.type, spec.default) for name, spec in (pipeline.component_spec.inputs or {}).items()
            if spec.type in _PARSERS}


def parse_arguments(pipeline: GraphComponent, assignments: list[str]) -> dict[str, Any]:
    """Turns `key=value` texts into typed arguments of `pipeline`, naming what is wrong and what is valid."""
    parameters = pipeline_parameters(pipeline)
    arguments: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise PipelineArgumentError(f"{assignment!r} is not key=value")
        if key not in parameters:
            valid = ", ".join(f"{n} ({t.lower()}, default {d!r})" for n, (t, d) in parameters.items())
            raise PipelineArgumentError(f"{key!r} is not a parameter of pipeline {pipeline.name!r}; valid: {valid}")
        kind = parameters[key][0]
        try:
            arguments[key] = _PARSERS[kind](text)
        except (ValueError, KeyError):
            expected = "a finite float" if kind == "Float" else kind.lower()
            raise PipelineArgumentError(f"{key}={text!r}: expected {expected}") from None
    return arguments


def run_local(
    pipeline: GraphComponent, arguments: dict[str, Any], pipeline_root: Path = DEFAULT_PIPELINE_ROOT
) -> LocalRun:
    """Runs `pipeline` to completion with kfp.local; a `PipelineRunError` saying which task failed and why if one
    does."""
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()),
               raise_on_error=True)
    started = time.perf_counter()
    output = _Tail(sys.stdout)
    with warnings.catch_warnings(), contextlib.redirect_stdout(output):
        # kfp.local warns when an image name lacks "python"; our tasks run in this interpreter
        # by design, whose environment is built from the same lock as the image.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
        try:
            task = pipeline(**arguments)
        except RuntimeError as exc:  # kfp.local's "Pipeline ... finished with status FAILURE. Inner task failed: ..."
            verdict = _ANSI.sub("", str(exc)).rstrip(".")
            reason = _MODULE_PATH.sub("", last_error_line(output.lines()))
            output.flush()  # the tasks' log before the error (on stderr), also when stdout is a pipe
            raise PipelineRunError(f"{verdict}: {reason}") from None
    seconds = time.perf_counter() - started
    outputs = dict(task.outputs) if isinstance(task.outputs, dict) else {"output": task.outputs}
    return LocalRun(pipeline=pipeline.name, run_dir=_run_dir(outputs), seconds=seconds, outputs=outputs)


def _run_dir(outputs: dict[str, Any]) -> Path | None:
    """`<root>/<pipeline>-<timestamp>`, read off any output artifact's `<run>/<task>/<output>` path."""
    for value in outputs.values():
        if isinstance(value, dsl.Artifact):
            return Path(value.path).parents[1]
    return None


class _Tail:
    """Writes through to `stream` (kfp.local prints each task's output there), keeping the last lines: the failed
    task's traceback ends them."""

    def __init__(self, stream: TextIO, keep: int = 200) -> None:
        self._stream = stream
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        self._stream.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self._lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def lines(self) -> list[str]:
        return [*self._lines, self._partial]

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno: the stream's own
        return getattr(self._stream, name)

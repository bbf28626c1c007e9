"""The one boundary between runtimes (DESIGN.md §3): call library code that lives in another environment.

TFDV (and alibi-detect) cannot share the `core` environment, yet locally their components run from
core, under kfp.local. `call("tfdv", "slipway.components.data_validation:infer_schema", ...)` runs that
function in the `tfdv` runtime's interpreter (`.venv/tfdv`, see `slipway.runtimes.local_python`) as
`python -m slipway.runtime_call REQUEST RESPONSE`:

- paths in, structured results out: the keyword arguments and the return value are JSON, passed
  through two files, so data always moves as files the function reads and writes itself;
- the child's output (its log lines) is streamed to this process's stderr as it is written;
- a failure in the child becomes a `RuntimeCallError` here, naming the function and carrying the
  child's exception (`DataValidationError: data.csv: ...`), or its exit code and last error line
  when it died without one.

Inside the runtime's own image (`SLIPWAY_RUNTIME` names it) nothing is crossed: the function is
called in-process, so on Kubeflow a component whose `base_image` is that image pays nothing.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipway import logs, runtimes
from slipway.atomic import atomic_output
from slipway.child_process import last_error_line, stream

# The child logs at the caller's level: a CLI that shows only warnings gets only the child's warnings.
LOG_LEVEL_ENV = "SLIPWAY_LOG_LEVEL"
# Lines of the child's output kept to explain a crash that left no exception behind.
TAIL_LINES = 40
# TensorFlow's C++ start-up chatter (CUDA probing on a CPU machine) and the pinned Google client
# libraries' notices about future Python support, repeated by every worker process, are not
# anything a user can act on. Variables the user has set win.
CHILD_ENV_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore::FutureWarning"}


class RuntimeCallError(RuntimeError):
    """A function called in another runtime failed, or the runtime could not be started."""


def call(runtime: str, function: str, /, **arguments: Any) -> Any:
    """Runs `function` ("package.module:name") with JSON-able keyword `arguments` in `runtime`; returns its result."""
    if runtimes.current() == runtime:
        return resolve(function)(**arguments)
    python = runtimes.local_python(runtime)
    if not python.is_file():
        raise RuntimeCallError(f"the `{runtime}` runtime's environment is missing ({python}): "
                               f"build it with `make {runtime}-env`")
    with tempfile.TemporaryDirectory(prefix=f"slipway-{runtime}-call-") as tmp:
        request, response = Path(tmp) / "request.json", Path(tmp) / "response.json"
        request.write_text(json.dumps({"function": function, "arguments": arguments}))
        env = {**CHILD_ENV_DEFAULTS, **os.environ, runtimes.RUNTIME_ENV: runtime,
               LOG_LEVEL_ENV: logging.getLevelName(logging.getLogger().getEffectiveLevel())}
        exit_code, tail = stream([str(python), "-m", __name__, str(request), str(response)], env, TAIL_LINES)
        outcome = json.loads(response.read_text()) if response.is_file() else None
    if outcome is not None and "error" in outcome:
        raise RuntimeCallError(f"{function} failed in the `{runtime}` runtime: {outcome['error']}")
    if exit_code != 0 or outcome is None:
        raise RuntimeCallError(f"{function} in the `{runtime}` runtime exited with code {exit_code} and no result; "
                               f"its last error line: {last_error_line(tail)}")
    return outcome["result"]


def resolve(function: str) -> Callable[..., Any]:
    """The callable named by "package.module:name"."""
    module_name, _, name = function.partition(":")
    if not name:
        raise RuntimeCallError(f"{function!r} does not name a function: expected 'package.module:name'")
    return getattr(importlib.import_module(module_name), name)


def main(argv: list[str]) -> int:
    """The child's side: read the request, call the function, write the result or the error."""
    request_path, response_path = (Path(arg) for arg in argv)
    logs.configure(logging.getLevelName(os.environ.get(LOG_LEVEL_ENV, "INFO")))
    request = json.loads(request_path.read_text())
    try:
        outcome = {"result": resolve(request["function"])(**request["arguments"])}
        text = json.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - every failure must reach the parent as a message
        traceback.print_exc()
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
        text = json.dumps(outcome)
    with atomic_output(response_path) as temp:
        temp.write_text(text)
    return 0 if "result" in outcome else 1


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    # The response is on disk and fsynced, the logs are flushed: skip interpreter shutdown, which
    # with TensorFlow loaded takes 1.2-1.5 s of every call for nothing (bench/results/validation.md).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)

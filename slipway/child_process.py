"""A child process whose output is the user's log: streamed as it comes, its last lines kept to explain a failure.

Both ways Slipway hands local work to another interpreter use it: `torchrun` for training
(components/launcher.py) and another runtime's environment (slipway/runtime_call.py). Standard
library only, so that it imports in every runtime.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence

# An exception line, as Python prints it last in a traceback; torchrun prefixes its workers' lines with their rank.
_ERROR_LINE = re.compile(r"^(?:\[(?:rank|default)\d+\]:\s*)?([\w.]*(?:Error|Exception|Interrupt)\b.*)$")


def stream(command: Sequence[str], env: Mapping[str, str] | None = None,
           tail_lines: int = 200) -> tuple[int, list[str]]:
    """Runs `command`, copying its stdout and stderr to our stderr line by line; returns its exit code, last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", bufsize=1, env=None if env is None else dict(env)) as child:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))
    return child.returncode, list(tail)


def last_error_line(lines: Iterable[str], ignore: Sequence[str] = ()) -> str:
    """The most specific error in a child's output: its last exception (skipping wrappers named in `ignore`),
    else the line reporting an exit code (a worker killed by a signal raises nothing), else the last line."""
    lines = [line for line in lines if line.strip()]
    errors = [m.group(1) for line in lines if (m := _ERROR_LINE.match(line.strip()))]
    specific = [e for e in errors if not any(wrapper in e for wrapper in ignore)]
    if specific:
        return specific[-1]
    exit_lines = [line.strip() for line in lines if "exitcode" in line]
    if exit_lines:
        return exit_lines[-1]
    return lines[-1].strip() if lines else "no output"

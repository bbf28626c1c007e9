"""Benchmark: TFDV statistics through the runtime boundary, and what the boundary itself costs per call.

TFDV lives in its own environment (`.venv/tfdv`); the validation steps run in core and call it
through `slipway.runtime_call`, which starts `.venv/tfdv/bin/python` for every call. Two things
are measured from core, exactly as the `statistics` component calls them:

- Statistics: `runtime_call.call("tfdv", "slipway.components.data_validation:generate_statistics")`
  of one split of 10,000 and of 1,000,000 rows: wall time of the whole call (interpreter start,
  imports, reading the Parquet file and typing it, TFDV's statistics, writing FeatureStats.pb and
  the Facets page). The child logs the time of TFDV's `generate_statistics_from_dataframe` alone
  (to 0.1 s); that line is read from its output and reported beside the wall time. The rows are
  the real taxi sample (data.csv, typed and labelled as ingestion does) resampled with
  replacement (fixed seed) and written to Parquet by pandas in core first.
  Peak RSS is `getrusage(RUSAGE_CHILDREN).ru_maxrss`, the largest child waited for so far, so
  the cases run smallest first and each figure is the peak of that case's children (a cheap
  probe, no sampling).
- Boundary overhead per call: `slipway.runtimes:current` (returns the runtime's name) through
  the boundary is the interpreter start and Slipway's import alone; `infer_schema` with a
  pinned schema adds importing TFDV (data_validation's module) and parsing a small schema.pbtxt;
  both are compared with calling `slipway.runtimes.current()` in process. One untimed call of
  each kind first, so that the timed ones find the libraries in the page cache.

The difference between a statistics call and the TFDV-importing boundary call approximates the
work done in the child.

    python bench/validation.py [--repeats 3] [--boundary-repeats 10]
    python bench/validation.py --quick      # smoke run: 1 repeat, 100,000 rows instead of 1,000,000

Figures are the median (min–max) over the repeats. Writes bench/results/validation.json and .md,
with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import machine, summary, write_results

from slipway import logs, runtime_call, runtimes
from slipway.components.ingestion import add_label, enforce_types, read_table
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample

PROBLEM = "chicago_taxi"
SEED = 0
SMALL, LARGE, QUICK_LARGE = 10_000, 1_000_000, 100_000
GENERATE = "slipway.components.data_validation:generate_statistics"
INFER_SCHEMA = "slipway.components.data_validation:infer_schema"
CURRENT = "slipway.runtimes:current"
# The child's own timing of TFDV's statistics (components/data_validation.py, `statistics_of`).
LOGGED = re.compile(r"statistics of .*: (\d+) rows, \d+ features in ([\d.]+) s")
IN_PROCESS_CALLS = 100_000


def log(message: str) -> None:
    print(f"[validation {time.strftime('%H:%M:%S')}] {message}", flush=True)


def resampled(rows: int, directory: Path) -> Path:
    """The taxi sample, typed and labelled as a split is, resampled with replacement to `rows` rows, as Parquet."""
    problem, source = load_problem(PROBLEM), fetch_sample()["data.csv"]
    typed = enforce_types(read_table(source, str(source)), problem, str(source))
    labelled, _ = add_label(typed, problem, str(source))
    path = directory / f"trips-{rows}.parquet"
    labelled.sample(n=rows, replace=True, random_state=SEED, ignore_index=True).to_parquet(path, index=False)
    return path


class Tee(io.TextIOBase):
    """Writes through to a stream and keeps a copy: the child's log lines reach the terminal and the bench."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def child_output() -> Iterator[Tee]:
    """`runtime_call` copies the child's output to `sys.stderr` as it runs; this keeps that text too."""
    tee = Tee(sys.stderr)
    with contextlib.redirect_stderr(tee):
        yield tee


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = function()
    return time.perf_counter() - began, result


def peak_child_rss_mib() -> float:
    """The largest RSS of any child waited for so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def statistics_call(path: Path, output: Path) -> Callable[[], dict]:
    """The `statistics` component's call: the statistics folder and the page are two outputs side by side."""
    return lambda: runtime_call.call(runtimes.TFDV, GENERATE, splits={"train": str(path)}, output_dir=str(output),
                                     html_path=str(output.with_suffix(".html")), problem=PROBLEM)


def measure_statistics(path: Path, rows: int, repeats: int, workdir: Path) -> dict:
    """Wall time of `generate_statistics` through the boundary, TFDV's own time as the child logs it, peak RSS."""
    wall, logged = [], []
    for repeat in range(1, repeats + 1):
        with child_output() as output:
            seconds, result = timed(statistics_call(path, workdir / f"statistics-{rows}-{repeat}"))
        found = LOGGED.search(output.copy.getvalue())
        if result["splits"]["train"]["rows"] != rows or found is None or int(found.group(1)) != rows:
            raise RuntimeError(f"generate_statistics of {rows:,} rows returned {result}; its log: {found}")
        wall.append(seconds)
        logged.append(float(found.group(2)))
        log(f"repeat {repeat}/{repeats} statistics of {rows:,} rows: {seconds:.2f} s through the boundary, "
            f"TFDV {logged[-1]:.1f} s (child's log)")
    return {"rows": rows, "parquet_mib": path.stat().st_size / 2**20, "features": result["splits"]["train"]["features"],
            "wall_s": summary(wall), "tfdv_logged_s": summary(logged),
            "rows_per_second": summary([rows / s for s in wall]), "peak_child_rss_mib": peak_child_rss_mib()}


def measure_boundary(name: str, call: Callable[[], Any], expected: Any, repeats: int) -> dict:
    """One untimed call (page cache), then `repeats` timed calls of one boundary crossing."""
    first, result = timed(call)
    if result != expected:
        raise RuntimeError(f"{name} returned {result!r}, expected {expected!r}")
    seconds = []
    for _ in range(repeats):
        with contextlib.redirect_stderr(io.StringIO()):  # the child's INFO line, repeated, says nothing
            seconds.append(timed(call)[0])
    log(f"{name}: median {summary(seconds)['median'] * 1000:.0f} ms over {repeats} calls (untimed first {first:.2f} s)")
    return {"call": name, "first_call_s": first, "seconds": summary(seconds)}


def in_process(repeats: int) -> dict:
    """`slipway.runtimes.current()` called in core: what a call costs when no boundary is crossed."""
    per_call = [t / IN_PROCESS_CALLS for t in timeit.repeat(runtimes.current, number=IN_PROCESS_CALLS,
                                                             repeat=repeats)]
    return {"call": "in process: slipway.runtimes.current()", "calls_per_repeat": IN_PROCESS_CALLS,
            "seconds": summary(per_call)}


def tfdv_versions() -> dict:
    """The tfdv environment's versions of what does the work, asked of its own interpreter."""
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('tensorflow-data-validation', 'tensorflow', 'tfx-bsl', 'pandas', 'pyarrow')}))")
    python = str(runtimes.local_python(runtimes.TFDV))
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="statistics calls per size")
    parser.add_argument("--boundary-repeats", type=int, default=10, help="timed calls per boundary measurement")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 100,000 rows instead of 1,000,000")
    args = parser.parse_args()
    logs.configure()  # INFO: the child logs at the caller's level, and its statistics line is read
    if args.quick:
        args.repeats, args.boundary_repeats = 1, 1
    large = QUICK_LARGE if args.quick else LARGE
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "tfdv_env": tfdv_versions(), "quick": args.quick,
                               "repeats": args.repeats, "boundary_repeats": args.boundary_repeats, "seed": SEED}
    with tempfile.TemporaryDirectory(prefix="slipway-bench-validation-") as tmp:
        workdir = Path(tmp)
        paths = {rows: resampled(rows, workdir) for rows in (SMALL, large)}
        log("resampled the taxi sample to " + ", ".join(f"{rows:,}" for rows in paths) + " rows (Parquet)")

        boundary = [in_process(args.boundary_repeats),
                    measure_boundary(f'runtime_call.call("tfdv", "{CURRENT}")',
                                     lambda: runtime_call.call(runtimes.TFDV, CURRENT), runtimes.TFDV,
                                     args.boundary_repeats)]

        # Smallest first (peak RSS is the largest child so far). The untimed first call warms the page
        # cache for TensorFlow, and its statistics give the schema the TFDV-importing boundary call reads.
        warm = workdir / "statistics-warm-up"
        first, _ = timed(statistics_call(paths[SMALL], warm))
        log(f"untimed first statistics call of {SMALL:,} rows: {first:.2f} s")
        schema = workdir / "schema.pbtxt"
        runtime_call.call(runtimes.TFDV, INFER_SCHEMA, statistics_dir=str(warm), split="train",
                          schema_path=str(schema), problem=PROBLEM)
        cases = [measure_statistics(paths[SMALL], SMALL, args.repeats, workdir)]
        cases[0]["first_call_s"] = first

        pinned = workdir / "schema-copy.pbtxt"
        features = len([line for line in schema.read_text().splitlines() if line.startswith("feature {")])
        boundary.append(measure_boundary(
            f'runtime_call.call("tfdv", "{INFER_SCHEMA}", pinned_schema=...)',
            lambda: runtime_call.call(runtimes.TFDV, INFER_SCHEMA, statistics_dir="", split="train",
                                      schema_path=str(pinned), problem=PROBLEM, pinned_schema=str(schema)),
            {"features": features, "pinned": True}, args.boundary_repeats))
        cases.append(measure_statistics(paths[large], large, args.repeats, workdir))

    tfdv_boundary = boundary[2]["seconds"]["median"]
    for case in cases:
        case["beyond_boundary_s"] = case["wall_s"]["median"] - tfdv_boundary
    results["statistics"], results["boundary"] = cases, boundary
    results["wall_s"] = time.monotonic() - started
    write_results("validation", results, markdown(results))


# --- report --------------------------------------------------------------------------------


def spread(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{s['median'] * scale:,.{digits}f} ({s['min'] * scale:,.{digits}f}–{s['max'] * scale:,.{digits}f})"


def markdown(results: dict) -> str:
    m, env = results["machine"], results["tfdv_env"]
    lines = ["# Data validation: TFDV statistics through the runtime boundary", ""]
    if results["quick"]:
        lines += ["**Quick smoke run (`--quick`): 1 repeat, 100,000 rows instead of 1,000,000; not a measurement.**",
                  ""]
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']} (core). tfdv environment: "
        + ", ".join(f"{name} {version}" for name, version in env.items()) + ".",
        "Data: the taxi sample (data.csv, typed and labelled as ingestion does) resampled with replacement "
        f"(seed {results['seed']}), Parquet. Median (min–max) over {results['repeats']} repeat(s) "
        f"(statistics) and {results['boundary_repeats']} (boundary).",
        "",
        "## Statistics (`generate_statistics` of one split, called from core through `runtime_call`)",
        "",
        "End to end: the whole boundary call (interpreter start, imports, read + type the Parquet file, TFDV, "
        "FeatureStats.pb and the Facets page). TFDV: `generate_statistics_from_dataframe` alone, as the child "
        "logs it (0.1 s resolution). Beyond the boundary: end to end minus the TFDV-importing boundary call below. "
        "Peak RSS: the largest child so far (`ru_maxrss`), cases run smallest first.",
        "",
        "| rows | Parquet MiB | end to end s | TFDV s (child's log) | beyond the boundary s | rows/s (end to end) "
        "| peak child RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results["statistics"]:
        lines.append(f"| {c['rows']:,} | {c['parquet_mib']:.1f} | {spread(c['wall_s'])} "
                     f"| {spread(c['tfdv_logged_s'], digits=1)} | {c['beyond_boundary_s']:.2f} "
                     f"| {spread(c['rows_per_second'], digits=0)} "
                     f"| {c['peak_child_rss_mib']:,.0f} |")
    lines += [
        "",
        f"The first (untimed) statistics call of {results['statistics'][0]['rows']:,} rows took "
        f"{results['statistics'][0]['first_call_s']:.2f} s.",
        "",
        "## Boundary overhead per call",
        "",
        "| call | what it pays | per call | first call s |",
        "|---|---|---|---|",
    ]
    what = ["nothing crossed", "interpreter start, Slipway import, JSON files",
            "+ import TFDV (data_validation), load the problem, parse and write a schema"]
    for b, paid in zip(results["boundary"], what, strict=True):
        first = f"{b['first_call_s']:.2f}" if "first_call_s" in b else ""
        per_call = (f"{spread(b['seconds'], 1e6, 3)} µs" if "calls_per_repeat" in b
                    else f"{spread(b['seconds'], 1000, 0)} ms")
        lines.append(f"| `{b['call']}` | {paid} | {per_call} | {first} |")
    import_tfdv = results["boundary"][2]["seconds"]["median"] - results["boundary"][1]["seconds"]["median"]
    lines += ["", f"Importing TFDV and the validation module (difference of the medians): {import_tfdv:.2f} s.",
              "", f"Wall time: {results['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, runtime_call.RuntimeCallError) as error:
        sys.exit(f"bench/validation.py failed: {error}")

"""Benchmark: the training pipeline (tuner off) at 10k, 100k, 1M and 10M trips: wall time, each task's time and
peak resident memory.

Each run is `slipway run training --data <csv> --set tuner=off` in a fresh process with its own pipeline root
(a fresh registry, so every run trains, registers and deploys as a first run does). The data is the taxi sample
and its resamplings over proportionally longer spans (bench/scaled_taxi.py). Task times are kfp.local's own
("Executing task" to "finished" in its log); the run's peak memory is the largest peak of any one of its
processes (`os.wait4`'s ru_maxrss over the run and its waited-for descendants). Each data step's own peak is
`--feature-steps`'s.

    python bench/scale.py [--rows 10000 100000 1000000] [--repeats 3]
    python bench/scale.py --feature-steps [--rows 1000000 10000000]

Writes bench/results/scale.json and .md: median and spread of the wall time, and per task the median time and
the largest peak over the repeats, with the machine. `--feature-steps` runs the data steps alone (ingest,
feature tables, Feast apply, the two training sets: the library calls the pipeline's tasks make), then batch
scoring of every trip with the point-in-time join (with a model trained for it on 50,000 rows), each in a
fresh process whose peak RSS is its own `ru_maxrss` (os.wait4), and writes bench/results/scale_features.*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, summary, write_results
from scaled_taxi import scaled_sample

from slipway.sample_data import fetch_sample

ROOT = Path(__file__).resolve().parent.parent
SLIPWAY = Path(sys.executable).parent / "slipway"
TASK_LINE = re.compile(r"(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task '([\w-]+)'|Task '([\w-]+)' finished)")


@dataclasses.dataclass
class Run:
    rows: int
    seconds: float
    ok: bool
    tasks: dict[str, float]  # seconds
    peak_rss_mib: float  # the largest peak of any one process of the run (os.wait4's ru_maxrss)
    tail: str


def _task_seconds(log: str) -> dict[str, float]:
    started, seconds = {}, {}
    for match in TASK_LINE.finditer(re.sub(r"\x1b\[[0-9;]*m", "", log)):
        clock = sum(float(part) * unit for part, unit in zip(match.group(1).split(":"), (3600, 60, 1), strict=True))
        if match.group(2):
            started[match.group(2)] = clock
        elif match.group(3) in started:
            seconds[match.group(3)] = (clock - started[match.group(3)]) % 86400
    return seconds


def run_once(rows: int, data: Path) -> Run:
    root = Path(tempfile.mkdtemp(prefix=f"slipway-scale-{rows}-"))
    log_path = root / "run.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(SLIPWAY), "run", "training", "--data", str(data), "--set", "tuner=off",
                                    "--pipeline-root", str(root / "runs")], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    text = log_path.read_text()
    shutil.rmtree(root, ignore_errors=True)
    return Run(rows=rows, seconds=seconds, ok=os.waitstatus_to_exitcode(status) == 0, tasks=_task_seconds(text),
               peak_rss_mib=usage.ru_maxrss / 1024, tail="\n".join(text.splitlines()[-3:]))


FEATURE_STEPS = {
    "ingest": "from slipway.components.ingestion import ingest_source\n"
              "ingest_source(data, problem, work / 'train.parquet', work / 'eval.parquet')",
    "feature-tables": "from slipway.components.feature_aggregates import write_feature_tables\n"
                      "write_feature_tables([work / 'train.parquet', work / 'eval.parquet'], problem, work / 'tables')",
    "feast-apply": "from slipway.components.feature_store import StoreConfig, apply, open_store\n"
                   "apply(open_store(StoreConfig(repo_dir=work / 'repo'), problem), problem, "
                   "{e: work / 'tables' / f'{e}.parquet' for e in problem.entities})",
    "training-set": "from slipway.components.feature_store import StoreConfig, open_store, write_training_set\n"
                    "write_training_set(open_store(StoreConfig(repo_dir=work / 'repo'), problem), problem, "
                    "work / 'train.parquet', work / 'set-train.parquet')",
    "training-set-2": "from slipway.components.feature_store import StoreConfig, open_store, write_training_set\n"
                      "write_training_set(open_store(StoreConfig(repo_dir=work / 'repo'), problem), problem, "
                      "work / 'eval.parquet', work / 'set-eval.parquet')",
    # A model to score with (one epoch on 50,000 rows of the training sets: its quality is beside the point).
    "train-small-model": "import pyarrow as pa, pyarrow.parquet as pq\n"
                         "from slipway.components.train_config import TrainConfig\n"
                         "from slipway.components.trainer import train\n"
                         "for name in ('train', 'eval'):\n"
                         "    rows = next(pq.ParquetFile(work / f'set-{name}.parquet').iter_batches(50_000))\n"
                         "    pq.write_table(pa.Table.from_batches([rows]), work / f'small-{name}.parquet')\n"
                         "train(work / 'small-train.parquet', work / 'small-eval.parquet', problem, "
                         "TrainConfig(epochs=1), work / 'model', work / 'checkpoints')",
    # Batch scoring of every trip of the source with the point-in-time join, as `slipway score --feature-repo`.
    "batch-score-with-join": "import json\n"
                             "from slipway.components.batch_prediction import feature_join\n"
                             "from slipway.components.batch_scoring import score_file\n"
                             "from slipway.components.feature_store import StoreConfig\n"
                             "with feature_join(StoreConfig(repo_dir=work / 'repo'), problem) as join:\n"
                             "    result = score_file(data, work / 'model', work / 'scores', model_version='bench', "
                             "run_id='bench', join=join)\n"
                             "print(json.dumps({'rows_per_s': result.rows_per_s, 'scored': result.scored, "
                             "'rejected': result.rejected}))",
}
STEP_PRELUDE = ("import sys\nfrom pathlib import Path\nfrom slipway import logs\nfrom slipway.problem import "
                "load_problem\nlogs.configure()\ndata, work = sys.argv[1], Path(sys.argv[2])\n"
                "problem = load_problem('chicago_taxi')\n")


def feature_steps(rows: int, data: Path) -> dict:
    """Each data step in its own process, in order, on one work folder: seconds and peak RSS (MiB) per step."""
    work = Path(tempfile.mkdtemp(prefix=f"slipway-scale-features-{rows}-"))
    steps = {}
    try:
        for name, code in FEATURE_STEPS.items():
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", STEP_PRELUDE + code, str(data), str(work)], cwd=ROOT,
                                       stdout=subprocess.PIPE, text=True)
            answer = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            steps[name] = {"seconds": time.perf_counter() - started, "peak_rss_mib": usage.ru_maxrss / 1024,
                           "ok": process.returncode == 0}
            last = answer.strip().splitlines()[-1] if answer.strip() else ""
            if last.startswith("{"):
                steps[name].update(json.loads(last))
            print(f"{rows:,} trips, {name}: {steps[name]}", flush=True)
            if process.returncode != 0:
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows, "steps": steps}


def feature_report(results: dict) -> str:
    sizes = results["sizes"]
    lines = [f"# The data steps at scale: ingest, feature tables, Feast apply, the training sets\n\nMachine: "
             f"{results['machine']['cpu']}, {results['machine']['cores']} cores. `python bench/scale.py "
             f"--feature-steps` ({time.strftime('%Y-%m-%d')}); each step a fresh process, one run.\n",
             "| step | " + " | ".join(f"{size['rows']:,} trips: s, peak RSS MiB" for size in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for name in FEATURE_STEPS:
        cells = []
        for size in sizes:
            step = size["steps"].get(name)
            cells.append("-" if step is None else f"{step['seconds']:.1f} s, {step['peak_rss_mib']:,.0f}"
                         + (f" ({step['rows_per_s']:,.0f} rows/s)" if "rows_per_s" in step else "")
                         + ("" if step["ok"] else " FAILED"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [sum(step["seconds"] for step in size["steps"].values()) for size in sizes]
    lines.append("| (all) | " + " | ".join(f"{total:.1f} s" for total in totals) + " |")
    return "\n".join(lines) + "\n"


def report(results: dict) -> str:
    lines = [f"# The training pipeline at scale (tuner off)\n\nMachine: {results['machine']['cpu']}, "
             f"{results['machine']['cores']} cores; load average {results['load']}. `python bench/scale.py` "
             f"({time.strftime('%Y-%m-%d')}). Peak RSS: the largest of any one process of the run (each step's own "
             "peak at 1M and 10M trips: `--feature-steps`).\n",
             "| trips | runs | wall s, median (min-max) | slowest task | peak RSS of one process |",
             "|---|---|---|---|---|"]
    for size in results["sizes"]:
        wall = size["wall"]
        slowest = max(size["tasks"].items(), key=lambda item: item[1], default=("-", 0))
        lines.append(f"| {size['rows']:,} | {len(wall['runs'])} ({size['failed']} failed) | {wall['median']:.1f} "
                     f"({wall['min']:.1f}-{wall['max']:.1f}) | {slowest[0]} {slowest[1]:.1f} s | "
                     f"{size['peak_rss_mib']:,.0f} MiB |")
    for size in results["sizes"]:
        lines += [f"\n## {size['rows']:,} trips: each task (median s over the runs)\n", "| task | s |", "|---|---|"]
        lines += [f"| {task} | {seconds:.1f} |" for task, seconds in size["tasks"].items()]
        lines.append(f"| (sum of tasks) | {sum(size['tasks'].values()):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="runs at the sample's size; larger sizes run once")
    parser.add_argument("--feature-steps", action="store_true", help="the data steps alone, at 1M and 10M trips")
    args = parser.parse_args()
    sample = fetch_sample()["data.csv"]
    if args.feature_steps:
        rows = args.rows if args.rows != parser.get_default("rows") else [1_000_000, 10_000_000]
        results = {"machine": machine(), "sizes": [feature_steps(n, scaled_sample(n)) for n in rows]}
        write_results("scale_features", results, feature_report(results))
        return
    sizes = []
    for rows in args.rows:
        data = sample if rows == 10_000 else scaled_sample(rows)
        runs = [run_once(rows, data) for _ in range(args.repeats if rows <= 10_000 else 1)]
        for run in runs:
            print(f"{rows:,} trips: {run.seconds:.1f} s, {'ok' if run.ok else 'FAILED'}\n{run.tail}", flush=True)
        good = [run for run in runs if run.ok] or runs
        tasks = {task: statistics.median(run.tasks.get(task, 0.0) for run in good) for task in good[0].tasks}
        sizes.append({"rows": rows, "wall": summary([run.seconds for run in good]), "failed": len(runs) - len(good)
                      if any(run.ok for run in runs) else len(runs), "tasks": tasks,
                      "peak_rss_mib": max(run.peak_rss_mib for run in good)})
    results = {"machine": machine(), "load": " ".join(f"{value:.1f}" for value in os.getloadavg()), "sizes": sizes}
    write_results("scale", results, report(results))


if __name__ == "__main__":
    main()

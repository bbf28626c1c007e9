"""Benchmark: what kfp.local costs per task, and what the training pipeline costs end to end.

Per-task overhead is measured on a chain of trivial tasks (x -> x + 1), so it is the runner's
cost alone: process start, executor input/output files, KFP's executor. The marginal cost of a
task is (T(chain of N) - T(chain of 1)) / (N - 1), which removes the pipeline's fixed start-up.
Two component builds are compared: Slipway's (`install_kfp_package=False`) and KFP's default
(`install_kfp_package=True`, which makes every task run `pip install kfp` first).

    python bench/kfp_local_overhead.py [--repeats 5] [--chain 10]

Writes bench/results/kfp_local_overhead.json and .md (median and spread, and the machine).
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, summary, write_results
from kfp import dsl

from slipway import runtimes
from slipway.pipelines.local import run_local
from slipway.pipelines.training import training
from slipway.sample_data import fetch_sample


@dsl.component(base_image=runtimes.CORE_IMAGE, install_kfp_package=False)
def increment(x: int) -> int:
    return x + 1


@dsl.component(base_image=runtimes.CORE_IMAGE)
def increment_with_kfp_default(x: int) -> int:
    return x + 1


def chain(component, length: int):
    @dsl.pipeline(name=f"chain-{length}")
    def pipeline(x: int = 0) -> int:
        task = component(x=x)
        for _ in range(length - 1):
            task = component(x=task.output)
        return task.output

    return pipeline


def timed_runs(pipeline, arguments: dict, repeats: int, root: Path) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_local(pipeline, arguments, root)
        seconds.append(time.perf_counter() - started)
    return seconds


def per_task(component, length: int, repeats: int, root: Path) -> dict:
    single = timed_runs(chain(component, 1), {}, repeats, root)
    long = timed_runs(chain(component, length), {}, repeats, root)
    marginal = [(lo - s) / (length - 1) for lo, s in zip(sorted(long), sorted(single), strict=True)]
    return {"chain_length": length, "pipeline_of_1_s": summary(single), f"pipeline_of_{length}_s": summary(long),
            "marginal_per_task_s": summary(marginal),
            "average_per_task_s": summary([t / length for t in long])}


def markdown(results: dict) -> str:
    rows = [
        "| measurement | median | min | max |",
        "|---|---|---|---|",
    ]
    for label, key in (("Slipway components (install_kfp_package=False)", "slipway"),
                       ("KFP default (install_kfp_package=True)", "kfp_default")):
        for metric in ("marginal_per_task_s", "average_per_task_s"):
            s = results[key][metric]
            rows.append(f"| {label}: {metric.replace('_s', '').replace('_', ' ')} | {s['median']:.3f} s | "
                        f"{s['min']:.3f} s | {s['max']:.3f} s |")
    t = results["training_pipeline_s"]
    rows.append(f"| training pipeline on data.csv (ingest, train 20 epochs, evaluate) | {t['median']:.2f} s | "
                f"{t['min']:.2f} s | {t['max']:.2f} s |")
    m = results["machine"]
    return (f"# kfp.local overhead\n\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. "
            f"Repeats: {results['repeats']}.\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chain", type=int, default=10)
    args = parser.parse_args()
    sample = str(fetch_sample()["data.csv"])
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        root = Path(tmp)
        results = {
            "machine": machine(),
            "repeats": args.repeats,
            "slipway": per_task(increment, args.chain, args.repeats, root),
            # The default build pip-installs kfp in every task: fewer repeats keep the bench short.
            "kfp_default": per_task(increment_with_kfp_default, args.chain, max(2, args.repeats // 2), root),
            "training_pipeline_s": summary(timed_runs(training, {"source_uri": sample}, args.repeats, root)),
        }
    write_results("kfp_local_overhead", results, markdown(results))


if __name__ == "__main__":
    main()

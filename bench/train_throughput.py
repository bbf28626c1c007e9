"""Benchmark: training throughput (rows/s) with 1 and 2 DDP processes, and on a GPU when there is one.

The taxi train split is resampled (with replacement, fixed seed) to `--rows` rows so that an
epoch is long enough to time; the eval split is the real one. Each configuration trains
`--epochs` epochs through the same launcher the `train` component uses (torchrun for 2
processes), `--repeats` times; the figure is the trainer's own training rows/s (all processes
together, eval and checkpoints excluded). On a machine with CUDA the trainer picks NCCL and
bf16 autocast by itself; `--processes` chooses what to compare.

    python bench/train_throughput.py [--rows 200000] [--epochs 3] [--repeats 3] [--processes 1 2] \
        [--batch-sizes 256 4096]
    python bench/train_throughput.py --rows 1000000 --batch-sizes 16384 --processes 1   # on a GPU

Writes bench/results/train_throughput.json and .md (median and spread, and the machine).
"""

import argparse
import dataclasses
import itertools
import tempfile
from pathlib import Path

import pandas as pd
import torch
from common import machine, summary, write_results

from slipway.components.ingestion import ingest_source
from slipway.components.launcher import run_local_training
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import trainer_arguments
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample


def resampled_splits(rows: int, directory: Path) -> tuple[Path, Path]:
    problem = load_problem()
    train, evaluation = directory / "train.parquet", directory / "eval.parquet"
    ingest_source(str(fetch_sample()["data.csv"]), problem, train, evaluation)
    big = directory / f"train-{rows}.parquet"
    pd.read_parquet(train).sample(n=rows, replace=True, random_state=0).reset_index(drop=True).to_parquet(big)
    return big, evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[TrainConfig.batch_size, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    config = TrainConfig(epochs=args.epochs, patience=args.epochs)
    results = {"machine": machine(), "device": device, "rows": args.rows, "config": dataclasses.asdict(config),
               "repeats": args.repeats, "runs": []}
    with tempfile.TemporaryDirectory(prefix="slipway-bench-train-") as tmp:
        train, evaluation = resampled_splits(args.rows, Path(tmp))
        for batch_size, processes in itertools.product(args.batch_sizes, args.processes):
            rates, memory, aucs = [], [], []
            for repeat in range(args.repeats):
                out = Path(tmp) / f"b{batch_size}-p{processes}-{repeat}"
                run_config = dataclasses.replace(config, batch_size=batch_size)
                result = run_local_training(trainer_arguments(str(train), str(evaluation), str(out / "model"),
                                                              str(out / "checkpoints"), "chicago_taxi", run_config),
                                            processes)
                rates.append(result.rows_per_second)
                aucs.append(result.eval_auc)
                memory.append(result.peak_gpu_memory_mib)
            results["runs"].append({
                "batch_size": batch_size, "processes": processes, "rows_per_second": summary(rates),
                "eval_auc": aucs,
                "peak_gpu_memory_mib": max(memory) if all(m is not None for m in memory) else None,
            })
    write_results("train_throughput", results, markdown(results))


def markdown(results: dict) -> str:
    m = results["machine"]
    rows = ["| global batch | processes | rows/s median | min | max | eval AUC (per repeat) | peak GPU memory |",
            "|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        s = r["rows_per_second"]
        memory = f"{r['peak_gpu_memory_mib']:.0f} MiB" if r["peak_gpu_memory_mib"] is not None else "n/a (CPU)"
        rows.append(f"| {r['batch_size']} | {r['processes']} | {s['median']:,.0f} | {s['min']:,.0f} | "
                    f"{s['max']:,.0f} | "
                    f"{', '.join(f'{a:.4f}' for a in r['eval_auc'])} | {memory} |")
    c = results["config"]
    return (f"# Training throughput\n\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; device "
            f"{results['device']}. {results['rows']:,} train rows (taxi resampled), {c['epochs']} epochs, "
            f"MLP {c['hidden_units']}; {results['repeats']} repeats. Training rows/s of all processes together, "
            f"eval and checkpoints excluded.\n\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()

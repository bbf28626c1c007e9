"""Benchmark: batch scoring rows/s and peak memory on 1M and 10M rows, against the bare model loop (the limit).

The data: the real taxi training set with its point-in-time Feast features (ingest, local Feast store,
`write_training_sets`, as the training pipeline makes it), resampled with replacement (fixed seed) to
each size and written once as Parquet (row groups of 131,072 rows) under bench/data/batch_scoring/,
with the MLP trained on it (3 epochs). Both are reused by later runs.

Each scoring run is a fresh process calling `components.batch_scoring.score_file` (every input column
copied to the output, rejects, manifest, the atomic rename: the whole thing), so its peak RSS is that
process's `ru_maxrss`; rows/s is the scorer's own, read to written. The limit is the model alone: a
bare `module(numeric, categorical)` loop over tensors pre-built from the first 1M rows, at the same
batch size and torch threads, under `torch.inference_mode()`, also in a fresh process. The ratio is the
median scorer rows/s over the median limit rows/s.

    python bench/batch_scoring.py [--rows 1000000 10000000] [--repeats 5] [--large-repeats 2]
    python bench/batch_scoring.py --sweep            # chunk_rows x batch_size x threads on 1M, 1 run each
    python bench/batch_scoring.py --device cuda      # on a GPU: the scorer and the limit both on it

Writes bench/results/batch_scoring.json and .md (on a GPU: batch_scoring_cuda.*), median and spread, and the
machine. On a GPU the limit's tensors are on the GPU before the clock starts, and the loop ends with a sync.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from common import machine, summary, write_results

from slipway import logs
from slipway.components.batch_scoring import ScoringConfig
from slipway.problem import load_problem

DATA = Path(__file__).resolve().parent / "data" / "batch_scoring"
ROW_GROUP = 131_072

SCORE = """
import json, sys
from pathlib import Path
from slipway.components.batch_scoring import ScoringConfig, peak_rss_bytes, score_file
source, model, output, config = sys.argv[1:]
result = score_file(source, Path(model), output, model_version="bench", run_id="bench",
                    config=ScoringConfig(**json.loads(config)))
print(json.dumps({"rows_per_s": result.rows_per_s, "seconds": result.seconds, "rows": result.rows_in,
                  "scored": result.scored, "peak_rss_mib": peak_rss_bytes() / 2**20}))
"""

LIMIT = """
import json, sys, tempfile, time, torch, numpy as np, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from slipway.components.batch_scoring import ChunkScorer, ScoringConfig
from slipway.components.model_artifact import load_model
source, model, rows, batch_size, threads, repeats, chunk_rows, device = sys.argv[1:]
rows, batch_size, threads, repeats, chunk_rows = map(int, (rows, batch_size, threads, repeats, chunk_rows))
torch.set_num_threads(threads)
scorer = ChunkScorer(load_model(Path(model)), ScoringConfig(device=device))
sync = torch.cuda.synchronize if scorer.device.type == "cuda" else (lambda: None)
parts = {}
started = time.perf_counter()
table = pq.ParquetFile(source, pre_buffer=False).read_row_groups(range(0, -(-rows // GROUP))).slice(0, rows)
parts["read Parquet"] = time.perf_counter() - started
started = time.perf_counter()
for start in range(0, rows, chunk_rows):
    scorer.transform(table.slice(start, chunk_rows))
parts["transform (features, rejects)"] = time.perf_counter() - started
numeric, categorical, _ = scorer.transform(table)
# Pre-built, in the model's layout, on its device.
numeric, categorical = numeric.to(scorer.device).contiguous(), categorical.to(scorer.device).contiguous()
rates = []
with torch.inference_mode():
    for _ in range(repeats + 1):  # the first pass warms the allocator and is not counted
        sync()
        started = time.perf_counter()
        for start in range(0, rows, batch_size):
            scorer.module(numeric[start:start + batch_size], categorical[start:start + batch_size])
        sync()
        rates.append(rows / (time.perf_counter() - started))
parts["model"] = rows / float(np.median(rates[1:]))
out = table.append_column("score", pa.array(np.zeros(rows))).append_column("model_version", pa.array(["v"] * rows))
with tempfile.TemporaryDirectory() as tmp:
    started = time.perf_counter()
    pq.write_table(out.append_column("run_id", pa.array(["r"] * rows)), Path(tmp) / "out.parquet")
    parts["write Parquet (40 columns)"] = time.perf_counter() - started
print(json.dumps({"rates": rates[1:], "seconds": parts}))
""".replace("GROUP", str(ROW_GROUP))


def prepare(sizes: list[int]) -> tuple[Path, dict[int, Path]]:
    """The model and one resampled Parquet file per size, made once under bench/data/batch_scoring/."""
    model, training_set = DATA / "model", DATA / "sets" / "train.parquet"
    if not (model / "model.json").is_file():
        from slipway.components.feature_store import local_store, write_training_sets
        from slipway.components.ingestion import ingest_source
        from slipway.components.train_config import TrainConfig
        from slipway.components.trainer import train
        from slipway.problem import load_problem
        from slipway.sample_data import fetch_sample

        problem = load_problem()
        splits = DATA / "train.parquet", DATA / "eval.parquet"
        ingest_source(str(fetch_sample()["data.csv"]), problem, *splits)
        sets = write_training_sets(local_store(splits, problem, DATA / "feature_repo"), problem, splits,
                                   DATA / "sets")
        train(*sets, problem, TrainConfig(epochs=3), model, DATA / "checkpoints")
    files = {}
    for rows in sizes:
        files[rows] = path = DATA / f"taxi-{rows}.parquet"
        if path.is_file():
            continue
        source = pq.read_table(training_set).replace_schema_metadata(None)
        picks = np.random.default_rng(0).integers(0, source.num_rows, rows)
        partial = path.with_suffix(".partial")
        with pq.ParquetWriter(partial, source.schema) as writer:
            for start in range(0, rows, 1_000_000):
                writer.write_table(source.take(pa.array(picks[start:start + 1_000_000])), row_group_size=ROW_GROUP)
        partial.rename(path)
    return model, files


def score_once(source: Path, model: Path, config: dict) -> dict:
    output = DATA / "scores"
    done = subprocess.run([sys.executable, "-c", SCORE, str(source), str(model), str(output), json.dumps(config)],
                          check=True, capture_output=True, text=True)
    shutil.rmtree(output, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def limit(source: Path, model: Path, rows: int, batch_size: int, threads: int, repeats: int,
          chunk_rows: int, device: str) -> dict:
    """The bare model loop's rows/s, and the seconds of each stage of scoring `rows` rows done alone."""
    done = subprocess.run([sys.executable, "-c", LIMIT, str(source), str(model), str(rows), str(batch_size),
                           str(threads), str(repeats), str(chunk_rows), device], check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep(model: Path, source: Path) -> None:
    print("chunk_rows batch_size threads  rows/s  peak RSS MiB")
    for chunk_rows in (65_536, 262_144):
        for batch_size in (4_096, 16_384, 65_536):
            for threads in (1, 2):
                run = score_once(source, model, {"chunk_rows": chunk_rows, "batch_size": batch_size,
                                                 "threads": threads})
                print(f"{chunk_rows:>10} {batch_size:>10} {threads:>7} {run['rows_per_s']:>9,.0f} "
                      f"{run['peak_rss_mib']:>8,.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="runs on the smallest size")
    parser.add_argument("--large-repeats", type=int, default=2, help="runs on each larger size")
    parser.add_argument("--sweep", action="store_true", help="only compare chunk/batch/threads on the smallest size")
    parser.add_argument("--device", default="cpu", help="cpu (the default, the 2-core figures), cuda or auto")
    args = parser.parse_args()
    logs.configure()
    sizes = sorted(args.rows)
    model, files = prepare(sizes)
    if args.sweep:
        sweep(model, files[sizes[0]])
        return
    config = ScoringConfig(device=args.device)
    device = config.torch_device()
    threads, batch_size = config.torch_threads(), config.model_batch_size(device)
    load_before = os.getloadavg()
    results: dict = {"machine": machine(), "config": {k: str(v) if isinstance(v, Path) else v
                                                      for k, v in dataclasses.asdict(config).items()},
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "threads": threads, "batch_size": batch_size,
                     "load_average_before": load_before, "sizes": {}}
    limit_rows = min(sizes[0], 1_000_000)
    alone = limit(files[sizes[0]], model, limit_rows, batch_size, threads, args.repeats, config.chunk_rows,
                  str(device))
    results["limit"] = summary(alone["rates"])
    results["stages_seconds"] = {"rows": limit_rows, "threads": threads, **alone["seconds"]}
    every_core = os.cpu_count() or 1
    if every_core != threads and device.type == "cpu":  # the model alone on every core, nothing beside it
        rates = limit(files[sizes[0]], model, limit_rows, batch_size, every_core, args.repeats,
                      config.chunk_rows, "cpu")["rates"]
        results["limit_every_core"] = {"threads": every_core, **summary(rates)}
    for rows in sizes:
        runs = [score_once(files[rows], model, {"device": args.device})
                for _ in range(args.repeats if rows == sizes[0] else args.large_repeats)]
        assert all(run["scored"] == rows for run in runs), runs
        results["sizes"][str(rows)] = {"rows_per_s": summary([r["rows_per_s"] for r in runs]),
                                       "peak_rss_mib": summary([r["peak_rss_mib"] for r in runs]),
                                       "file_mib": files[rows].stat().st_size / 2**20}
        print(f"{rows:,} rows: {results['sizes'][str(rows)]}", flush=True)
    # The same on the smallest size, the output keeping only the row's identity (timestamp and entities):
    # what the 37 copied columns cost to write.
    problem = load_problem()
    keep = [problem.timestamp.column, *problem.entities]
    runs = [score_once(files[sizes[0]], model, {"keep_columns": keep, "device": args.device})
            for _ in range(args.repeats)]
    results["narrow"] = {"rows": sizes[0], "keep_columns": keep,
                         "rows_per_s": summary([r["rows_per_s"] for r in runs]),
                         "peak_rss_mib": summary([r["peak_rss_mib"] for r in runs])}
    results["load_average_after"] = os.getloadavg()
    write_results("batch_scoring" if device.type == "cpu" else f"batch_scoring_{device.type}", results,
                  report(results))


def report(results: dict) -> str:
    m, lim = results["machine"], results["limit"]
    config = results["config"]
    lines = [
        "# Batch scoring",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {results['torch']}; device "
        f"{results['device']}, torch threads {results['threads']}. Load average before / after: "
        f"{results['load_average_before'][0]:.2f} / "
        f"{results['load_average_after'][0]:.2f} (other work on the machine shows here).",
        "",
        f"`score_file` with the default `ScoringConfig` (chunk_rows {config['chunk_rows']:,}, batch_size "
        f"{results['batch_size']:,}), the real taxi training set with its Feast features resampled to each size "
        "(37 columns, all copied to the output with `score`, `model_version`, `run_id`), one fresh process per run: "
        "read, transform, model, write the parts, rejects and manifest, rename into place.",
        "",
        "| rows | runs | rows/s median | min | max | peak RSS (MiB) median | max | ratio to the limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rows, size in results["sizes"].items():
        rate, rss = size["rows_per_s"], size["peak_rss_mib"]
        lines.append(f"| {int(rows):,} | {len(rate['runs'])} | {rate['median']:,.0f} | {rate['min']:,.0f} | "
                     f"{rate['max']:,.0f} | {rss['median']:,.0f} | {rss['max']:,.0f} | "
                     f"{rate['median'] / lim['median']:.0%} |")
    narrow = results["narrow"]
    rate, rss = narrow["rows_per_s"], narrow["peak_rss_mib"]
    lines.append(f"| {narrow['rows']:,}, output keeps only {', '.join(narrow['keep_columns'])} | {len(rate['runs'])} | "
                 f"{rate['median']:,.0f} | {rate['min']:,.0f} | {rate['max']:,.0f} | {rss['median']:,.0f} | "
                 f"{rss['max']:,.0f} | {rate['median'] / lim['median']:.0%} |")
    lines += [
        "",
        f"The limit: a bare `module(numeric, categorical)` loop over tensors pre-built from 1M rows, batch "
        f"{results['batch_size']:,}, {results['threads']} torch threads, on {results['device']}, inference_mode: "
        f"{lim['median']:,.0f} rows/s median ({lim['min']:,.0f}-{lim['max']:,.0f}, {len(lim['runs'])} runs). "
        "Goal: the scorer at >= 70% of it.",
    ]
    if "limit_every_core" in results:
        every = results["limit_every_core"]
        lines.append(f"The same loop on all {every['threads']} cores: {every['median']:,.0f} rows/s median "
                     f"({every['min']:,.0f}-{every['max']:,.0f}); the scorers' medians are "
                     + ", ".join(f"{size['rows_per_s']['median'] / every['median']:.0%}"
                                 for size in results["sizes"].values())
                     + " of it.")
    stages = results["stages_seconds"]
    lines += ["", f"Where the time goes: each stage alone on {stages['rows']:,} rows, {stages['threads']} thread "
                  "(seconds; the scorer overlaps them on its threads):", ""]
    lines += [f"- {name}: {seconds:.2f} s" for name, seconds in stages.items() if name not in ("rows", "threads")]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")

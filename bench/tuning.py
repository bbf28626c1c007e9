"""Benchmark: does the local study find better hyperparameters than the defaults, and how fast does it try them?

The sample (data.csv) is ingested and joined point in time with its Feast features, as the training
pipeline feeds the model; then

- the default TrainConfig is trained once (in this process, as a trial is) and its best eval AUC kept;
- the packaged search space (slipway/search_spaces/default.yaml: TPE, median stopping, 20 trials,
  2 at a time) runs as an Optuna study through `components.tuning.tune`, every trial the real
  trainer on the same training sets, logged to an embedded MLflow store.

Reported: the default's eval AUC, the study's best and its parameters, how many trials completed
or were pruned, and trials per minute of wall time on this machine. One study per repeat, with a
different sampler seed each.

    python bench/tuning.py [--repeats 1] [--trials 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import yaml
from common import machine, summary, write_results

from slipway import logs
from slipway.components.feature_store import local_store, write_training_sets
from slipway.components.ingestion import ingest_source
from slipway.components.search_space import SEARCH_SPACES_DIR, parse_search_space
from slipway.components.tracking import TrackingConfig
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import train
from slipway.components.tuning import tune
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="studies to run, each with its own seed")
    parser.add_argument("--trials", type=int, default=20, help="trials per study")
    args = parser.parse_args()
    logs.configure()
    problem = load_problem()
    raw = yaml.safe_load((SEARCH_SPACES_DIR / "default.yaml").read_text())
    raw["budget"]["max_trials"] = args.trials
    raw["objective"].pop("goal", None)  # measure the whole budget, not the first trial past the goal
    results: dict = {"machine": machine(), "trials_per_study": args.trials, "studies": []}
    with tempfile.TemporaryDirectory(prefix="slipway-bench-tuning-") as tmp:
        workdir = Path(tmp)
        ingest_source(str(fetch_sample()["data.csv"]), problem, workdir / "train.parquet", workdir / "eval.parquet")
        splits = (workdir / "train.parquet", workdir / "eval.parquet")
        sets = write_training_sets(local_store(splits, problem, workdir / "feature_repo"), problem, splits, workdir)

        started = time.monotonic()
        default = train(*sets, problem, TrainConfig(), workdir / "default" / "model", workdir / "default" / "ckpt")
        results["default"] = {"eval_auc": default.eval_auc, "seconds": time.monotonic() - started,
                              "config": dataclasses.asdict(TrainConfig())}
        for repeat in range(args.repeats):
            raw["algorithm"]["settings"] = {"random_state": repeat}
            space = parse_search_space(raw, str(SEARCH_SPACES_DIR / "default.yaml"))
            started = time.monotonic()
            tracking = TrackingConfig.embedded(workdir / f"mlflow-{repeat}")
            result = tune(space, *sets, problem, workdir, tracking=tracking)
            seconds = time.monotonic() - started
            results["studies"].append({"seed": repeat, "best_eval_auc": result.best_value,
                                       "best_params": result.best_params, "counts": result.counts(),
                                       "seconds": seconds, "trials_per_minute": len(result.trials) / seconds * 60})
    results["best_eval_auc"] = summary([s["best_eval_auc"] for s in results["studies"]])
    results["trials_per_minute"] = summary([s["trials_per_minute"] for s in results["studies"]])
    write_results("tuning", results, markdown(results))


def markdown(results: dict) -> str:
    m = results["machine"]
    best, rate = results["best_eval_auc"], results["trials_per_minute"]
    lines = [
        "# Tuning: the local study against the default hyperparameters", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. Data: data.csv ingested and joined point in "
        f"time with its Feast features (7,998 train, 2,002 eval trips). Search space: slipway/search_spaces/"
        f"default.yaml (TPE, median stopping), {results['trials_per_study']} trials, 2 at a time, each the real "
        f"trainer (20 epochs, patience 3).", "",
        f"- Default TrainConfig: eval AUC **{results['default']['eval_auc']:.4f}** "
        f"({results['default']['seconds']:.1f} s).",
        f"- Study best: eval AUC **{best['median']:.4f}** ({best['min']:.4f}–{best['max']:.4f} over "
        f"{len(results['studies'])} studies), {best['median'] - results['default']['eval_auc']:+.4f} over the default.",
        f"- Trials per minute: **{rate['median']:.1f}** ({rate['min']:.1f}–{rate['max']:.1f}).", "",
        "| seed | best eval AUC | completed | pruned | failed | wall s | best parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for study in results["studies"]:
        c = study["counts"]
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in study["best_params"].items())
        lines.append(f"| {study['seed']} | {study['best_eval_auc']:.4f} | {c['COMPLETE']} | {c['PRUNED']} | "
                     f"{c['FAIL']} | {study['seconds']:.0f} | {params} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

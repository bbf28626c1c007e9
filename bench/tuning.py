"""Benchmark: does the local study find better hyperparameters than the defaults, and how fast does it try them?

The sample (data.csv) is ingested and joined point in time with its Feast features, as the training
pipeline feeds the model, and the train training set is split by time into fit and holdout as the
pipeline's tune step splits it; then

- the default TrainConfig is trained on fit and judged on the holdout (what the study competes
  with), and trained on the whole train set and judged on the eval set (what `evaluate` would see);
- the packaged search space (slipway/search_spaces/default.yaml: TPE, median stopping, 20 trials,
  2 at a time) runs as an Optuna study through `components.tuning.tune` on fit/holdout, every
  trial the real trainer, logged to an embedded MLflow store;
- the study's best config is trained on the whole train set and judged on the eval set, which
  took no part in the search: the honest comparison with the default.

Reported: the default's holdout and eval AUC, each study's best holdout AUC and its final eval AUC,
how many trials completed or were pruned, and trials per minute of wall time on this machine. One
study per repeat, with a different sampler seed each.

    python bench/tuning.py [--repeats 3] [--trials 20]
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
from slipway.components.tuning import holdout_split, tune
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="studies to run, each with its own seed")
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

        fit, holdout = workdir / "fit.parquet", workdir / "holdout.parquet"
        holdout_split(sets[0], problem, fit, holdout)

        def final(config: TrainConfig, name: str) -> float:
            """`config` trained on the whole train set, judged on the eval set (as the pipeline's train step)."""
            return train(*sets, problem, config, workdir / name / "model", workdir / name / "ckpt").eval_auc

        started = time.monotonic()
        default_holdout = train(fit, holdout, problem, TrainConfig(), workdir / "dh" / "model", workdir / "dh" / "ckpt")
        results["default"] = {"holdout_auc": default_holdout.eval_auc, "eval_auc": final(TrainConfig(), "default"),
                              "seconds": time.monotonic() - started, "config": dataclasses.asdict(TrainConfig())}
        for repeat in range(args.repeats):
            raw["algorithm"]["settings"] = {"random_state": repeat}
            space = parse_search_space(raw, str(SEARCH_SPACES_DIR / "default.yaml"))
            started = time.monotonic()
            tracking = TrackingConfig.embedded(workdir / f"mlflow-{repeat}")
            result = tune(space, fit, holdout, problem, workdir, tracking=tracking)
            seconds = time.monotonic() - started
            results["studies"].append({"seed": repeat, "best_holdout_auc": result.best_value,
                                       "eval_auc": final(result.best_config, f"tuned-{repeat}"),
                                       "best_params": result.best_params, "counts": result.counts(),
                                       "seconds": seconds, "trials_per_minute": len(result.trials) / seconds * 60})
    results["best_holdout_auc"] = summary([s["best_holdout_auc"] for s in results["studies"]])
    results["tuned_eval_auc"] = summary([s["eval_auc"] for s in results["studies"]])
    results["trials_per_minute"] = summary([s["trials_per_minute"] for s in results["studies"]])
    write_results("tuning", results, markdown(results))


def markdown(results: dict) -> str:
    m, default = results["machine"], results["default"]
    holdout, tuned, rate = results["best_holdout_auc"], results["tuned_eval_auc"], results["trials_per_minute"]
    lines = [
        "# Tuning: the local study against the default hyperparameters", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. Data: data.csv ingested and joined point in "
        f"time with its Feast features (7,998 train, 2,002 eval trips); the train trips split by time into fit "
        f"(older 80%) and holdout (newest 20%), as the pipeline's tune step does. Search space: slipway/search_spaces/"
        f"default.yaml (TPE, median stopping), {results['trials_per_study']} trials, 2 at a time, each the real "
        f"trainer (20 epochs, patience 3) fitting on fit and judged on the holdout.", "",
        f"- On the holdout (what the study optimises): default **{default['holdout_auc']:.4f}**, study best "
        f"**{holdout['median']:.4f}** ({holdout['min']:.4f}–{holdout['max']:.4f} over {len(results['studies'])} "
        f"studies), {holdout['median'] - default['holdout_auc']:+.4f}.",
        f"- On the eval split, which took no part in the search, each config trained on the whole train set: default "
        f"**{default['eval_auc']:.4f}**, tuned **{tuned['median']:.4f}** ({tuned['min']:.4f}–{tuned['max']:.4f}), "
        f"{tuned['median'] - default['eval_auc']:+.4f}.",
        f"- Trials per minute: **{rate['median']:.1f}** ({rate['min']:.1f}–{rate['max']:.1f}).", "",
        "| seed | best holdout AUC | its eval AUC | completed | pruned | failed | wall s | best parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for study in results["studies"]:
        c = study["counts"]
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in study["best_params"].items())
        lines.append(f"| {study['seed']} | {study['best_holdout_auc']:.4f} | {study['eval_auc']:.4f} | "
                     f"{c['COMPLETE']} | {c['PRUNED']} | {c['FAIL']} | {study['seconds']:.0f} | {params} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

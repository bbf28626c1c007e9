"""A careless user's runs, replayed (issue 29): each is refused at once, in one line naming what is wrong, with an
exit code that cannot be mistaken for a verdict, before any step has run or anything is written.

Before, each of these started: a label of one class and `--set epochs=0` failed a minute and a half later with a
protobuf traceback, `canary_steps=200,50` after the model was registered, `processes=999` started 999 trainers, a
CSV with `fare,fare` trained on the first `fare`, and `slipway drift` without `--current` exited 2, "critical".
"""

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from slipway.components.train_config import max_local_processes
from slipway.metric_values import finite_metrics, require_finite
from slipway.pipelines.cli import VERDICT_USAGE_EXIT, cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def written_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


@pytest.mark.parametrize(("assignment", "message"), [
    ("epochs=0", "epochs must be at least 1, got 0"),
    ("canary_steps=200,50", "canary_steps: steps must be increasing percentages in 1..100, got [200, 50]"),
    ("canary_steps=100", "canary_steps: a first step of 100% leaves no stable traffic to compare the canary with"),
    ("processes=999", f"processes must be between 1 and {max_local_processes()} (this machine's CPU cores), got 999"),
    ("tuner=grid", "tuner 'grid': expected one of ['off', 'optuna', 'katib']"),
    ("learning_rate=0", "learning_rate must be positive, got 0.0"),
    ("learning_rate=nan", "learning_rate='nan': expected a finite float"),
    ("canary_min_requests=0", "canary_min_requests must be at least 1, got 0"),
    ("min_auc=1.5", "min_auc must be between 0 and 1, got 1.5"),
    ("threshold=1", "threshold must be between 0 and 1, got 1.0"),
    ("max_trials=-1", "max_trials: expected 0 (the search space's own budget) or more, got -1"),
    ("launcher=mpi", "launcher 'mpi' is not one of ['torchrun', 'trainjob', 'pytorchjob', 'auto']"),
])
def test_a_set_value_a_step_would_refuse_is_refused_before_the_run_starts(assignment: str, message: str,
                                                                        tmp_path: Path) -> None:
    result = invoke("run", "training", "--set", assignment, "--pipeline-root", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert result.output == f"Error: Invalid value for --set: {message}\n"
    assert not (tmp_path / "runs").exists(), "no run directory: nothing ran"


def test_the_same_rules_hold_for_every_pipeline_that_has_the_parameter(tmp_path: Path) -> None:
    result = invoke("run", "continuous_training", "--set", "drift_alpha=1", "--pipeline-root", str(tmp_path))
    assert result.exit_code == 2
    assert result.output == "Error: Invalid value for --set: drift_alpha: expected a probability in (0, 1), got 1.0\n"
    result = invoke("run", "batch_scoring", "--set", "drift_correction=holm", "--pipeline-root", str(tmp_path))
    assert result.output == ("Error: Invalid value for --set: drift_correction: expected one of ['bonferroni', "
                             "'fdr'], got 'holm'\n")
    assert not written_files(tmp_path)


def test_train_bounds_its_processes_by_the_machine(tmp_path: Path) -> None:
    result = invoke("train", "--processes", "999", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output == (f"Error: Invalid value for --processes: processes must be between 1 and "
                             f"{max_local_processes()} (this machine's CPU cores), got 999\n")
    assert not (tmp_path / "out").exists()


def test_a_label_of_one_class_stops_at_ingest_naming_the_file_and_the_counts(taxi_csv: Path, tmp_path: Path) -> None:
    trips = pd.read_csv(taxi_csv, dtype=str)
    trips["tips"] = "0"
    source = tmp_path / "no_tips.csv"
    trips.to_csv(source, index=False)
    result = invoke("train", "--data", str(source), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (f"Error: {source}: label 'tip_over_20pct' has one class: 10,000 rows "
                                              "of 0 and none of 1; training needs both")
    assert not written_files(tmp_path / "out"), "no split, feature store, checkpoint or model was written"


def test_a_column_named_twice_stops_at_ingest_naming_the_column(taxi_csv: Path, tmp_path: Path) -> None:
    header, *rows = taxi_csv.read_text().splitlines()[:101]
    source = tmp_path / "fares.csv"
    source.write_text("\n".join([f"{header},fare", *(f"{row},{i}" for i, row in enumerate(rows))]) + "\n")
    result = invoke("train", "--data", str(source), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (f"Error: {source}: column 'fare' appears 2 times in the header; every "
                                              "column needs a name of its own")
    assert not written_files(tmp_path / "out")


@pytest.mark.parametrize("args", [
    ["--reference", "trips.csv"],  # no --current
    ["--reference", "trips.csv", "--current", "new.csv", "--bins", "1"],
    ["--reference", "trips.csv", "--current", "new.csv", "--correction", "holm"],
])
def test_drifts_usage_errors_exit_4_never_a_level(args: list[str]) -> None:
    result = invoke("drift", *args)
    assert result.exit_code == VERDICT_USAGE_EXIT == 4, "0-2 are drift levels (2 critical), 3 incomparable inputs"
    assert len(result.output.splitlines()) == 1 and result.output.startswith("Error: ")


def test_monitor_replays_usage_error_exits_4_and_other_commands_usage_errors_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text("reference: trips.csv\n")
    replay = invoke("monitor", "--config", str(config), "--replay")
    assert (replay.exit_code, replay.output) == (4, "Error: --replay reads a log: give --prediction-log\n")
    score = invoke("score", "--data", "trips.csv")
    assert (score.exit_code, score.output) == (2, "Error: Missing option '--output'.\n")


def test_a_non_finite_metric_is_left_out_with_a_warning_or_fails_the_step_naming_it(caplog) -> None:
    metrics = {"psi_fare": 0.03, "p_fare": math.nan, "p_company": 0.2}
    assert finite_metrics(metrics, "drift") == {"psi_fare": 0.03, "p_company": 0.2}
    assert "drift: metric p_fare is nan, not a number: left out of the Metrics artifact" in caplog.text
    with pytest.raises(ValueError) as refused:
        require_finite({"eval_auc": 0.91, "train_loss": math.inf}, "train", "the training diverged")
    assert str(refused.value) == "train: train_loss is inf, not a number: the training diverged"


@pytest.mark.parametrize("command", [["train"], ["tune"], ["estimate", "--qps", "10", "--p99-ms", "50"]])
def test_a_mistyped_data_path_is_one_line_naming_it_not_a_traceback(command: list[str], taxi_model: Path,
                                                                   tmp_path: Path) -> None:
    missing = tmp_path / "trips.cvs"
    extra = ["--model", str(taxi_model)] if command[0] == "estimate" else ["--output-dir", str(tmp_path / "out")]
    result = invoke(*command, "--data", str(missing), *extra)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"Error: {missing} not found"
    assert "Traceback" not in result.output


def test_an_unknown_problem_is_a_usage_error_naming_the_packaged_ones() -> None:
    result = invoke("features", "--entity", "company=Flash Cab", "--problem", "chicago_taxis")
    assert result.exit_code == 2
    assert result.output.startswith("Error: Invalid value for --problem: problem 'chicago_taxis': no such file ")
    assert result.output.endswith("packaged problems are ['chicago_taxi'], or give a path or URI of a .yaml file\n")

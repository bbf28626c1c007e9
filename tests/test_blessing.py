"""The blessing gate: an absolute AUC floor, and no regression from the champion scored on the same eval split."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from slipway.components.blessing import (
    BLESSED,
    REFUSED,
    BlessingPolicy,
    Decision,
    bless,
    decide,
    load_decision,
    save_decision,
)
from slipway.components.evaluation import evaluate_model
from slipway.components.registry import ModelRegistry
from slipway.components.tracking import TrackingConfig, TrainingRun
from slipway.problem import load_problem

POLICY = BlessingPolicy(min_auc=0.8, max_auc_drop=0.01)


def test_the_first_model_needs_only_to_clear_the_floor() -> None:
    decision = decide(POLICY, challenger_auc=0.85)
    assert decision.blessed and decision.label == BLESSED
    assert decision.reasons == ("AUC 0.8500 meets the minimum 0.8", "no champion yet: nothing to regress from")


def test_a_model_below_the_floor_is_refused_even_without_a_champion() -> None:
    decision = decide(POLICY, challenger_auc=0.79)
    assert not decision.blessed and decision.label == REFUSED
    assert "AUC 0.7900 is below the minimum 0.8" in decision.reasons


@pytest.mark.parametrize(("challenger", "blessed"), [(0.905, True), (0.89, True), (0.8899, False), (0.95, True)])
def test_a_drop_from_the_champion_is_tolerated_up_to_max_auc_drop(challenger: float, blessed: bool) -> None:
    decision = decide(POLICY, challenger_auc=challenger, champion_auc=0.9, champion_version="4")
    assert decision.blessed is blessed
    assert decision.champion_version == "4" and decision.champion_auc == 0.9


def test_a_regression_is_refused_with_the_numbers_that_say_by_how_much() -> None:
    decision = decide(POLICY, challenger_auc=0.85, champion_auc=0.9, champion_version="4")
    assert not decision.blessed
    assert decision.reasons[-1] == ("AUC 0.8500 regresses from champion version 4's 0.9000 by 0.0500, "
                                    "more than the tolerated 0.01")


def test_every_failed_check_is_a_reason_not_just_the_first() -> None:
    decision = decide(POLICY, challenger_auc=0.5, champion_auc=0.9, champion_version="1")
    assert [reason.split(" ")[2] for reason in decision.reasons] == ["is", "regresses"]


def test_a_champion_that_cannot_score_the_eval_split_refuses_the_challenger() -> None:
    decision = decide(POLICY, 0.95, None, "3", "eval.parquet: missing columns ['trip_miles']")
    assert not decision.blessed
    assert "champion version 3 could not be scored on this eval split (eval.parquet: missing" in decision.reasons[-1]


def test_a_policy_out_of_range_names_the_setting() -> None:
    with pytest.raises(ValueError, match="min_auc must be between 0 and 1, got 1.2"):
        BlessingPolicy(min_auc=1.2)
    with pytest.raises(ValueError, match="max_auc_drop must be between 0 and 1, got -0.1"):
        BlessingPolicy(max_auc_drop=-0.1)


def test_the_decision_round_trips_through_its_json_artifact(tmp_path: Path) -> None:
    decision = decide(POLICY, challenger_auc=0.85, champion_auc=0.9, champion_version="4")
    save_decision(decision, tmp_path / "blessing")
    assert load_decision(tmp_path / "blessing") == decision
    assert decision.to_dict()["decision"] == REFUSED
    assert decision.markdown().startswith("**Decision: refused**")


@pytest.fixture
def registry_with_champion(tmp_path: Path, taxi_model: Path) -> ModelRegistry:
    """An embedded registry whose champion is the session's trained taxi model."""
    config = TrackingConfig.embedded(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    with TrainingRun.start(config, "train", {}, {}) as run:
        run.log_model_dir(taxi_model)
    registry = ModelRegistry.connect(config.tracking_uri)
    registry.register("taxi", run.run_id, {})
    registry.promote("taxi", "1")
    return registry


def test_the_champion_is_scored_now_on_the_challengers_eval_split(
    registry_with_champion: ModelRegistry, taxi_model: Path, taxi_training_sets: tuple[Path, Path]
) -> None:
    problem = load_problem("chicago_taxi")
    measured = evaluate_model(taxi_model, taxi_training_sets[1], problem)
    # The same model as challenger: the champion, rescored on the same rows, must score exactly the same.
    same = bless(measured, taxi_training_sets[1], problem, POLICY, registry_with_champion, "taxi")
    assert same.blessed and same.champion_version == "1"
    assert same.champion_auc == pytest.approx(measured.auc, abs=1e-12)

    worse = dataclasses.replace(measured, auc=measured.auc - 0.02)
    refused = bless(worse, taxi_training_sets[1], problem, POLICY, registry_with_champion, "taxi")
    assert not refused.blessed
    assert f"regresses from champion version 1's {measured.auc:.4f} by 0.0200" in refused.reasons[-1]


def test_a_champion_missing_a_column_of_this_eval_split_is_a_reason_not_a_crash(
    registry_with_champion: ModelRegistry, taxi_model: Path, taxi_training_sets: tuple[Path, Path], tmp_path: Path
) -> None:
    problem = load_problem("chicago_taxi")
    measured = evaluate_model(taxi_model, taxi_training_sets[1], problem)
    narrower = tmp_path / "eval.parquet"
    pd.read_parquet(taxi_training_sets[1]).drop(columns=["trip_miles"]).to_parquet(narrower)
    decision = bless(measured, narrower, problem, POLICY, registry_with_champion, "taxi")
    assert not decision.blessed
    assert "trip_miles" in decision.reasons[-1] and "could not be scored" in decision.reasons[-1]


def test_a_decision_reads_back_from_older_json_with_extra_fields() -> None:
    raw = {**decide(POLICY, 0.9).to_dict(), "added_later": 1}
    assert Decision.from_dict(raw).blessed

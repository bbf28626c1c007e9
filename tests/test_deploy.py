"""Local deployment: real model server processes, a smoke test, and the canary judged on replayed eval traffic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from slipway.components.model_artifact import WEIGHTS_FILE
from slipway.serving.canary import AnalysisPolicy
from slipway.serving.deploy import LocalDeployConfig, deploy_locally
from slipway.serving.process import ServerProcess, ServerStartError

# Fewer requests per step than the production default (500) keep the test short; the statistics
# behind the default are tested in test_canary.py. So is the latency gate, on fixed numbers: here two server
# processes share 2 cores with the test suite, and scheduling alone moves their p99s apart by several ms, so only a
# real regression (50 ms over stable) may fail a step; these tests are about what the canary answers.
POLICY = AnalysisPolicy(min_requests=150, p99_slack_ms=50.0)
CONFIG = LocalDeployConfig(name="chicago_taxi", steps=(20, 100), policy=POLICY, traffic_rps=200, step_timeout_s=60)


@pytest.fixture(scope="module")
def eval_rows(taxi_training_sets: tuple[Path, Path]) -> pd.DataFrame:
    return pd.read_parquet(taxi_training_sets[1])


@pytest.fixture(scope="module")
def shifted_model(taxi_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model with its output bias raised by 2 logits: it loads, serves, and scores everyone higher."""
    folder = tmp_path_factory.mktemp("shifted") / "model"
    shutil.copytree(taxi_model, folder)
    weights = load_file(str(folder / WEIGHTS_FILE))
    [bias] = [name for name in weights if name.endswith(".bias") and weights[name].shape == (1,)]
    weights[bias] = weights[bias] + 2.0
    save_file(weights, str(folder / WEIGHTS_FILE))
    return folder


def test_a_first_deployment_is_promoted_on_its_smoke_test(taxi_model, eval_rows, tmp_path) -> None:
    result = deploy_locally(taxi_model, None, eval_rows, CONFIG, tmp_path)
    assert result.promoted and result.rollout is None
    assert result.smoke.rows == 8 and all(0 <= s <= 1 for s in result.smoke.scores)
    assert "first deployment" in result.markdown()


def test_a_canary_that_answers_like_stable_is_promoted_step_by_step(taxi_model, eval_rows, tmp_path) -> None:
    result = deploy_locally(taxi_model, taxi_model, eval_rows, CONFIG, tmp_path)
    assert result.outcome == "promoted", result.markdown()
    assert [step.percent for step in result.rollout.steps] == [20, 100]
    first = result.rollout.steps[0]
    assert first.canary.requests >= POLICY.min_requests and first.stable.requests > first.canary.requests
    assert first.canary.error_rate == 0


def test_a_canary_that_answers_unlike_stable_but_as_it_was_evaluated_is_promoted(
    taxi_model, shifted_model, eval_rows, tmp_path
) -> None:
    """A retrained model may score the same rows differently from the one it replaces (bless judged its quality);
    the canary checks that it serves what was evaluated: its live scores against its own offline ones."""
    result = deploy_locally(shifted_model, taxi_model, eval_rows, CONFIG, tmp_path)
    assert result.outcome == "promoted", result.markdown()
    score_check = result.rollout.steps[0].verdict.checks[-1]
    assert score_check.metric == "score_psi" and score_check.outcome == "pass"
    assert "its own offline scores on the replayed rows" in score_check.detail


def test_a_model_server_that_cannot_start_names_the_model_and_shows_its_log(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServerStartError, match=r"(?s)slipway serve --model .*empty exited with status 1 before it "
                                               r"was ready:\n.*cannot serve .*: no model\.safetensors"):
        with ServerProcess(["serve", "--model", str(tmp_path / "empty")], "chicago_taxi", tmp_path / "server", 60):
            pass

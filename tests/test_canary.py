"""Canary analysis and the rollout controller, on synthetic traffic (seeded numpy) and a fake clock."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import numpy as np
import pytest

from slipway.serving.canary import (
    AnalysisPolicy,
    BackendWindows,
    Observation,
    Window,
    WindowSummary,
    analyse,
    run_canary,
    summarise,
)


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """How a synthetic backend answers: lognormal latency, a 5xx rate, a fallback rate, Beta scores."""

    latency_ms: float = 10.0
    latency_sigma: float = 0.4
    error_rate: float = 0.0
    degraded_rate: float = 0.0
    scores: tuple[float, float] = (2.0, 5.0)

    def observe(self, rng: np.random.Generator) -> Observation:
        latency = float(rng.lognormal(math.log(self.latency_ms), self.latency_sigma))
        if rng.random() < self.error_rate:
            return Observation(latency, 500)
        if rng.random() < self.degraded_rate:
            return Observation(latency, 200, degraded=True, scores=(0.5,))
        return Observation(latency, 200, scores=(float(rng.beta(*self.scores)),))


GOOD = Behaviour()
SLOW = Behaviour(latency_ms=20.0)  # every percentile, the p99 included, twice stable's
ERRORING = Behaviour(error_rate=0.05)
SHIFTED = Behaviour(scores=(3.5, 5.0))  # PSI against Beta(2, 5) about 0.7 at 500 scores
DEGRADING = Behaviour(degraded_rate=0.10)


class FakeDeployment:
    """Stable and canary behind a split on a fake clock: requests arrive while the controller sleeps.

    It is the TrafficControl (recording every call, in order), the clock and the sleep; its
    `windows` are the real `BackendWindows` the router records into.
    """

    def __init__(self, canary: Behaviour, stable: Behaviour = GOOD, rps: float = 500.0, seed: int = 0) -> None:
        self.canary, self.stable, self.rps = canary, stable, rps
        self.rng = np.random.default_rng(seed)
        self.windows = BackendWindows()
        self.calls: list[str] = []
        self.percent = 0
        self.now = 0.0

    def set_canary_percent(self, percent: int) -> None:
        self.calls.append(f"set_canary_percent({percent})")
        self.percent = percent

    def promote(self) -> None:
        self.calls.append("promote")

    def rollback(self) -> None:
        self.calls.append("rollback")
        self.percent = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        for _ in range(round(self.rps * seconds)):
            to_canary = self.rng.random() * 100 < self.percent
            behaviour, window = (self.canary, self.windows.canary) if to_canary else (self.stable, self.windows.stable)
            window.record(behaviour.observe(self.rng))
        self.now += seconds

    def run(self, policy: AnalysisPolicy | None = None, **kwargs: float):
        return run_canary(self, self.windows, policy=policy, clock=self.clock, sleep=self.sleep, poll_s=1.0,
                          **kwargs)


def window_of(behaviour: Behaviour, n: int, seed: int = 0) -> WindowSummary:
    rng = np.random.default_rng(seed)
    return summarise([behaviour.observe(rng) for _ in range(n)])


def summary(requests: int, errors: int = 0, p99_ms: float = 10.0, scores: tuple[float, ...] | None = None,
            degraded: int = 0) -> WindowSummary:
    """A summary with chosen figures (scores spread evenly unless given)."""
    if scores is None:
        scores = tuple(np.linspace(0, 1, requests).tolist())
    return WindowSummary(requests, errors, degraded, p99_ms / 2, p99_ms, scores)


# --- windows ----------------------------------------------------------------------------------


def test_a_window_counts_5xx_and_no_answer_as_errors_and_keeps_only_model_scores() -> None:
    window = Window()
    for observation in [
        Observation(10.0, 200, scores=(0.1, 0.2)),  # a batch of two
        Observation(20.0, 200, degraded=True, scores=(0.5,)),  # the fallback's score is not the model's
        Observation(30.0, 404),  # the client's mistake, served
        Observation(40.0, 503),
        Observation(5000.0, None),  # connection refused: an error with no service latency
    ]:
        window.record(observation)
    result = window.summary()
    assert (result.requests, result.errors, result.degraded) == (5, 2, 1)
    assert (result.error_rate, result.degraded_rate) == (0.4, 0.2)
    assert result.scores == (0.1, 0.2)
    assert result.p50_ms == 25.0  # of 10, 20, 30, 40: the refused connection's 5 s is not a latency
    assert result.p99_ms == pytest.approx(39.7)
    window.reset()
    assert window.summary() == WindowSummary(0, 0, 0, None, None, ())


def test_a_window_takes_observations_from_many_threads() -> None:
    window = Window()

    def record() -> None:
        for i in range(2000):
            window.record(Observation(float(i), 200, scores=(0.5,)))

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = window.summary()
    assert result.requests == len(result.scores) == 16000


def test_a_summary_saves_its_figures_not_its_scores() -> None:
    figures = summary(4, errors=1, scores=(0.2, 0.4)).to_dict()
    assert figures == {"requests": 4, "errors": 1, "error_rate": 0.25, "degraded": 0, "degraded_rate": 0.0,
                       "p50_ms": 5.0, "p99_ms": 10.0, "scores": 2, "score_mean": pytest.approx(0.3)}


# --- analyse ----------------------------------------------------------------------------------

POLICY = AnalysisPolicy()


def test_the_default_policy_is_the_documented_one() -> None:
    assert dataclasses.asdict(POLICY) == {
        "min_requests": 500, "max_error_rate_increase": 0.01, "error_alpha": 0.01, "max_degraded_rate": 0.05,
        "max_p99_ms": 250.0, "max_p99_ratio": 1.5, "p99_slack_ms": 5.0, "max_score_psi": 0.2, "psi_bins": 10}


def test_a_canary_like_stable_passes_every_check() -> None:
    verdict = analyse(window_of(GOOD, 4500, seed=1), window_of(GOOD, 500, seed=2), POLICY)
    assert verdict.action == "continue"
    assert [c.metric for c in verdict.checks] == ["requests", "error_rate", "degraded_rate", "p99_latency",
                                                  "p99_vs_stable", "score_psi"]
    assert all(c.outcome == "pass" for c in verdict.checks)
    assert all(reason.endswith("pass") for reason in verdict.reasons[1:])


@pytest.mark.parametrize(
    ("canary", "metric", "words"),
    [(SLOW, "p99_vs_stable", "p99 latency vs stable"), (ERRORING, "error_rate", "error rate"),
     (SHIFTED, "score_psi", "score PSI"), (DEGRADING, "degraded_rate", "degraded rate")],
)
def test_a_bad_canary_fails_the_check_of_its_metric_and_only_that(canary: Behaviour, metric: str,
                                                                   words: str) -> None:
    verdict = analyse(window_of(GOOD, 4500, seed=1), window_of(canary, 500, seed=2), POLICY)
    assert verdict.action == "rollback"
    assert verdict.failed == (metric,)
    [reason] = [r for r in verdict.reasons if r.endswith("FAIL")]
    assert reason.startswith(words)


def test_too_few_canary_requests_is_no_evidence_yet() -> None:
    verdict = analyse(summary(4500), summary(499, errors=499), POLICY)
    assert verdict.action == "wait"
    assert verdict.reasons == ("requests: canary 499, stable 4500 (at least 500 each)",)


def test_without_enough_stable_traffic_only_the_absolute_checks_can_fail() -> None:
    thin_stable = summary(100)
    assert analyse(thin_stable, summary(500), POLICY).action == "wait"
    verdict = analyse(thin_stable, summary(500, p99_ms=300.0), POLICY)
    assert verdict.action == "rollback" and verdict.failed == ("p99_latency",)
    assert verdict.reasons[3] == "p99 latency: canary 300.0 ms (ceiling 250 ms): FAIL"
    assert {c.metric for c in verdict.checks if c.outcome == "wait"} == {"requests", "error_rate", "p99_vs_stable",
                                                                          "score_psi"}


def test_an_error_increase_must_be_both_material_and_significant() -> None:
    def error_check(canary_errors: int, stable_errors: int) -> str:
        verdict = analyse(summary(500, errors=stable_errors), summary(500, errors=canary_errors), POLICY)
        return next(c.outcome for c in verdict.checks if c.metric == "error_rate")

    assert error_check(4, 0) == "pass"  # 0.8 points: under the 1-point threshold (though p = 0.06)
    assert error_check(12, 6) == "pass"  # 1.2 points, but p = 0.12: could be luck
    assert error_check(8, 0) == "fail"  # 1.6 points, p = 0.004
    verdict = analyse(summary(4500, errors=0), summary(500, errors=25), POLICY)
    assert verdict.reasons[1] == ("error rate: canary 5.00% (25/500) vs stable 0.00% (0/4500), +5.00 points "
                                  "(limit +1.00), one-sided Fisher p = 5.8e-26 < alpha 0.01: FAIL")


def test_the_p99_regression_limit_has_a_slack_for_millisecond_latencies() -> None:
    assert analyse(summary(500, p99_ms=2.0), summary(500, p99_ms=6.9), POLICY).action == "continue"
    verdict = analyse(summary(500, p99_ms=40.0), summary(500, p99_ms=61.0), POLICY)
    assert verdict.reasons[4] == ("p99 latency vs stable: canary 61.0 ms vs stable 40.0 ms (limit 60.0 ms: the "
                                  "larger of 1.5x stable and stable + 5 ms): FAIL")


def test_psi_waits_for_enough_scores_on_both_sides() -> None:
    verdict = analyse(summary(500), summary(500, scores=(0.5,) * 300), POLICY)
    assert verdict.action == "wait"
    assert verdict.reasons[-1] == "score PSI: 300 canary scores and 500 stable ones (at least 500 each)"


def test_with_its_offline_scores_known_the_canary_is_judged_on_serving_what_was_evaluated() -> None:
    """A retrained model may answer unlike stable by design; what it must not do is answer unlike itself offline."""
    rng = np.random.default_rng(0)
    offline = tuple(rng.beta(2, 5, 2000).tolist())
    served_as_evaluated = summary(500, scores=tuple(rng.beta(2, 5, 500).tolist()))
    unlike_stable = summary(4500, scores=tuple(rng.beta(5, 2, 4500).tolist()))
    verdict = analyse(unlike_stable, served_as_evaluated, POLICY, expected_scores=offline)
    assert verdict.action == "continue", verdict.reasons
    assert "against 2000 its own offline scores on the replayed rows" in verdict.reasons[-1]
    skewed = summary(500, scores=tuple(rng.beta(5, 2, 500).tolist()))  # serving answers unlike the evaluated model
    assert analyse(unlike_stable, skewed, POLICY, expected_scores=offline).failed == ("score_psi",)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("min_requests", 0, "min_requests must be at least 1"), ("max_degraded_rate", 1.5, "max_degraded_rate is a rate"),
     ("error_alpha", 0.0, "error_alpha must be between 0 and 1"), ("max_p99_ratio", 0.9, "max_p99_ratio must be"),
     ("psi_bins", 1, "psi_bins >= 2")],
)
def test_a_policy_that_cannot_work_is_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnalysisPolicy(**{field: value})


# --- the controller ---------------------------------------------------------------------------


def test_a_good_canary_passes_every_step_and_is_promoted() -> None:
    deployment = FakeDeployment(GOOD)
    result = deployment.run()
    assert result.promoted and result.outcome == "promoted"
    assert deployment.calls == ["set_canary_percent(10)", "set_canary_percent(50)", "set_canary_percent(100)",
                                "promote"]
    assert [(s.percent, s.verdict.action) for s in result.steps] == [(10, "continue"), (50, "continue"),
                                                                     (100, "continue")]
    assert all(s.canary.requests >= 500 for s in result.steps)
    # At 100% stable serves nothing: the 50% step's stable window is the reference.
    assert [s.baseline_from for s in result.steps] == [None, None, 50]
    assert result.steps[2].stable.requests >= 500
    assert result.summary == "promoted after 3 steps (10%, 50%, 100%)"


@pytest.mark.parametrize(("canary", "metric"), [(SLOW, "p99_vs_stable"), (ERRORING, "error_rate"),
                                                (SHIFTED, "score_psi")])
def test_a_bad_canary_is_rolled_back_at_the_first_step(canary: Behaviour, metric: str) -> None:
    deployment = FakeDeployment(canary)
    result = deployment.run()
    assert not result.promoted and result.outcome == "rolled_back"
    assert deployment.calls == ["set_canary_percent(10)", "rollback"]
    [step] = result.steps
    assert step.verdict.action == "rollback" and step.verdict.failed == (metric,)
    assert result.summary.startswith("rolled back at 10%: ")
    assert result.summary.endswith(": FAIL")
    # decided as soon as the evidence sufficed: the first poll with 500 canary requests
    assert 500 <= step.canary.requests < 600


def test_too_little_traffic_waits_then_rolls_back_when_the_step_times_out() -> None:
    deployment = FakeDeployment(GOOD, rps=20.0)  # 2 requests a second reach a 10% canary
    result = deployment.run(step_timeout_s=60.0)
    assert deployment.calls == ["set_canary_percent(10)", "rollback"]
    [step] = result.steps
    assert step.elapsed_s == 60.0
    assert step.verdict.action == "rollback" and step.verdict.failed == ("traffic",)
    assert step.verdict.reasons[0] == ("not enough traffic: after 60 s the step still lacked evidence "
                                       f"(canary {step.canary.requests} requests, stable {step.stable.requests}, "
                                       "500 needed each)")
    assert step.canary.requests < 500


def test_a_failure_while_moving_traffic_rolls_back_before_it_propagates() -> None:
    class Refusing(FakeDeployment):
        def set_canary_percent(self, percent: int) -> None:
            super().set_canary_percent(percent)
            if percent == 50:
                raise RuntimeError("admission webhook denied the patch")

    deployment = Refusing(GOOD)
    with pytest.raises(RuntimeError, match="admission webhook denied the patch"):
        deployment.run()
    assert deployment.calls == ["set_canary_percent(10)", "set_canary_percent(50)", "rollback"]


@pytest.mark.parametrize("steps", [(), (50, 10), (10, 10, 100), (0, 100), (10, 101)])
def test_steps_must_be_increasing_percentages(steps: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="steps must be increasing percentages in 1..100"):
        FakeDeployment(GOOD).run(steps=steps)


def test_a_single_step_at_100_percent_is_refused_as_no_canary() -> None:
    with pytest.raises(ValueError, match="a first step of 100% leaves no stable traffic"):
        FakeDeployment(GOOD).run(steps=(100,))


def test_the_result_is_saved_as_json_and_reported_as_markdown() -> None:
    result = FakeDeployment(SHIFTED).run()
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["outcome"] == "rolled_back"
    assert saved["policy"]["max_score_psi"] == 0.2
    [step] = saved["steps"]
    assert step["percent"] == 10 and step["verdict"]["action"] == "rollback"
    assert [c["metric"] for c in step["verdict"]["checks"] if c["outcome"] == "fail"] == ["score_psi"]
    assert step["canary"]["requests"] >= 500 and step["stable"]["requests"] >= 4000
    markdown = result.markdown()
    assert markdown.startswith("**Canary: rolled back at 10%: score PSI: ")
    assert "### 10% canary: rollback" in markdown


@pytest.mark.parametrize("seed", range(10))
def test_the_default_policy_does_not_roll_back_a_good_canary_on_noise(seed: int) -> None:
    assert FakeDeployment(GOOD, seed=seed).run().promoted

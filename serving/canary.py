"""Metric-gated canary rollout: move traffic to a new model in steps, and at each step decide on evidence.

KServe moves traffic (`canaryTrafficPercent`) but judges nothing (kserve#3085): this module is the
judge, and the loop that acts on its verdicts. It is plain library code with two seams:

- `TrafficControl` moves traffic: `set_canary_percent`, `promote`, `rollback`. On a cluster it
  patches the InferenceService; locally `slipway.serving.router.Router` implements it.
- `WindowSource` says what each backend did since the traffic last moved: `reset()` and
  `summaries()`. `BackendWindows` (two `Window`s the router records into) is one; a Prometheus
  query could be another.

At each step (10%, 50%, 100% by default) `run_canary` sets the percent, starts fresh windows,
waits until the canary has served `policy.min_requests`, and `analyse`s canary against stable:

- error rate: the canary's rate exceeds stable's by more than `max_error_rate_increase` AND a
  one-sided Fisher exact test says it is higher at `error_alpha`. Relative, since an outage
  upstream of both models hits both; the test keeps a few unlucky 5xx from failing a good model.
- degraded rate: the canary's share of fallback answers (`x-slipway-degraded`) exceeds
  `max_degraded_rate`. Absolute: a canary that mostly answers with the fallback has not been
  tested, whatever stable does, and is not promoted on that.
- p99 latency: the canary's p99 exceeds `max_p99_ms`, the service's latency objective.
- p99 vs stable: the canary's p99 exceeds the larger of `max_p99_ratio` x stable's and stable's +
  `p99_slack_ms`: a regression, where the slack stops jitter at millisecond latencies (a GC pause)
  from counting as one.
- score PSI: the PSI of the canary's live scores exceeds `max_score_psi` (0.2, the critical band)
  against its expected scores: the canary model's own scores offline on the rows the traffic is
  drawn from, when the caller knows them (`expected_scores`: the deploy step scores its eval rows),
  so that serving answers differently from what was evaluated and blessed (training/serving skew,
  a broken feature lookup); else against stable's scores on the same traffic. A model retrained
  after drift answers differently from the one it replaces by design (two good models of the taxi
  data put near-zero scores in different places: PSI 1.1 between them on quantile bins), so stable's
  scores are the reference only when nothing better is known.

Any failed check rolls back at once; all passing continues to the next step; too little evidence
waits; a step that cannot gather its evidence within `step_timeout_s` rolls back ("not enough
traffic"), because promoting an unjudged model is the one outcome a gate must not produce. After
the last step passes, the canary is promoted.

The canary is compared with stable traffic of the same step (same time, same mix of inputs)
wherever stable gets at least as much traffic as the canary. Beyond 50% stable would lag, and at
100% it serves nothing, so there its window from the last step that had one stands in.

**Why `min_requests` = 500** (per backend, per step), check by check:

- p99: with n requests the p99 rests on the n/100 slowest, 5 at n = 500. The distribution-free
  95% interval for the true p99 runs from the 490th to the 500th of 500 sorted latencies (the true
  p98 to the sample maximum); at 250 it is the 244th to the 250th, ~2.5 points deep. Simulated
  with lognormal latencies, two samples of one distribution give p99 ratios above 1.5 in 0.05% of
  draws at n = 500 (sigma 0.5; 1.3% with a heavy sigma 0.8 tail), against 0.4% (4.7%) at n = 250.
  1,000 would cut that to 0.2%, but at 10% canary traffic it takes 10,000 requests a step.
- PSI: between two samples of one distribution, PSI x n_eff is about chi-squared with 9 degrees
  of freedom (10 bins), n_eff = n_s n_c / (n_s + n_c) (`slipway.psi`). At 500 canary scores
  n_eff is 450 at the 10% step (99th percentile of the noise 0.048) and 250 at the 50% step
  (0.087): under even the warning band, so the 0.2 limit is crossed by real shifts only. Each stable
  decile expects 50 canary scores, ten times the chi-squared rule of thumb of 5.
- Error rate: with 500 canary requests against 4,500 stable ones (10% step) and alpha 0.01,
  Fisher's test detects a canary at 2% errors against a stable at 0% 93% of the time, 3% against
  1% 77% of the time, 5% against 0% always; at the 50% step (500 vs 500) 87%, 40%, 100%. Equal
  rates trigger it in under 1% of steps (the test's alpha, and the 1-point materiality threshold
  on top).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from scipy import stats

from slipway.psi import psi, psi_level

log = logging.getLogger(__name__)

STABLE = "stable"
CANARY = "canary"

Action = Literal["continue", "rollback", "wait"]
Outcome = Literal["pass", "fail", "wait"]

PROGRESS_EVERY_S = 15.0
"""How often a step that is still gathering requests says so at INFO (every poll is at DEBUG)."""


# --- observations and windows -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Observation:
    """One request as a backend served it.

    `status` is the HTTP status, or None when no answer came back (connection refused, reset,
    timeout). `scores` are the model's probabilities from a predict/infer answer; empty for any
    other request.
    """

    latency_ms: float
    status: int | None
    degraded: bool = False
    scores: tuple[float, ...] = ()

    @property
    def is_error(self) -> bool:
        """A 5xx or no answer: the backend failed. A 4xx is the client's mistake and counts as served."""
        return self.status is None or self.status >= 500


@dataclasses.dataclass(frozen=True)
class WindowSummary:
    """What one backend did in a window: the figures `analyse` compares.

    Latency percentiles cover the requests that got an answer (a refused connection has no
    service latency), and are None when there were none. `scores` hold only real model answers:
    2xx, not degraded, since a fallback's score says nothing about the model.
    """

    requests: int
    errors: int
    degraded: int
    p50_ms: float | None
    p99_ms: float | None
    scores: tuple[float, ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def degraded_rate(self) -> float:
        return self.degraded / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The figures, for JSON: the score count and mean stand in for the scores themselves."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "degraded": self.degraded,
            "degraded_rate": self.degraded_rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "scores": len(self.scores),
            "score_mean": float(np.mean(self.scores)) if self.scores else None,
        }


def summarise(observations: Sequence[Observation]) -> WindowSummary:
    """The summary of a list of observations (what `Window.summary` reports)."""
    latencies = [o.latency_ms for o in observations if o.status is not None]
    p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else (None, None)
    return WindowSummary(
        requests=len(observations),
        errors=sum(o.is_error for o in observations),
        degraded=sum(o.degraded for o in observations),
        p50_ms=p50,
        p99_ms=p99,
        scores=tuple(s for o in observations if o.status is not None and 200 <= o.status < 300 and not o.degraded
                     for s in o.scores),
    )


class Window:
    """Observations of one backend since the last reset; safe to record into from many threads.

    It keeps every observation of the window (a step's worth: thousands, not millions), since a
    p99 and a PSI need the values, not running counts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observations: list[Observation] = []

    def record(self, observation: Observation) -> None:
        with self._lock:
            self._observations.append(observation)

    def reset(self) -> None:
        with self._lock:
            self._observations = []

    def summary(self) -> WindowSummary:
        with self._lock:
            observations = list(self._observations)
        return summarise(observations)


class WindowSource(Protocol):
    """Where `run_canary` reads what the backends did since the traffic last moved."""

    def reset(self) -> None:
        """Starts a fresh window for both backends."""

    def summaries(self) -> tuple[WindowSummary, WindowSummary]:
        """(stable, canary) since the last reset."""


@dataclasses.dataclass(frozen=True)
class BackendWindows:
    """A `Window` per backend: the `WindowSource` of the local router."""

    stable: Window = dataclasses.field(default_factory=Window)
    canary: Window = dataclasses.field(default_factory=Window)

    def window(self, backend: str) -> Window:
        """The window of "stable" or "canary"."""
        return {STABLE: self.stable, CANARY: self.canary}[backend]

    def reset(self) -> None:
        self.stable.reset()
        self.canary.reset()

    def summaries(self) -> tuple[WindowSummary, WindowSummary]:
        return self.stable.summary(), self.canary.summary()


# --- analysis ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AnalysisPolicy:
    """The gate's limits. The defaults and why: the module docstring."""

    min_requests: int = 500
    max_error_rate_increase: float = 0.01
    error_alpha: float = 0.01
    max_degraded_rate: float = 0.05
    max_p99_ms: float = 250.0
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 5.0
    max_score_psi: float = 0.2
    psi_bins: int = 10

    def __post_init__(self) -> None:
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {self.min_requests}")
        for name in ("max_error_rate_increase", "max_degraded_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a rate between 0 and 1, got {getattr(self, name)}")
        if not 0 < self.error_alpha < 1:
            raise ValueError(f"error_alpha must be between 0 and 1, got {self.error_alpha}")
        if self.max_p99_ms <= 0 or self.p99_slack_ms < 0:
            raise ValueError(f"max_p99_ms must be > 0 and p99_slack_ms >= 0, got {self.max_p99_ms}, "
                             f"{self.p99_slack_ms}")
        if self.max_p99_ratio < 1:
            raise ValueError(f"max_p99_ratio must be at least 1, got {self.max_p99_ratio}")
        if self.max_score_psi <= 0 or self.psi_bins < 2:
            raise ValueError(f"max_score_psi must be > 0 and psi_bins >= 2, got {self.max_score_psi}, "
                             f"{self.psi_bins}")


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome, its measured value and its limit; `detail` says it in words with the figures."""

    metric: str
    outcome: Outcome
    value: float | None
    limit: float | None
    detail: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to do after a step: continue (passed), rollback, or wait (not enough evidence yet), and why."""

    action: Action
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(check.detail for check in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """The metrics whose checks failed."""
        return tuple(check.metric for check in self.checks if check.outcome == "fail")

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons),
                "checks": [dataclasses.asdict(check) for check in self.checks]}


def analyse(stable: WindowSummary, canary: WindowSummary, policy: AnalysisPolicy,
            expected_scores: Sequence[float] = ()) -> Verdict:
    """Canary against stable under `policy`: every check, and the action they add up to.

    Below `min_requests` canary requests nothing is judged (wait). With enough canary requests
    the absolute checks (degraded rate, p99 ceiling) are judged; the comparisons also need
    `min_requests` stable requests, and the PSI that many scores on each side, or they wait.
    Any failure means rollback, even while another check still waits.
    """
    enough_canary = canary.requests >= policy.min_requests
    enough_stable = _enough_stable(stable, policy)
    requests = Check(
        "requests", "pass" if enough_canary and enough_stable else "wait", canary.requests, policy.min_requests,
        f"requests: canary {canary.requests}, stable {stable.requests} (at least {policy.min_requests} each)")
    if not enough_canary:
        return Verdict("wait", (requests,))
    checks = (requests, _error_rate(stable, canary, policy), _degraded_rate(canary, policy),
              _p99_ceiling(canary, policy), _p99_vs_stable(stable, canary, policy),
              _score_psi(stable, canary, policy, expected_scores))
    outcomes = {check.outcome for check in checks}
    action: Action = "rollback" if "fail" in outcomes else "wait" if "wait" in outcomes else "continue"
    return Verdict(action, checks)


def _enough_stable(stable: WindowSummary, policy: AnalysisPolicy) -> bool:
    return stable.requests >= policy.min_requests


def _error_rate(stable: WindowSummary, canary: WindowSummary, policy: AnalysisPolicy) -> Check:
    increase = canary.error_rate - stable.error_rate
    figures = (f"error rate: canary {canary.error_rate:.2%} ({canary.errors}/{canary.requests}) vs stable "
               f"{stable.error_rate:.2%} ({stable.errors}/{stable.requests}), {increase * 100:+.2f} points "
               f"(limit +{policy.max_error_rate_increase * 100:.2f})")
    if not _enough_stable(stable, policy):
        return Check("error_rate", "wait", increase, policy.max_error_rate_increase,
                     f"{figures}: waiting for {policy.min_requests} stable requests")
    table = [[canary.errors, canary.requests - canary.errors], [stable.errors, stable.requests - stable.errors]]
    p_value = float(stats.fisher_exact(table, alternative="greater").pvalue)
    significant = p_value < policy.error_alpha
    failed = significant and increase > policy.max_error_rate_increase
    test = f"one-sided Fisher p = {p_value:.2g} {'<' if significant else '>='} alpha {policy.error_alpha}"
    return Check("error_rate", "fail" if failed else "pass", increase, policy.max_error_rate_increase,
                 f"{figures}, {test}: {'FAIL' if failed else 'pass'}")


def _degraded_rate(canary: WindowSummary, policy: AnalysisPolicy) -> Check:
    failed = canary.degraded_rate > policy.max_degraded_rate
    return Check("degraded_rate", "fail" if failed else "pass", canary.degraded_rate, policy.max_degraded_rate,
                 f"degraded rate: canary {canary.degraded_rate:.2%} ({canary.degraded}/{canary.requests}) "
                 f"(limit {policy.max_degraded_rate:.2%}): {'FAIL' if failed else 'pass'}")


def _p99_ceiling(canary: WindowSummary, policy: AnalysisPolicy) -> Check:
    if canary.p99_ms is None:
        return Check("p99_latency", "wait", None, policy.max_p99_ms,
                     "p99 latency: the canary answered no request yet")
    failed = canary.p99_ms > policy.max_p99_ms
    return Check("p99_latency", "fail" if failed else "pass", canary.p99_ms, policy.max_p99_ms,
                 f"p99 latency: canary {canary.p99_ms:.1f} ms (ceiling {policy.max_p99_ms:g} ms): "
                 f"{'FAIL' if failed else 'pass'}")


def _p99_vs_stable(stable: WindowSummary, canary: WindowSummary, policy: AnalysisPolicy) -> Check:
    if not _enough_stable(stable, policy) or stable.p99_ms is None or canary.p99_ms is None:
        return Check("p99_vs_stable", "wait", canary.p99_ms, None,
                     f"p99 latency vs stable: waiting for {policy.min_requests} answered requests on each side")
    limit = max(policy.max_p99_ratio * stable.p99_ms, stable.p99_ms + policy.p99_slack_ms)
    failed = canary.p99_ms > limit
    return Check("p99_vs_stable", "fail" if failed else "pass", canary.p99_ms, limit,
                 f"p99 latency vs stable: canary {canary.p99_ms:.1f} ms vs stable {stable.p99_ms:.1f} ms "
                 f"(limit {limit:.1f} ms: the larger of {policy.max_p99_ratio:g}x stable and "
                 f"stable + {policy.p99_slack_ms:g} ms): {'FAIL' if failed else 'pass'}")


def _score_psi(stable: WindowSummary, canary: WindowSummary, policy: AnalysisPolicy,
               expected_scores: Sequence[float]) -> Check:
    reference, against = ((expected_scores, "its own offline scores on the replayed rows") if len(expected_scores)
                          else (stable.scores, "stable ones"))
    if min(len(reference), len(canary.scores)) < policy.min_requests:
        return Check("score_psi", "wait", None, policy.max_score_psi,
                     f"score PSI: {len(canary.scores)} canary scores and {len(reference)} {against} "
                     f"(at least {policy.min_requests} each)")
    value = psi(reference, canary.scores, bins=policy.psi_bins)
    failed = value > policy.max_score_psi
    return Check("score_psi", "fail" if failed else "pass", value, policy.max_score_psi,
                 f"score PSI: {value:.3f} ({psi_level(value)}) of {len(canary.scores)} canary scores against "
                 f"{len(reference)} {against} (limit {policy.max_score_psi:g}): {'FAIL' if failed else 'pass'}")


# --- the controller ---------------------------------------------------------------------------


class TrafficControl(Protocol):
    """Moves traffic between the stable and the canary model (a KServe InferenceService, the local router)."""

    def set_canary_percent(self, percent: int) -> None:
        """Sends `percent`% of requests to the canary, the rest to stable."""

    def promote(self) -> None:
        """Sends all traffic to the canary, which becomes the stable model."""

    def rollback(self) -> None:
        """Sends all traffic back to stable (canary at 0%)."""


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One step: the canary's share, the verdict, and the windows it was reached on.

    `stable` is the reference the canary was compared with: this step's stable window, or, past
    50% where stable lags the canary, the one of the earlier step `baseline_from` names.
    """

    percent: int
    verdict: Verdict
    stable: WindowSummary
    canary: WindowSummary
    baseline_from: int | None
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"percent": self.percent, "verdict": self.verdict.to_dict(), "stable": self.stable.to_dict(),
                "canary": self.canary.to_dict(), "baseline_from": self.baseline_from, "elapsed_s": self.elapsed_s}


@dataclasses.dataclass(frozen=True)
class RolloutResult:
    """The rollout's outcome with every step's verdict and figures (printed, saved as JSON, in the deploy report)."""

    promoted: bool
    steps: tuple[StepResult, ...]
    policy: AnalysisPolicy

    @property
    def outcome(self) -> Literal["promoted", "rolled_back"]:
        return "promoted" if self.promoted else "rolled_back"

    @property
    def summary(self) -> str:
        """One line: what happened, and for a rollback the failed or waiting checks."""
        percents = ", ".join(f"{step.percent}%" for step in self.steps)
        if self.promoted:
            return f"promoted after {len(self.steps)} steps ({percents})"
        last = self.steps[-1].verdict
        why = [c.detail for c in last.checks if c.outcome == "fail"] or list(last.reasons)
        return f"rolled back at {self.steps[-1].percent}%: " + "; ".join(why)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "summary": self.summary, "policy": dataclasses.asdict(self.policy),
                "steps": [step.to_dict() for step in self.steps]}

    def markdown(self) -> str:
        """The canary analysis as the KFP UI shows it: the outcome, then each step's checks."""
        lines = [f"**Canary: {self.summary}**", ""]
        for step in self.steps:
            baseline = f", stable reference from the {step.baseline_from}% step" if step.baseline_from else ""
            lines += [f"### {step.percent}% canary: {step.verdict.action} ({step.elapsed_s:.1f} s{baseline})", ""]
            lines += [f"- {reason}" for reason in step.verdict.reasons] + [""]
        return "\n".join(lines)


def run_canary(
    traffic: TrafficControl,
    windows: WindowSource,
    steps: Sequence[int] = (10, 50, 100),
    policy: AnalysisPolicy | None = None,
    step_timeout_s: float = 600.0,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    expected_scores: Sequence[float] = (),
) -> RolloutResult:
    """Walks the canary through `steps` (percent of traffic), promoting or rolling back on the evidence.

    `expected_scores`: the canary model's own offline scores on the rows the traffic is drawn from,
    the score check's reference when known (see the module docstring).

    Each step sets the percent, resets the windows, then polls every `poll_s` until `analyse`
    stops waiting or `step_timeout_s` passes (a rollback: "not enough traffic"). A rollback
    verdict rolls back at once; after the last step passes, the canary is promoted. If anything
    raises on the way (the cluster refuses a patch, Ctrl-C), traffic is rolled back before the
    error propagates, so no half-split is left behind.
    """
    policy = policy or AnalysisPolicy()
    steps = checked_steps(steps)
    results: list[StepResult] = []
    try:
        baseline: tuple[int, WindowSummary] | None = None
        for number, percent in enumerate(steps, start=1):
            log.info("canary step %d/%d: %d%% of traffic to the canary", number, len(steps), percent)
            traffic.set_canary_percent(percent)
            windows.reset()
            result = _run_step(percent, windows, baseline, policy, step_timeout_s, poll_s, clock, sleep,
                               expected_scores)
            results.append(result)
            for reason in result.verdict.reasons:
                log.info("  %s", reason)
            if result.verdict.action == "rollback":
                log.warning("canary step %d%%: rolling back (%s)", percent, ", ".join(result.verdict.failed))
                traffic.rollback()
                return RolloutResult(False, tuple(results), policy)
            log.info("canary step %d%% passed in %.1f s", percent, result.elapsed_s)
            if result.baseline_from is None:
                baseline = (percent, result.stable)
        traffic.promote()
    except BaseException as error:
        log.error("canary rollout failed (%s): rolling back", repr(error))
        traffic.rollback()
        raise
    log.info("canary promoted after %d steps", len(steps))
    return RolloutResult(True, tuple(results), policy)


def checked_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """The steps as a tuple, or a ValueError: increasing percentages, the first below 100."""
    steps = tuple(steps)
    if not steps or any(not 0 < p <= 100 for p in steps) or any(a >= b for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps must be increasing percentages in 1..100, got {list(steps)}")
    if steps[0] == 100:
        raise ValueError("a first step of 100% leaves no stable traffic to compare the canary with")
    return steps


def _run_step(
    percent: int,
    windows: WindowSource,
    baseline: tuple[int, WindowSummary] | None,
    policy: AnalysisPolicy,
    step_timeout_s: float,
    poll_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    expected_scores: Sequence[float],
) -> StepResult:
    """Polls one step's windows until the verdict is not "wait", or the step times out."""
    start = last_progress = clock()
    while True:
        stable, canary = windows.summaries()
        baseline_from = None
        if percent > 50 and stable.requests < policy.min_requests and baseline is not None:
            baseline_from, stable = baseline
        verdict = analyse(stable, canary, policy, expected_scores)
        elapsed = clock() - start
        if verdict.action != "wait":
            return StepResult(percent, verdict, stable, canary, baseline_from, elapsed)
        if elapsed >= step_timeout_s:
            timeout = Check("traffic", "fail", canary.requests, policy.min_requests,
                            f"not enough traffic: after {elapsed:.0f} s the step still lacked evidence "
                            f"(canary {canary.requests} requests, stable {stable.requests}, "
                            f"{policy.min_requests} needed each)")
            return StepResult(percent, Verdict("rollback", (timeout, *verdict.checks)), stable, canary,
                              baseline_from, elapsed)
        waiting = "; ".join(c.detail for c in verdict.checks if c.outcome == "wait")
        if clock() - last_progress >= PROGRESS_EVERY_S:
            last_progress = clock()
            log.info("canary step %d%%: waiting (%.0f s of %.0f s): %s", percent, elapsed, step_timeout_s, waiting)
        else:
            log.debug("canary step %d%%: waiting: %s", percent, waiting)
        sleep(poll_s)

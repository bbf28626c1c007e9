"""Local deployment: real model server processes, a smoke test, and a metric-gated canary on real traffic.

What a KServe InferenceService does on a cluster, `deploy_locally` does on one machine:

1. starts the new model in its own `slipway serve` process and waits for readiness;
2. smoke-tests it: a few rows of the eval split must come back as probabilities, not degraded;
3. if a stable model is serving (the registry's champion), starts it too, puts the weighted
   router (serving/router.py) in front, replays eval rows through the router as live traffic,
   and lets `run_canary` (serving/canary.py) move traffic in steps and judge each one;
4. reports promoted or rolled back; the caller moves the registry alias on a promotion;
5. stops every process it started, whatever happened.

With no stable model (the first deployment) there is nothing to compare against: a model that
passes its smoke test is promoted on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from slipway.components.model_artifact import load_model
from slipway.serving.canary import AnalysisPolicy, RolloutResult, checked_steps, run_canary
from slipway.serving.process import ServerProcess
from slipway.serving.protocol import DEGRADED_HEADER
from slipway.serving.router import Router, serve_in_background

if TYPE_CHECKING:
    from slipway.components.registry import ModelRegistry

log = logging.getLogger(__name__)

SMOKE_ROWS = 8


class DeployError(RuntimeError):
    """A model server did not come up, or the new model failed its smoke test."""


@dataclasses.dataclass(frozen=True)
class LocalDeployConfig:
    name: str  # the model name in URLs
    steps: tuple[int, ...] = (10, 50, 100)
    policy: AnalysisPolicy = dataclasses.field(default_factory=AnalysisPolicy)
    traffic_rps: float = 250.0  # replayed eval rows per second, through the router
    step_timeout_s: float = 180.0
    start_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        checked_steps(self.steps)  # refused here, before any server starts, not at the first step
        if self.traffic_rps <= 0:
            raise ValueError(f"traffic_rps must be positive, got {self.traffic_rps}")


@dataclasses.dataclass(frozen=True)
class SmokeResult:
    rows: int
    scores: tuple[float, ...]
    latency_ms: float


@dataclasses.dataclass(frozen=True)
class DeployResult:
    outcome: str  # "promoted" or "rolled_back"
    smoke: SmokeResult
    rollout: RolloutResult | None  # None on a first deployment: nothing to compare against

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    def markdown(self) -> str:
        scores = ", ".join(f"{s:.3f}" for s in self.smoke.scores)
        lines = [f"**Deployment: {self.outcome}**", "",
                 f"- smoke test: {self.smoke.rows} eval rows answered in {self.smoke.latency_ms:.1f} ms: {scores}"]
        if self.rollout is None:
            lines.append("- no stable model was serving: promoted on the smoke test (first deployment)")
            return "\n".join(lines) + "\n"
        return "\n".join(lines) + "\n\n" + self.rollout.markdown()


def deploy_locally(
    candidate: Path, stable: Path | None, rows: pd.DataFrame, config: LocalDeployConfig, workdir: Path
) -> DeployResult:
    """Serves `candidate`, smoke-tests it, and canaries it against `stable` when there is one."""
    instances = json_instances(rows)
    with _server(candidate, config, workdir / "candidate") as new:
        smoke = smoke_test(new.url, config.name, instances[:SMOKE_ROWS])
        log.info("smoke test passed: %d rows in %.1f ms", smoke.rows, smoke.latency_ms)
        if stable is None:
            return DeployResult("promoted", smoke, None)
        # What the candidate should answer on these rows, scored offline as it was evaluated: the canary's
        # live scores are judged against these (skew), not against the stable model's, which may differ by design.
        expected = load_model(candidate).predict_proba({c: rows[c].to_numpy() for c in rows.columns})
        with (_server(stable, config, workdir / "stable") as old,
              _routed(old.url, new.url) as (router, url),
              ReplayTraffic(f"{url}/v1/models/{config.name}:predict", instances, config.traffic_rps)):
            rollout = run_canary(router, router.windows, config.steps, config.policy, config.step_timeout_s,
                                 poll_s=0.5, expected_scores=tuple(float(s) for s in expected))
        return DeployResult(rollout.outcome, smoke, rollout)


def deploy_registered(
    registry: ModelRegistry, name: str, version: str, rows: pd.DataFrame, config: LocalDeployConfig, workdir: Path
) -> DeployResult:
    """Deploys registered version `version` of `name` against the current champion; promotes it if it passes.

    The champion alias moves only on a promotion, so a rolled-back canary leaves the registry as
    it found it, and what the registry calls champion is always what passed the canary.
    """
    candidate = registry.version(name, version)
    champion = registry.champion(name)
    stable = None
    if champion is not None and champion.version != candidate.version:
        stable = registry.download(champion, workdir / "models" / f"v{champion.version}")
        log.info("canary: %s against the champion %s", candidate.uri, champion.uri)
    result = deploy_locally(registry.download(candidate, workdir / "models" / f"v{candidate.version}"), stable, rows,
                            config, workdir)
    if result.promoted:
        registry.promote(name, candidate.version)
    else:
        log.warning("%s was rolled back; the champion stays %s", candidate.uri, champion.uri if champion else None)
    return result


def _server(model: Path, config: LocalDeployConfig, workdir: Path) -> ServerProcess:
    return ServerProcess(["serve", "--model", str(model), "--name", config.name], config.name, workdir,
                         config.start_timeout_s)


@contextlib.contextmanager
def _routed(stable_url: str, canary_url: str) -> Iterator[tuple[Router, str]]:
    router = Router(stable_url, canary_url)
    with serve_in_background(router.app) as url:
        yield router, url


def json_instances(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them to V1: JSON values, null for a missing one, timestamps as ISO text."""
    def value(v: Any) -> Any:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.isoformat() if isinstance(v, pd.Timestamp) else v

    return [{k: value(v) for k, v in row.items()} for row in rows.to_dict("records")]


def smoke_test(url: str, name: str, instances: list[dict[str, Any]]) -> SmokeResult:
    """One V1 request: every row must come back as a probability, and the answer must not be degraded."""
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": instances}, timeout=30)
    return checked_smoke_answer(url, response, len(instances), (time.perf_counter() - start) * 1000)


def checked_smoke_answer(url: str, response: httpx.Response, rows: int, latency_ms: float) -> SmokeResult:
    """A smoke test's answer, checked: HTTP 200, not degraded, and a probability for each of the `rows` rows."""
    if response.status_code != 200:
        raise DeployError(f"smoke test: {url} answered {response.status_code}: {response.text[:500]}")
    if DEGRADED_HEADER in response.headers:
        raise DeployError(f"smoke test: {url} answered degraded ({response.headers[DEGRADED_HEADER]})")
    scores = response.json().get("predictions")
    if not isinstance(scores, list) or len(scores) != rows or not all(0 <= s <= 1 for s in scores):
        raise DeployError(f"smoke test: expected {rows} probabilities, got {str(scores)[:500]}")
    return SmokeResult(rows, tuple(scores), latency_ms)


class ReplayTraffic:
    """Replays rows, one per V1 request, at about `rps` requests a second from a few threads, until stopped.

    This is the local stand-in for live traffic: the canary analysis needs both backends to see
    the same kind of requests, and eval rows are the closest thing to tomorrow's trips we have.
    """

    def __init__(self, url: str, instances: Sequence[dict[str, Any]], rps: float, threads: int = 4) -> None:
        if rps <= 0:
            raise ValueError(f"traffic rate must be positive, got {rps}")
        self.url, self.instances, self.rps, self.threads = url, list(instances), rps, threads
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._sent = [0] * threads

    def __enter__(self) -> ReplayTraffic:
        for index in range(self.threads):
            worker = threading.Thread(target=self._send, args=(index,), name=f"replay-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)
        log.info("replayed %d requests", self.sent)

    @property
    def sent(self) -> int:
        return sum(self._sent)

    def _send(self, index: int) -> None:
        interval = self.threads / self.rps
        rows = itertools.islice(itertools.cycle(self.instances), index, None, self.threads)
        next_send = time.monotonic()
        with httpx.Client(timeout=10, headers=self.headers) as client:
            for row in rows:
                if self._stop.is_set():
                    return
                self._post(client, row)
                self._sent[index] += 1
                next_send += interval
                self._stop.wait(max(0.0, next_send - time.monotonic()))

    # Uncompressed answers: what a subclass reads of them is what the server sent.
    headers = {"accept-encoding": "identity"}

    def _post(self, client: httpx.Client, row: dict[str, Any]) -> None:
        """One request of one row. The router records what came of it; traffic goes on after a failure."""
        with contextlib.suppress(httpx.HTTPError):
            client.post(self.url, json={"instances": [row]})

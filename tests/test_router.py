"""The local traffic splitter, with real HTTP all the way: upstream model servers and the router on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slipway.serving.canary import AnalysisPolicy, run_canary
from slipway.serving.router import Router, scores_from_answer, serve_in_background

pytestmark = pytest.mark.servers


def model_server(name: str, score: float, delay_s: float = 0.0, degraded: str | None = None) -> Starlette:
    """A stand-in for our KServe model server: V1 predict, V2 infer, health, and an echo of the request.

    Every answer names the server (`x-upstream`); `degraded` adds the fallback header; the model
    `broken` answers 500.
    """
    headers = {"x-upstream": name} | ({"x-slipway-degraded": degraded} if degraded else {})

    async def predict(request: Request) -> Response:
        await asyncio.sleep(delay_s)
        if request.path_params["model"] == "broken":
            return JSONResponse({"error": "model failed"}, status_code=500, headers=headers)
        instances = (await request.json())["instances"]
        return JSONResponse({"predictions": [score] * len(instances)}, headers=headers)

    async def infer(request: Request) -> Response:
        rows = (await request.json())["inputs"][0]["shape"][0]
        output = {"name": "probability", "datatype": "FP64", "shape": [rows], "data": [score] * rows}
        return JSONResponse({"id": "1", "model_name": request.path_params["model"], "outputs": [output]},
                            headers=headers)

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True}, headers=headers)

    async def echo(request: Request) -> Response:
        response = JSONResponse({"method": request.method, "path": request.scope["raw_path"].decode(),
                                 "query": request.url.query, "x-test": request.headers.get("x-test"),
                                 "body": (await request.body()).decode()}, status_code=201, headers=headers)
        response.raw_headers += [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        return response

    return Starlette(routes=[
        Route("/v1/models/{model}:predict", predict, methods=["POST"]),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/health/ready", ready),
        Route("/echo/{rest:path}", echo, methods=["GET", "PUT", "POST", "DELETE"]),
    ])


@pytest.fixture(scope="module")
def stable_url() -> Iterator[str]:
    with serve_in_background(model_server("stable", 0.2)) as url:
        yield url


@pytest.fixture(scope="module")
def canary_url() -> Iterator[str]:
    with serve_in_background(model_server("canary", 0.8)) as url:
        yield url


@contextlib.contextmanager
def routed(stable: str, canary: str | None = None, percent: int = 0, **options: float) -> Iterator[tuple[Router, str]]:
    """A router in front of `stable` and `canary`, served on a free port: (router, its URL)."""
    router = Router(stable, canary, percent, seed=7, **options)
    with serve_in_background(router.app) as url:
        yield router, url


def predict(client: httpx.Client, url: str, n: int = 1, model: str = "taxi") -> httpx.Response:
    return client.post(f"{url}/v1/models/{model}:predict", json={"instances": [[1.0, 2.0]] * n})


def dead_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_requests_are_split_by_weight_and_each_backend_window_records_its_answers(stable_url: str,
                                                                                    canary_url: str) -> None:
    with routed(stable_url, canary_url, 25) as (router, url), httpx.Client() as client:
        answers = [predict(client, url) for _ in range(400)]
    backends = [a.headers["x-slipway-backend"] for a in answers]
    # Binomial(400, 0.25): 100 +- 8.7; the bound is 4 standard deviations
    assert abs(backends.count("canary") - 100) <= 35
    assert all(a.json() == {"predictions": [0.8 if b == "canary" else 0.2]} for a, b in zip(answers, backends,
                                                                                              strict=True))
    assert all(a.headers["x-upstream"] == b for a, b in zip(answers, backends, strict=True))
    stable, canary = router.windows.summaries()
    assert (stable.requests, canary.requests) == (backends.count("stable"), backends.count("canary"))
    assert set(stable.scores) == {0.2} and set(canary.scores) == {0.8}
    assert stable.errors == canary.errors == 0
    assert 0 < stable.p50_ms <= stable.p99_ms < 1000


def test_any_request_is_forwarded_and_answered_unchanged(stable_url: str) -> None:
    with routed(stable_url) as (router, url), httpx.Client() as client:
        via_router = client.put(f"{url}/echo/a%20b?x=1&y=two", content=b"raw body", headers={"x-test": "kept"})
        direct = client.put(f"{stable_url}/echo/a%20b?x=1&y=two", content=b"raw body", headers={"x-test": "kept"})
        health = client.get(f"{url}/v2/health/ready")
    assert via_router.status_code == direct.status_code == 201
    assert via_router.content == direct.content
    assert via_router.json() == {"method": "PUT", "path": "/echo/a%20b", "query": "x=1&y=two", "x-test": "kept",
                                 "body": "raw body"}
    assert via_router.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert via_router.headers["content-type"] == direct.headers["content-type"]
    assert via_router.headers["x-slipway-backend"] == "stable"
    assert health.json() == {"ready": True}
    # Not a predict or infer answer: served and counted, but no scores.
    stable, _ = router.windows.summaries()
    assert (stable.requests, stable.scores) == (2, ())


def test_v2_infer_answers_give_their_probability_outputs_as_scores(stable_url: str, canary_url: str) -> None:
    body = {"id": "1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 2], "data": [0.0] * 6}]}
    with routed(stable_url, canary_url, 100) as (router, url), httpx.Client() as client:
        answer = client.post(f"{url}/v2/models/taxi/infer", json=body)
    assert answer.json()["outputs"][0]["data"] == [0.8, 0.8, 0.8]
    _, canary = router.windows.summaries()
    assert (canary.requests, canary.scores) == (1, (0.8, 0.8, 0.8))


def test_errors_fallbacks_and_latency_are_recorded_as_the_upstream_answered() -> None:
    with serve_in_background(model_server("slow", 0.3, delay_s=0.05, degraded="feature store down")) as slow:
        with routed(slow) as (router, url), httpx.Client() as client:
            degraded = predict(client, url, n=2)
            failed = predict(client, url, model="broken")
    assert degraded.status_code == 200 and degraded.headers["x-slipway-degraded"] == "feature store down"
    assert failed.status_code == 500 and failed.json() == {"error": "model failed"}
    stable, _ = router.windows.summaries()
    assert (stable.requests, stable.errors, stable.degraded) == (2, 1, 2)
    assert stable.scores == ()  # a fallback's scores are not the model's
    assert stable.p50_ms >= 50  # measured around the upstream call, the 50 ms delay included


def test_set_canary_percent_promote_and_rollback_move_the_traffic(stable_url: str, canary_url: str) -> None:
    def served_by(client: httpx.Client, url: str) -> set[str]:
        return {predict(client, url).headers["x-upstream"] for _ in range(30)}

    with routed(stable_url, canary_url) as (router, url), httpx.Client() as client:
        assert served_by(client, url) == {"stable"}
        router.set_canary_percent(100)
        assert served_by(client, url) == {"canary"}
        router.set_canary_percent(50)
        assert served_by(client, url) == {"stable", "canary"}
        router.rollback()
        assert served_by(client, url) == {"stable"}
        router.promote()
        assert served_by(client, url) == {"canary"}
        assert predict(client, url).headers["x-slipway-backend"] == "stable"  # the canary is the stable one now
    assert router.routes.stable_url == canary_url and router.routes.canary_url is None
    with pytest.raises(ValueError, match="there is no canary upstream to send traffic to"):
        router.set_canary_percent(10)


def test_a_dead_upstream_is_a_502_and_an_error_observation_not_a_crash(stable_url: str) -> None:
    with routed(stable_url, dead_url(), 100) as (router, url), httpx.Client() as client:
        answer = predict(client, url)
        router.rollback()
        after = predict(client, url)
    assert answer.status_code == 502 and answer.headers["x-slipway-backend"] == "canary"
    assert "canary upstream http://127.0.0.1:" in answer.text and "ConnectError" in answer.text
    assert after.status_code == 200
    stable, canary = router.windows.summaries()
    assert (canary.requests, canary.errors, canary.p99_ms) == (1, 1, None)
    assert (stable.requests, stable.errors) == (1, 0)


def test_an_upstream_that_answers_too_late_is_a_504(stable_url: str) -> None:
    with serve_in_background(model_server("stuck", 0.5, delay_s=0.5)) as stuck:
        with routed(stable_url, stuck, 100, timeout_s=0.1) as (router, url), httpx.Client() as client:
            answer = predict(client, url)
    assert answer.status_code == 504 and "ReadTimeout" in answer.text
    _, canary = router.windows.summaries()
    assert canary.errors == 1


@pytest.mark.parametrize(
    ("path", "status", "body", "scores"),
    [
        ("/v1/models/m:predict", 200, b'{"predictions": [0.1, 1]}', (0.1, 1.0)),
        ("/v2/models/m/infer", 200, b'{"outputs": [{"name": "label", "data": [1]}, '
                                    b'{"name": "probability", "data": [0.3]}]}', (0.3,)),
        ("/v2/models/m/versions/2/infer", 200, b'{"outputs": [{"name": "p", "data": [0.4]}]}', (0.4,)),
        ("/v1/models/m:predict", 500, b'{"predictions": [0.1]}', ()),
        ("/v1/models/m:predict", 200, b"not json", ()),
        ("/v1/models/m:predict", 200, b'{"predictions": [[0.9, 0.1]]}', ()),
        ("/v1/models/m:predict", 200, b'{"predictions": [true]}', ()),
        ("/v1/models/m:explain", 200, b'{"predictions": [0.1]}', ()),
        ("/v2/models/m/infer", 200, b'{"outputs": [{"name": "a", "data": [1]}, {"name": "b", "data": [2]}]}', ()),
    ],
)
def test_scores_are_read_from_v1_and_v2_answers_only(path: str, status: int, body: bytes,
                                                     scores: tuple[float, ...]) -> None:
    assert scores_from_answer(path, status, httpx.Headers(), body) == scores


# --- end to end: the controller driving the real router under load ---------------------------


@contextlib.contextmanager
def load(url: str) -> Iterator[None]:
    """A client sending predict requests to `url` back to back until the block ends."""
    stop = threading.Event()

    def send() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                predict(client, url)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


# Small windows keep this to seconds; loopback latencies jitter by milliseconds, hence the slack.
E2E_POLICY = AnalysisPolicy(min_requests=50, p99_slack_ms=200.0, max_p99_ms=2000.0)


@pytest.mark.parametrize(("canary_score", "promoted"), [(0.2, True), (0.8, False)])
def test_run_canary_on_the_real_router_promotes_a_good_canary_and_rolls_back_a_shifted_one(
        stable_url: str, canary_score: float, promoted: bool) -> None:
    with serve_in_background(model_server("new", canary_score)) as new_url:
        with routed(stable_url, new_url) as (router, url), load(url):
            result = run_canary(router, router.windows, policy=E2E_POLICY, step_timeout_s=20.0, poll_s=0.05)
            with httpx.Client() as client:
                served_by = predict(client, url).headers["x-upstream"]
    assert result.promoted is promoted
    if promoted:
        assert [step.percent for step in result.steps] == [10, 50, 100]
        assert router.routes.stable_url == new_url and served_by == "new"
    else:
        [step] = result.steps
        assert step.percent == 10 and step.verdict.failed == ("score_psi",)
        assert router.routes.canary_percent == 0 and served_by == "stable"

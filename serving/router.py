"""A local weighted traffic splitter: what Knative/Istio's traffic split does for KServe on a cluster.

`slipway deploy` runs two model servers locally (the stable model and the canary) and puts this
router in front. Every request, whatever its path and method (V1 predict, V2 infer, health,
metadata), goes to one of them by weight and comes back unchanged, plus `x-slipway-backend:
stable|canary`. On the way it records an `Observation` into that backend's `Window`: latency
around the upstream call, the status, the `x-slipway-degraded` header, and the scores of a
predict/infer answer. An upstream that does not answer becomes a 502 (504 on a timeout) for the
client and an error observation, never a crash.

The router is also a `TrafficControl`, so `run_canary(router, router.windows, ...)` runs the
same metric-gated rollout locally that runs against an InferenceService on a cluster.

Routing is random with the given weight (seedable), as Istio's weighted routes are, rather than
a deterministic weighted round-robin. Round-robin would give exact shares, but it aliases with
periodic clients: a load generator cycling over an even number of rows at 50% would send the
same rows to the same backend every time, and the canary's scores would be compared with
stable's on different inputs. Random routing costs a binomial wobble in the shares (one standard
deviation is about 1 point at 1,000 requests and 10%), which the analysis waits out anyway: it
counts requests per backend, not the share it asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from slipway.serving.canary import CANARY, STABLE, BackendWindows, Observation
from slipway.serving.protocol import DEGRADED_HEADER

log = logging.getLogger(__name__)

BACKEND_HEADER = "x-slipway-backend"

# Connection-level headers (RFC 9110 §7.6.1) describe one hop, not the message: never forwarded.
# Host and content-length are recomputed for the upstream request by httpx.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade"})
_REQUEST_DROPPED = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}

_V1_PREDICT = re.compile(r"^/v1/models/[^/]+:predict$")
_V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclasses.dataclass(frozen=True)
class Routes:
    """Where traffic goes: one immutable value, swapped whole, so a request never sees half a change."""

    stable_url: str
    canary_url: str | None
    canary_percent: int


class Router:
    """The splitter: `app` is the ASGI application, `windows` what each backend served.

    `set_canary_percent`, `promote` and `rollback` (the `TrafficControl` protocol) may be called
    from any thread while the app serves: they replace `routes` in one assignment.
    """

    def __init__(
        self,
        stable_url: str,
        canary_url: str | None = None,
        canary_percent: int = 0,
        seed: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.routes = Routes(stable_url.rstrip("/"), canary_url.rstrip("/") if canary_url else None, 0)
        self.windows = BackendWindows()
        self.timeout_s = timeout_s
        self._random = random.Random(seed)
        self.set_canary_percent(canary_percent)
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=_METHODS)], lifespan=self._lifespan)

    def set_canary_percent(self, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"canary percent must be in 0..100, got {percent}")
        if percent and self.routes.canary_url is None:
            raise ValueError("there is no canary upstream to send traffic to")
        self.routes = dataclasses.replace(self.routes, canary_percent=percent)
        log.info("router: %d%% of traffic to the canary", percent)

    def promote(self) -> None:
        """All traffic to the canary, which becomes the stable upstream; there is no canary after it."""
        if self.routes.canary_url is None:
            raise ValueError("there is no canary upstream to promote")
        self.routes = Routes(self.routes.canary_url, None, 0)
        log.info("router: promoted %s to stable", self.routes.stable_url)

    def rollback(self) -> None:
        """All traffic to stable; the canary upstream stays known, at 0%."""
        self.routes = dataclasses.replace(self.routes, canary_percent=0)
        log.info("router: rolled back, all traffic to stable")

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
        """One keep-alive client for the app's life: a connection per request would cost a handshake each."""
        limits = httpx.Limits(max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            yield {"client": client}

    def _pick(self, routes: Routes) -> tuple[str, str]:
        if routes.canary_url is not None and self._random.random() * 100 < routes.canary_percent:
            return CANARY, routes.canary_url
        return STABLE, routes.stable_url

    async def _forward(self, request: Request) -> Response:
        backend, base = self._pick(self.routes)
        client: httpx.AsyncClient = request.state.client
        path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        headers = [(k, v) for k, v in request.headers.items() if k not in _REQUEST_DROPPED]
        # Identity encoding from the upstream: the router must read the scores; the hop is loopback.
        headers.append(("accept-encoding", "identity"))
        upstream_request = client.build_request(request.method, base + path + (f"?{query}" if query else ""),
                                                headers=headers, content=await request.body())
        start = time.perf_counter()
        try:
            upstream = await client.send(upstream_request, stream=True)
            try:
                body = b"".join([chunk async for chunk in upstream.aiter_raw()])
            finally:
                await upstream.aclose()
        except httpx.HTTPError as error:
            latency_ms = (time.perf_counter() - start) * 1000
            self.windows.window(backend).record(Observation(latency_ms, None))
            status = 504 if isinstance(error, httpx.TimeoutException) else 502
            log.warning("router: %s upstream %s failed: %r", backend, base, error)
            return PlainTextResponse(f"{backend} upstream {base} did not answer: {error!r}", status_code=status,
                                     headers={BACKEND_HEADER: backend})
        latency_ms = (time.perf_counter() - start) * 1000
        scores = scores_from_answer(request.url.path, upstream.status_code, upstream.headers, body)
        degraded = DEGRADED_HEADER in upstream.headers
        self.windows.window(backend).record(Observation(latency_ms, upstream.status_code, degraded, scores))
        response = Response(body, status_code=upstream.status_code)
        response.raw_headers = [(k, v) for k, v in upstream.headers.raw if k.lower().decode() not in HOP_BY_HOP]
        if "content-length" not in upstream.headers and request.method != "HEAD":
            response.raw_headers.append((b"content-length", str(len(body)).encode()))
        response.raw_headers.append((BACKEND_HEADER.encode(), backend.encode()))
        return response


def scores_from_answer(path: str, status: int, headers: httpx.Headers, body: bytes) -> tuple[float, ...]:
    """The positive-label probabilities of a successful V1 predict or V2 infer answer; () for anything else.

    V1: `{"predictions": [p, ...]}`. V2: the output named "probability" (or the only output) of
    `{"outputs": [{"name": ..., "data": [p, ...]}]}`. Anything that is not a flat list of
    numbers (another model's answer shape, a compressed or malformed body) yields no scores
    rather than an error: the router's job is to forward, and the analysis waits for scores.
    """
    if status != 200 or headers.get("content-encoding", "identity") != "identity":
        return ()
    if _V1_PREDICT.match(path):
        key = "predictions"
    elif _V2_INFER.match(path):
        key = "outputs"
    else:
        return ()
    try:
        answer = json.loads(body)
    except ValueError:
        return ()
    values = answer.get(key) if isinstance(answer, dict) else None
    if key == "outputs" and isinstance(values, list):
        named = [o for o in values if isinstance(o, dict) and (o.get("name") == "probability" or len(values) == 1)]
        values = named[0].get("data") if named else None
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return ()
    return tuple(float(v) for v in values)


@contextlib.contextmanager
def serve_in_background(app: ASGIApp, host: str = "127.0.0.1", start_timeout_s: float = 10.0) -> Iterator[str]:
    """Serves `app` with uvicorn in a background thread on a free port of `host`; yields its base URL.

    The socket is bound here, before the thread starts, so the port is ours (no race with
    another process between choosing a free port and binding it). On exit the server stops
    accepting, finishes the requests in flight (up to 5 s), runs the app's shutdown, and the
    thread is joined. Uvicorn adds no `server` or `date` header of its own: behind the router they
    would duplicate the upstream's, which the router passes on unchanged.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False, date_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start within {start_timeout_s} s")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

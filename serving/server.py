"""Runs Slipway's KServe models in KServe's ModelServer: V1 and V2 REST on one port, V2 gRPC on another.

    slipway serve --model models:/chicago_taxi@champion --http-port 8080 --grpc-port 8081
    slipway transform --model-name chicago_taxi --predictor-host localhost:8080 --http-port 8090

`serve` runs the predictor (serving/predictor.py), `transform` the Feast transformer in front of
one (serving/transformer.py).

The same entry point runs in the InferenceService's predictor container (serving/inference_service.py)
with `--model /mnt/models`, where KServe's storage initializer has put the artifact.

KServe writes three log lines per request (uvicorn's access line and two `kserve.trace` lines), which
costs about a quarter of the throughput (REFERENCE.md, KServe): the server logs those at WARNING
unless `access_log` is set. Requests larger than `max_payload_bytes` are refused with 413 before
their body is parsed; gRPC messages keep KServe's own receive limit. A client's bad request is a 4xx
logged in one INFO line (serving/client_errors.py).

Each server owns its ports (serving/ports.py): a busy `--http-port` or `--grpc-port`, or one port for
both, is a `PortError` naming the flag and port, raised before the model loads; the gRPC server never
shares its port with another process.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from slipway.serving.inference_cache import CacheSettings
from slipway.serving.ports import check_distinct, check_ports
from slipway.serving.protocol import MODEL_URI_ENV, UNINFORMED_SCORE

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 4 * 2**20
PER_REQUEST_LOGGERS = ("uvicorn.access", "kserve.trace")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    model_uri: str
    name: str = ""  # the model name in URLs; default: the registered or problem name
    http_port: int = 8080
    grpc_port: int = 8081
    workers: int = 1
    fallback_score: float | None = None  # default: the training data's positive rate
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_batch_rows: int = 1024
    tracking_uri: str = ""  # for models:/ URIs
    cache_dir: Path | None = None  # where remote models are downloaded; default: a temporary folder
    prediction_log: Path | None = None  # JSONL file of CloudEvents, one request/response pair per sampled call
    log_sample_rate: float = 1.0
    access_log: bool = False
    # Look the request's entities up in the online feature store (SLIPWAY_FEAST_* from the environment,
    # else the embedded store in `feature_repo`); None: the model is served without online features.
    feature_repo: Path | None = None
    cache: CacheSettings = CacheSettings()  # the inference cache (serving/inference_cache.py); default: off

    def __post_init__(self) -> None:
        if self.workers != 1:
            # KServe's multi-worker mode re-imports its FastAPI app in spawned processes, which would
            # drop the payload limit; on Kubernetes scale with replicas instead.
            raise ValueError(f"workers must be 1 (got {self.workers}): scale out with more replicas")
        check_server_limits(self.http_port, self.grpc_port, self.max_payload_bytes)


def check_server_limits(http_port: int, grpc_port: int, max_payload_bytes: int) -> None:
    """What every Slipway server's configuration must hold: two distinct TCP ports and a sane payload limit."""
    if max_payload_bytes < 1024:
        raise ValueError(f"max_payload_bytes must be at least 1024, got {max_payload_bytes}")
    for field, port in (("http_port", http_port), ("grpc_port", grpc_port)):
        if not 0 < port < 65536:
            raise ValueError(f"{field} must be a TCP port, got {port}")
    check_distinct(http_port, grpc_port)


def build_predictor(config: ServeConfig) -> Any:
    """Loads the model named by `config.model_uri` into a ready `SlipwayPredictor`."""
    from slipway.components.model_artifact import load_model
    from slipway.serving.model_source import fetch_model
    from slipway.serving.prediction_log import PredictionLogConfig, PredictionLogger
    from slipway.serving.predictor import PredictorSettings, SlipwayPredictor, fallback_score_of

    cache = config.cache_dir or Path(tempfile.mkdtemp(prefix="slipway-model-"))
    source = fetch_model(config.model_uri, cache, config.tracking_uri)
    model = load_model(source.path)
    # The URL name: as asked, else the registered model's, else the problem's.
    name = config.name or source.registered_name or str(model.metadata.get("lineage", {}).get("problem") or "model")
    settings = PredictorSettings(fallback_score=fallback_score_of(model, config.fallback_score),
                                 max_batch_rows=config.max_batch_rows, version=source.version,
                                 model_uri=os.environ.get(MODEL_URI_ENV) or config.model_uri)
    prediction_log = None
    if config.prediction_log is not None:
        prediction_log = PredictionLogger(PredictionLogConfig(
            path=config.prediction_log, inference_service=name, source=f"http://localhost:{config.http_port}/",
            sample_rate=config.log_sample_rate))
    online = None
    if config.feature_repo is not None:
        from slipway.components.feature_store import StoreConfig
        from slipway.problem import load_problem
        from slipway.serving.online_features import OnlineFeatures

        problem = load_problem(model.metadata.get("lineage", {}).get("problem") or "chicago_taxi")
        online = OnlineFeatures(StoreConfig.from_env(config.feature_repo), problem)
        online.warm_up()
    cache = None
    if config.cache.enabled:
        from slipway.serving.inference_cache import build_cache

        cache = build_cache(config.cache, name)
        log.info("inference cache: %s entries in process%s, TTL %.0f s", config.cache.size,
                 f", shared through Redis at {config.cache.redis}" if config.cache.redis else "", config.cache.ttl_s)
    log.info("serving %s (from %s) as %r; fallback score %.4f%s", source.path, config.model_uri, name,
             settings.fallback_score, "; online features from the feature store" if online else "")
    return SlipwayPredictor(name, model, settings, prediction_log, online, cache)


def serve(config: ServeConfig) -> None:
    """Starts KServe's ModelServer with the predictor and blocks until SIGINT/SIGTERM."""
    check_ports(config.http_port, config.grpc_port)
    import torch

    torch.set_num_threads(1)  # one small request at a time: more threads only add contention
    predictor = build_predictor(config)
    try:
        run_model_server(predictor, config.http_port, config.grpc_port, config.max_payload_bytes, config.access_log)
    finally:
        if predictor.prediction_log is not None:
            predictor.prediction_log.close()


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """The Feast transformer in front of a predictor (serving/transformer.py). `model_name` is the name the
    predictor serves the model under, and the transformer's own URL name: KServe passes both."""

    model_name: str
    predictor_host: str  # host[:port] or URL of the predictor's REST port
    feature_repo: Path  # the embedded store's folder, unless SLIPWAY_FEAST_* say otherwise
    problem: str = "chicago_taxi"
    http_port: int = 8080
    grpc_port: int = 8081
    fallback_score: float = UNINFORMED_SCORE  # the predictor knows its training positive rate; the transformer does not
    predictor_timeout_s: float = 5.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_batch_rows: int = 1024
    access_log: bool = False

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name must name the model the predictor serves")
        if not self.predictor_host:
            raise ValueError("predictor_host must name the predictor (host[:port])")
        check_server_limits(self.http_port, self.grpc_port, self.max_payload_bytes)


def build_transformer(config: TransformConfig) -> Any:
    """A ready `FeastTransformer` for `config`, its feature store already asked once."""
    from slipway.components.feature_store import StoreConfig
    from slipway.problem import load_problem
    from slipway.serving.online_features import OnlineFeatures
    from slipway.serving.transformer import FeastTransformer, TransformerSettings, predictor_url

    online = OnlineFeatures(StoreConfig.from_env(config.feature_repo), load_problem(config.problem))
    online.warm_up()
    settings = TransformerSettings(predictor_url=predictor_url(config.predictor_host),
                                   fallback_score=config.fallback_score, timeout_s=config.predictor_timeout_s,
                                   max_batch_rows=config.max_batch_rows)
    log.info("transforming for %r: online features of %s, then %s; fallback score %.4f", config.model_name,
             ", ".join(online.problem.entities), settings.predictor_url, settings.fallback_score)
    return FeastTransformer(config.model_name, online, settings)


def transform(config: TransformConfig) -> None:
    """Starts KServe's ModelServer with the Feast transformer and blocks until SIGINT/SIGTERM."""
    check_ports(config.http_port, config.grpc_port)
    run_model_server(build_transformer(config), config.http_port, config.grpc_port, config.max_payload_bytes,
                     config.access_log)


def run_model_server(model: Any, http_port: int, grpc_port: int, max_payload_bytes: int, access_log: bool) -> None:
    """KServe's ModelServer for one model, one worker, with the payload limit, the leaner V2 REST infer route
    (serving/v2_rest.py), a gRPC server that owns its port, 404 for what is not served, and quiet logs:
    per-request lines off, a client's error in one line."""
    import kserve
    import kserve.model_server

    from slipway.serving.client_errors import add_unserved_routes, quiet_client_errors
    from slipway.serving.grpc_server import serve_grpc_exclusively
    from slipway.serving.v2_rest import add_v2_infer_route

    check_ports(http_port, grpc_port)  # again: loading the model took seconds, in which a port may have been taken
    # Everything loaded so far (torch, kserve, the model) lives as long as the server: moved out of
    # the collector's sight, a full collection no longer walks it in the middle of requests.
    gc.freeze()
    kserve.model_server.app.add_middleware(PayloadLimit, max_bytes=max_payload_bytes)
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_grpc=False,
                                enable_latency_logging=False)
    serve_grpc_exclusively(server, grpc_port)
    add_v2_infer_route(kserve.model_server.app, server.dataplane)
    add_unserved_routes(kserve.model_server.app)
    quiet_client_errors()
    if not access_log:
        for name in PER_REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


class PayloadLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 with a reason, before anything parses it.

    A declared Content-Length is checked up front; a chunked body is read up to the limit and then
    replayed to the app, so no handler ever sees a truncated body.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(send, declared.decode("latin-1"))
                return
            await self.app(scope, receive, send)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, f"more than {size}")
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> dict[str, Any]:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Any, size: str) -> None:
        body = json.dumps({"error": f"request body of {size} bytes exceeds this server's limit of "
                                    f"{self.max_bytes} bytes (--max-payload-bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

"""The online drift service: KServe's logger POSTs CloudEvents to it, Prometheus scrapes its levels.

    slipway monitor --config drift-monitor.yaml                                          # on Kubeflow
    slipway monitor --config drift-monitor.yaml --prediction-log runs/predictions.jsonl  # locally
    slipway monitor --config drift-monitor.yaml --prediction-log runs/predictions.jsonl --replay

Routes:

    POST /          a CloudEvent, binary or structured mode (what KServe's logger sends to
                    `spec.predictor.logger.url`): 202, or 400 with the reason (not a CloudEvent,
                    or data the monitor cannot read: the logger forwards whatever a client sent)
    GET  /metrics   the monitor's Prometheus series (serving/drift_monitor.py `_Metrics`)
    GET  /drift     the last closed window as JSON (404 before the first)
    GET  /healthz   200 once the reference is loaded

With a prediction log (the local model server's, serving/prediction_log.py) a thread follows it and feeds
the same monitor, so a local run watches its traffic exactly as the cluster's service does. `--replay`
reads a whole log once instead and prints every window: the way to check a past day of traffic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import uvicorn
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http
from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from slipway.serving.drift_monitor import DriftMonitor, Window
from slipway.serving.prediction_log import follow_events

log = logging.getLogger(__name__)


def drift_app(monitor: DriftMonitor) -> FastAPI:
    """The HTTP face of `monitor`."""
    app = FastAPI(title="Slipway drift monitor", description=__doc__)

    @app.post("/", status_code=202)
    async def receive(request: Request) -> dict[str, str]:
        body = await request.body()
        try:
            event = from_http(dict(request.headers), body)
        except (GenericException, ValueError) as exc:
            raise HTTPException(400, f"not a CloudEvent: {exc}") from None
        try:
            window = monitor.observe(event)
        except (TypeError, ValueError) as exc:  # a logged body the monitor cannot read, e.g. a number for a column
            log.info("refused event %s: %s", event["id"], exc)
            raise HTTPException(400, f"event {event['id']}: its data cannot be read ({exc})") from None
        return {"accepted": event["id"], **({"window": str(window.number)} if window else {})}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(monitor.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/drift")
    def drift() -> dict:
        if monitor.latest is None:
            raise HTTPException(404, f"no window closed yet: one closes every {monitor.config.window_rows} rows")
        return monitor.latest.to_json()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def feed(monitor: DriftMonitor, events: Iterable[CloudEvent]) -> list[Window]:
    """Every event to `monitor`; the windows they closed, in order."""
    return [window for event in events if (window := monitor.observe(event)) is not None]


def serve_monitor(monitor: DriftMonitor, host: str, port: int, prediction_log: Path | None = None) -> None:
    """Serves `monitor` until interrupted, following `prediction_log` when one is given."""
    stop = threading.Event()
    follower = None
    if prediction_log is not None:
        follower = threading.Thread(target=feed, args=(monitor, follow_events(prediction_log, stop)),
                                    name=f"follow {prediction_log}", daemon=True)
        follower.start()
        log.info("following %s", prediction_log)
    try:
        uvicorn.run(drift_app(monitor), host=host, port=port, log_level="warning")
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5)

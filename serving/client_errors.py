"""What a client's bad request gets from Slipway's servers: a 4xx with the reason, and one log line.

A 5xx says the server failed; the canary analysis counts 5xx as the model's errors, so any client that
can cause one can fail a canary. Two things KServe does are fixed here, on its FastAPI app and its
logger, before the server starts:

- routes KServe answers 501 (Not Implemented) are a 404 naming what is not served: `:explain` (no
  explainer is deployed) and the versioned V2 paths (one version is served, at the unversioned path);
- KServe logs every error it answers at ERROR with a traceback (20 to 34 lines for one bad request);
  `ClientErrorLog` turns those of a client's error (400, and 404 for an unknown model) into one INFO
  line with the reason. Server errors keep their traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from kserve.errors import InvalidInput, ModelNotFound
from kserve.logging import KSERVE_LOGGER_NAME
from starlette.requests import Request
from starlette.responses import JSONResponse

CLIENT_ERRORS = (InvalidInput, ModelNotFound)
UNSERVED = {
    "/v1/models/{model_name}:explain": ("POST", "model {model!r} has no explainer: only :predict is served"),
    "/v2/models/{model_name}/versions/{model_version}": (
        "GET", "model versions are not served: ask /v2/models/{model}"),
    "/v2/models/{model_name}/versions/{model_version}/ready": (
        "GET", "model versions are not served: ask /v2/models/{model}/ready"),
    "/v2/models/{model_name}/versions/{model_version}/infer": (
        "POST", "model versions are not served: send to /v2/models/{model}/infer"),
}


def add_unserved_routes(app: Any) -> None:
    """404 with the reason for each of `UNSERVED`, on KServe's FastAPI `app` before KServe adds its own routes
    (the first route that matches answers)."""
    for path, (method, reason) in UNSERVED.items():

        async def unserved(request: Request, reason: str = reason) -> JSONResponse:
            return JSONResponse({"error": reason.format(model=request.path_params["model_name"])}, status_code=404)

        app.add_route(path, unserved, methods=[method])


class ClientErrorLog(logging.Filter):
    """On KServe's logger: a record of a client's error becomes one INFO line, its traceback dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, CLIENT_ERRORS):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.msg, record.args = "refused a request: %s", (str(error).replace("\n", " "),)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    logging.getLogger(KSERVE_LOGGER_NAME).addFilter(ClientErrorLog())

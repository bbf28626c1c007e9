"""The V2 REST infer route (`POST /v2/models/<name>/infer`) without FastAPI's pydantic models.

KServe's own route declares its body as `Union[InferenceRequest, bytes]`: FastAPI parses the JSON,
validates it into pydantic models, KServe turns those into an `InferRequest`, and the response is
validated into a pydantic model again before FastAPI serializes it. For our requests (one tensor
per feature, 32 of them) that costs about a third of the server's CPU per request (bench/serving.py:
1.1 ms against 0.76 ms in process; V1 is 0.77 ms), enough to miss the p99 goal at 500 RPS on two
cores. This route serves the same protocol with KServe's own codec and dataplane and skips the
models: the body is decoded by `InferRequest.from_bytes` (KServe's decoder for the binary tensor
extension, which also reads plain JSON), the model is called through `DataPlane.infer`, and the
answer encoded by `DataPlane.encode` (`InferResponse.to_rest`) and orjson. KServe's exception
handlers still answer errors (400 `InvalidInput`, 404 unknown model, 503 not ready); a body that
is not a V2 request is a 400 naming what is missing, where KServe's route answered 422.

It is registered on KServe's app before KServe adds its routes, so it is the one that matches; the
versioned path (`/versions/<v>/infer`, which KServe refuses anyway) and every other route stay
KServe's.
"""

from __future__ import annotations

from typing import Any

import orjson
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferRequest
from starlette.requests import Request
from starlette.responses import Response

from slipway.serving.request_parsing import TENSOR_DECODE_ERRORS

INFER_PATH = "/v2/models/{model_name}/infer"
JSON_LENGTH_HEADER = "inference-header-content-length"  # the binary tensor extension's JSON part length
EXPECTED = 'expected {"inputs": [{"name": ..., "shape": [N], "datatype": ..., "data": [...]}, ...]}'


def add_v2_infer_route(app: Any, dataplane: Any) -> None:
    """Adds the route to KServe's FastAPI `app`, answering through the ModelServer's `dataplane`."""

    async def infer(request: Request) -> Response:
        model_name = request.path_params["model_name"]
        headers = dict(request.headers)
        infer_request = decode(await request.body(), headers, model_name)
        result, response_headers = await dataplane.infer(model_name=model_name, request=infer_request,
                                                         headers=headers)
        body, encoded_headers = dataplane.encode(model_name=model_name, response=result, headers=headers,
                                                 req_attributes={})
        response_headers = {**response_headers, **encoded_headers}
        for name in ("content-length", "content-type"):
            response_headers.pop(name, None)
        if isinstance(body, bytes):  # binary outputs: JSON, then the raw tensors
            return Response(body, media_type="application/octet-stream", headers=response_headers)
        return Response(orjson.dumps(body), media_type="application/json", headers=response_headers)

    app.add_route(INFER_PATH, infer, methods=["POST"])


def decode(body: bytes, headers: dict[str, str], model_name: str) -> InferRequest:
    """The V2 request in `body` (JSON, or JSON then raw tensors with the binary extension's header)."""
    declared = headers.get(JSON_LENGTH_HEADER)
    # isascii: int() also reads "²" or "٣"; 18 digits: int() refuses more than 4,300, and no body is that long
    if declared is not None and not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
        raise InvalidInput(f"{JSON_LENGTH_HEADER}: {declared!r} is not a length in bytes")
    json_length = int(declared) if declared is not None else len(body)
    try:
        request = InferRequest.from_bytes(body, json_length, model_name)
    except KeyError as missing:
        raise InvalidInput(f"not a V2 inference request: no {missing} field ({EXPECTED})") from None
    except (AttributeError, InferenceError, *TENSOR_DECODE_ERRORS) as error:
        # InferenceError: KServe re-encodes binary BYTES tensors as text, and refuses what is not UTF-8
        raise InvalidInput(f"not a V2 inference request ({error}; {EXPECTED})") from None
    if not request.inputs:
        raise InvalidInput('"inputs" is empty: send one tensor per feature')
    return request

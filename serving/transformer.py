"""The Feast transformer: KServe's transformer component, adding online features before the predictor scores.

On a cluster the InferenceService runs it as its own container (serving/inference_service.py):
KServe routes every request to it, appends `--model_name`, `--predictor_host` and `--http_port`
to its arguments, and it calls the predictor's Service. Locally the same step runs inside the
predictor's process (`slipway serve --features`); `slipway transform` runs it as its own process,
which is what the benchmark measures.

    client --V1/V2--> transformer: look the request's entity keys up in the online store,
                      add the "{view}__{feature}" columns --> predictor (REST, same protocol)

The request carries the trip and its entity columns (`pickup_community_area`, `company`); feature
values it sends itself are replaced by the store's, as in the predictor's own lookup. V1 requests
are forwarded to the predictor's V1 endpoint, V2 requests (REST or gRPC) to its V2 REST endpoint,
and the answer goes back in the protocol asked.

Degradation (serving/protocol.py): a feature store that fails answers the features missing
(`feature-store-unavailable`); a predictor that cannot be reached, times out or answers 5xx is
answered with the fallback score for every row (`predictor-unavailable`); the predictor's own
degraded marks are passed on. A 4xx from the predictor is the caller's error and comes back as a
400 with the predictor's reason. The transformer never answers 5xx for a well-formed request.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import kserve
import numpy as np
from kserve.errors import InvalidInput, ModelNotReady
from kserve.inference_client import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from slipway.serving.online_features import OnlineFeatures, RequestKeyError
from slipway.serving.protocol import (
    DEGRADED_HEADER,
    DEGRADED_RESPONSES,
    OUTPUT_NAME,
    PREDICTOR_UNAVAILABLE,
    joined,
    output_types,
)
from slipway.serving.request_parsing import check_rows, tensor_values, v1_body, v1_instances

log = logging.getLogger(__name__)

FORWARDED_HEADERS = ("x-request-id", "x-b3-traceid", "authorization")


@dataclasses.dataclass(frozen=True)
class TransformerSettings:
    predictor_url: str  # the predictor's REST base URL, e.g. http://taxi-predictor.ns
    fallback_score: float  # answered for every row when the predictor cannot answer
    timeout_s: float = 5.0  # per predictor call; a slower predictor counts as unavailable
    max_batch_rows: int = 1024

    def __post_init__(self) -> None:
        if not self.predictor_url.startswith(("http://", "https://")):
            raise ValueError(f"predictor_url must be an http(s) URL, got {self.predictor_url!r}")
        if not 0.0 <= self.fallback_score <= 1.0:
            raise ValueError(f"fallback_score must be a probability in [0, 1], got {self.fallback_score}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, got {self.max_batch_rows}")


def predictor_url(predictor_host: str, use_ssl: bool = False) -> str:
    """KServe passes the predictor as `host[:port]` (its Service, `<isvc>-predictor.<namespace>`)."""
    if predictor_host.startswith(("http://", "https://")):
        return predictor_host.rstrip("/")
    return f"{'https' if use_ssl else 'http'}://{predictor_host.rstrip('/')}"


class FeastTransformer(kserve.Model):
    """Adds the request's online features, then asks the predictor serving `name` to score it."""

    def __init__(self, name: str, online_features: OnlineFeatures, settings: TransformerSettings) -> None:
        super().__init__(name, return_response_headers=True)
        self.online_features = online_features
        self.settings = settings
        self.entities = list(online_features.problem.entities)
        self._clients: dict[str, InferenceRESTClient] = {}
        self.ready = True

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        headers = headers or {}
        if isinstance(payload, InferRequest):
            rows, enriched, degraded = self._enriched_v2(payload)
            forwarded: Any = enriched
        else:
            rows, forwarded, degraded = self._enriched_v1(v1_body(payload, headers))
        upstream: dict[str, str] = {}
        try:
            answer = await self._client("v2" if isinstance(payload, InferRequest) else "v1").infer(
                self.settings.predictor_url, forwarded, model_name=self.name,
                headers={key: headers[key] for key in FORWARDED_HEADERS if key in headers},
                response_headers=upstream)
            scores = _scores(answer)
            if len(scores) != rows:
                raise ValueError(f"the predictor answered {len(scores)} scores for {rows} rows")
            degraded = joined(degraded, upstream.get(DEGRADED_HEADER))
        except httpx.HTTPStatusError as error:
            if error.response.status_code < 500:
                raise InvalidInput(f"the predictor refused the request ({error.response.status_code}): "
                                   f"{_reason(error.response)}") from None
            scores, degraded = self._fallback(rows, degraded, f"it answered {error.response.status_code}")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            scores, degraded = self._fallback(rows, degraded, f"{type(error).__name__}: {error}")
        if degraded and response_headers is not None:
            response_headers[DEGRADED_HEADER] = degraded
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or headers.get("x-request-id") or uuid.uuid4().hex,
                model_name=self.name,
                infer_outputs=[InferOutput(name=OUTPUT_NAME, shape=[rows], datatype="FP64", data=scores)],
                from_grpc=payload.from_grpc,
                parameters={"degraded": degraded} if degraded else None,
            )
        return {"predictions": scores}

    async def get_input_types(self) -> list[dict[str, Any]]:
        """The request's tensors (V2 model metadata): the predictor's inputs, less the online features this
        transformer adds, plus the entity keys it looks them up by. The predictor is asked each time: it knows
        its model's features, and a new model may read others."""
        url = f"{self.settings.predictor_url}/v2/models/{self.name}"
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                response = await client.get(url)
                response.raise_for_status()
                inputs = response.json()["inputs"]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            raise ModelNotReady(self.name, f"The predictor's metadata ({url}) could not be read: {error}") from None
        looked_up = set(self.online_features.columns)
        kept = [tensor for tensor in inputs if tensor["name"] not in looked_up]
        named = {tensor["name"] for tensor in kept}
        return kept + [{"name": entity, "datatype": "BYTES", "shape": [-1]} for entity in self.entities
                       if entity not in named]

    def get_output_types(self) -> list[dict[str, Any]]:
        return output_types()

    def _enriched_v1(self, payload: Any) -> tuple[int, dict[str, Any], str | None]:
        instances = v1_instances(payload, self.entities, "entity key(s)", self.settings.max_batch_rows)
        features, degraded = self._features({entity: [row[entity] for row in instances] for entity in self.entities})
        enriched = [row | {name: values[i] for name, values in features.items()} for i, row in enumerate(instances)]
        return len(instances), {"instances": enriched}, degraded

    def _enriched_v2(self, request: InferRequest) -> tuple[int, InferRequest, str | None]:
        given = {tensor.name: tensor for tensor in request.inputs}
        missing = [entity for entity in self.entities if entity not in given]
        if missing:
            raise InvalidInput(f"inputs: missing entity key tensor(s) {missing}: the online features are looked "
                               "up by them")
        inputs = [InferInput(name=tensor.name, shape=[len(values)], datatype=tensor.datatype, data=values)
                  for tensor in request.inputs for values in [tensor_values(tensor)]]
        rows = inputs[0].shape[0] if inputs[0].shape else 0
        if any(tensor.shape[:1] != [rows] for tensor in inputs):
            raise InvalidInput(f"inputs: every tensor must have the same number of rows; got "
                               f"{ {tensor.name: tensor.shape for tensor in inputs} }")
        check_rows(rows, "inputs", self.settings.max_batch_rows)
        keys = {tensor.name: list(tensor.data) for tensor in inputs if tensor.name in self.entities}
        features, degraded = self._features(keys)
        kept = [tensor for tensor in inputs if tensor.name not in features]
        added = [InferInput(name=name, shape=[rows], datatype="FP64",
                            data=[math.nan if value is None else float(value) for value in values])
                 for name, values in features.items()]
        forwarded = InferRequest(model_name=self.name, infer_inputs=kept + added,
                                 request_id=request.id or uuid.uuid4().hex)
        return rows, forwarded, degraded

    def _features(self, keys: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], str | None]:
        """The store's feature columns for these entity keys, and the degraded reason if the store failed."""
        try:
            columns, degraded = self.online_features.enrich(keys)
        except RequestKeyError as error:
            raise InvalidInput(str(error)) from None
        if degraded:
            DEGRADED_RESPONSES.labels(self.name, degraded).inc()
        return {name: columns[name] for name in self.online_features.columns}, degraded

    def _fallback(self, rows: int, degraded: str | None, cause: str) -> tuple[list[float], str | None]:
        log.warning("%s: the predictor at %s could not answer (%s); answering the fallback score for %d row(s)",
                    self.name, self.settings.predictor_url, cause, rows)
        DEGRADED_RESPONSES.labels(self.name, PREDICTOR_UNAVAILABLE).inc()
        return [self.settings.fallback_score] * rows, joined(degraded, PREDICTOR_UNAVAILABLE)

    def _client(self, protocol: str) -> InferenceRESTClient:
        """One keep-alive client per protocol, made inside the server's event loop on first use."""
        if protocol not in self._clients:
            self._clients[protocol] = InferenceRESTClient(
                RESTConfig(protocol=protocol, retries=0, timeout=self.settings.timeout_s))
        return self._clients[protocol]


def _scores(answer: Mapping[str, Any] | InferResponse) -> list[float]:
    if isinstance(answer, InferResponse):
        [output] = [output for output in answer.outputs if output.name == OUTPUT_NAME]
        return [float(score) for score in np.asarray(output.as_numpy(), dtype="float64").reshape(-1)]
    return [float(score) for score in answer["predictions"]]


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:500]
    except ValueError:
        return response.text[:500]

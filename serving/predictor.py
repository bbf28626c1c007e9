"""The KServe predictor: a `kserve.Model` that answers V1 and V2 requests with the trained model.

Requests carry raw feature values by name, and the model's own preprocessing (saved with its
weights, components/preprocessing.py) turns them into tensors: the same code path training
used, so serving cannot drift from it.

    V1  POST /v1/models/<name>:predict   {"instances": [{"fare": 12.5, "company": "Flash Cab", ...}, ...]}
                                         -> {"predictions": [0.31, ...]}
    V2  POST /v2/models/<name>/infer     {"inputs": [{"name": "fare", "datatype": "FP64", "shape": [N],
                                          "data": [...]}, ...]}   (REST or gRPC; one input per feature)
                                         -> output "probability", FP64, shape [N]

A V1 instance must name every feature (null for an unknown value), so that a misspelt key is a
400 rather than a silently missing value; extra keys (ids, timestamps) are ignored. A V1 body is
read as JSON whatever its Content-Type. A malformed request is a 400 naming the field, checked
before the model runs (serving/request_parsing.py): a list or object where a value belongs, text
that is not a number, and an infinite number or one out of the range the model computes with
(float32, after standardising) are the caller's errors, never the model's. A failure inside the
model is not the caller's fault and must not become a 5xx: the server answers the configured
fallback score for every row, marks the response degraded (header `x-slipway-degraded: <reason>`,
V2 parameter `degraded`) and counts it in `slipway_degraded_responses_total`. A score that is not
finite is such a failure: it is never answered, cached or logged.

`GET /v2/models/<name>` lists the request's inputs (numeric features FP64, categorical ones and
entity keys BYTES, shape [-1]) and the output, as the open inference protocol's model metadata.

A model trained on a problem with a feature store also reads its Feast features
("{view}__{feature}"). Without online features the request carries them (a caller that has
joined them itself, as the canary's replay of training-set rows does); with online features
configured (serving/online_features.py) the request carries only the trip and its entity columns,
which are looked up in the feature store first, and any feature values it sends are not read: the
store's are. A store that fails answers every feature missing and marks the response
`feature-store-unavailable`.

With an inference cache (serving/inference_cache.py; `slipway serve --cache-size/--cache-redis`), each
row's score is looked up by the model's identity and the row's feature values (after the online
features are joined) and the model runs only on the rows not found; degraded answers are never
cached, and a model flagged non-deterministic is served without the cache.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter

from slipway.components.model_artifact import LoadedModel
from slipway.components.preprocessing import FeatureInputError
from slipway.serving.inference_cache import (
    HITS,
    MISSES,
    InferenceCache,
    model_identity,
    non_deterministic_reason,
    row_keys,
)
from slipway.serving.online_features import OnlineFeatures, RequestKeyError
from slipway.serving.prediction_log import PredictionLogger
from slipway.serving.protocol import (
    DEGRADED_HEADER,
    DEGRADED_RESPONSES,
    MODEL_ERROR,
    MODEL_HEADER,
    OUTPUT_NAME,
    UNINFORMED_SCORE,
    joined,
    output_types,
)
from slipway.serving.request_parsing import (
    NumericRanges,
    check_categories,
    check_rows,
    tensor_values,
    v1_body,
    v1_instances,
)

log = logging.getLogger(__name__)


FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32, on standardised values

PREDICTED_ROWS = Counter("slipway_predicted_rows", "Rows scored (by the model or the fallback)", ["model"])


@dataclasses.dataclass(frozen=True)
class PredictorSettings:
    fallback_score: float  # answered for every row when the model fails
    max_batch_rows: int = 1024  # a bigger batch is a 400: one request must not hold the server for long
    version: str = ""  # the registry version being served, reported in V2 responses
    model_uri: str = ""  # the model's URI, named in every answer's x-slipway-model header ("" = no header)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fallback_score <= 1.0:
            raise ValueError(f"fallback_score must be a probability in [0, 1], got {self.fallback_score}")
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, got {self.max_batch_rows}")


def request_features(model: LoadedModel, online_features: OnlineFeatures | None) -> list[str]:
    """The columns a request must carry: the model's features, less those the online store supplies, plus
    the entity columns that store is looked up by."""
    features = model.preprocessing.numeric + model.preprocessing.categorical
    if online_features is None:
        return features
    looked_up = set(online_features.columns)
    kept = [name for name in features if name not in looked_up]
    return kept + [entity for entity in online_features.problem.entities if entity not in kept]


class NonFiniteScore(ArithmeticError):
    """The model answered a score that is not a finite number: its failure, answered with the fallback."""


def numeric_ranges(model: LoadedModel) -> dict[str, tuple[float, float]]:
    """Each numeric feature's values the model can compute with: standardised, they must fit float32."""
    preprocessing = model.preprocessing
    return {name: (mean - FLOAT32_MAX * std, mean + FLOAT32_MAX * std)
            for name, mean, std in zip(preprocessing.numeric, preprocessing.means, preprocessing.stds, strict=True)}


class SlipwayPredictor(kserve.Model):
    def __init__(
        self,
        name: str,
        model: LoadedModel,
        settings: PredictorSettings,
        prediction_log: PredictionLogger | None = None,
        online_features: OnlineFeatures | None = None,
        cache: InferenceCache | None = None,
    ) -> None:
        super().__init__(name, return_response_headers=True)
        self.settings = settings
        self.prediction_log = prediction_log
        self.online_features = online_features
        self.configured_cache = cache  # what was asked for; `cache` is None while the model may not be cached
        self.cache = cache
        self.replace_model(model)
        self.ready = True

    def replace_model(self, model: LoadedModel) -> None:
        """Serves `model` from now on. The cache's entries were computed by another model: the in-process ones
        are dropped, and shared ones no longer match (the key holds the model's identity) and expire."""
        self.model = model
        self.features = request_features(model, self.online_features)
        self.ranges = NumericRanges.of({name: bounds for name, bounds in numeric_ranges(model).items()
                                        if name in self.features})
        self.categories = [name for name in model.preprocessing.categorical if name in self.features]
        self.cache = self.configured_cache
        if self.cache is None:
            return
        self.identity = model_identity(model.module, model.metadata, self.settings.model_uri, self.settings.version)
        self.cache.clear()
        reason = non_deterministic_reason(model.module, model.metadata)
        if reason is not None:
            log.warning("%s: the inference cache is off for this model: %s", self.name, reason)
            self.cache = None

    def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            return self._answer_v2(payload, headers or {}, response_headers)
        return self._answer_v1(v1_body(payload, headers or {}), headers or {}, response_headers)

    def get_input_types(self) -> list[dict[str, Any]]:
        """The request's tensors (V2 model metadata): one per feature the request carries, any number of rows."""
        return [{"name": name, "datatype": "FP64" if name in self.ranges.names else "BYTES", "shape": [-1]}
                for name in self.features]

    def get_output_types(self) -> list[dict[str, Any]]:
        return output_types()

    def _answer_v1(
        self, payload: Any, headers: Mapping[str, str], response_headers: dict[str, str] | None
    ) -> dict[str, Any]:
        columns = self._v1_columns(payload)
        scores, degraded = self._score(columns)
        response = {"predictions": scores.tolist()}
        self._finish(headers.get("x-request-id") or uuid.uuid4().hex, payload, response, degraded, response_headers)
        return response

    def _answer_v2(
        self, request: InferRequest, headers: Mapping[str, str], response_headers: dict[str, str] | None
    ) -> InferResponse:
        columns = self._v2_columns(request)
        scores, degraded = self._score(columns)
        response_id = request.id or headers.get("x-request-id") or uuid.uuid4().hex
        output = InferOutput(name=OUTPUT_NAME, shape=[len(scores)], datatype="FP64", data=scores.tolist())
        response = InferResponse(
            response_id=response_id,
            model_name=self.name,
            model_version=self.settings.version or None,
            infer_outputs=[output],
            from_grpc=request.from_grpc,
            parameters={"degraded": degraded} if degraded else None,
        )
        if self.prediction_log is not None:
            body = request.to_rest()[0] if not request.from_grpc else {"inputs": columns}
            logged: Any = {"id": response_id, "outputs": [{"name": OUTPUT_NAME, "data": scores.tolist()}]}
        else:
            body, logged = None, None
        self._finish(response_id, body, logged, degraded, response_headers)
        return response

    def _v1_columns(self, payload: Any) -> dict[str, list[Any]]:
        instances = v1_instances(payload, self.features, "feature(s)", self.settings.max_batch_rows)
        return {name: [instance[name] for instance in instances] for name in self.features}

    def _v2_columns(self, request: InferRequest) -> dict[str, list[Any]]:
        given = {tensor.name: tensor for tensor in request.inputs}
        missing = [name for name in self.features if name not in given]
        if missing:
            raise InvalidInput(f"inputs: missing feature tensor(s) {missing}; send one input per feature, shape [N]")
        columns = {name: tensor_values(given[name]) for name in self.features}
        check_rows(len(columns[self.features[0]]), "inputs", self.settings.max_batch_rows)
        return columns

    def _score(self, columns: dict[str, list[Any]]) -> tuple[np.ndarray, str | None]:
        """Model scores (with the online features added first, when configured), or the fallback score with
        the reason when the model fails; a feature store that fails marks the answer degraded."""
        rows = len(next(iter(columns.values())))
        self._check(columns)
        PREDICTED_ROWS.labels(self.name).inc(rows)
        degraded = None
        if self.online_features is not None:
            try:
                columns, degraded = self.online_features.enrich(columns)
            except RequestKeyError as error:
                raise InvalidInput(str(error)) from None
            if degraded:
                DEGRADED_RESPONSES.labels(self.name, degraded).inc()
        try:
            return self._predict(columns, rows, cached=degraded is None), degraded
        except FeatureInputError as error:
            raise InvalidInput(str(error)) from None
        except Exception:  # noqa: BLE001 - any model failure degrades to the fallback instead of a 5xx
            log.exception("%s: the model failed on %d row(s); answering the fallback score", self.name, rows)
            DEGRADED_RESPONSES.labels(self.name, MODEL_ERROR).inc()
            return np.full(rows, self.settings.fallback_score), joined(degraded, MODEL_ERROR)

    def _check(self, columns: dict[str, list[Any]]) -> None:
        """A value the model cannot read is the caller's error (InvalidInput), found here, before it could count
        as the model failing."""
        for name in self.categories:
            check_categories(name, columns[name])
        self.ranges.check(columns)

    def _scores(self, columns: Mapping[str, Any]) -> np.ndarray:
        scores = self.model.predict_proba(columns)
        if not np.isfinite(scores).all():
            raise NonFiniteScore(f"the model's score is not a number for row(s) "
                                 f"{np.flatnonzero(~np.isfinite(scores)).tolist()[:10]}")
        return scores

    def _predict(self, columns: dict[str, list[Any]], rows: int, cached: bool) -> np.ndarray:
        """The model's scores, the cache's where it holds them (`cached`: the answer may be cached): the model
        runs on the missed rows only, and the scores come back in the rows' order."""
        if self.cache is None or not cached:
            return self._scores(columns)
        preprocessing = self.model.preprocessing
        keys = row_keys(self.identity, preprocessing.numeric, preprocessing.categorical, columns)
        found = self.cache.get_many(keys)
        missed = [i for i, score in enumerate(found) if score is None]
        HITS.labels(self.name).inc(rows - len(missed))
        MISSES.labels(self.name).inc(len(missed))
        if not missed:
            return np.array(found, dtype="float64")
        if len(missed) == rows:
            scores = self._scores(columns)
        else:
            scores = self._scores({name: [values[i] for i in missed] for name, values in columns.items()})
        self.cache.put_many(zip([keys[i] for i in missed], scores.tolist(), strict=True))
        if len(missed) == rows:
            return scores
        answer = np.array([0.0 if score is None else score for score in found], dtype="float64")
        answer[missed] = scores
        return answer

    def _finish(
        self,
        request_id: str,
        request: Any,
        response: Any,
        degraded: str | None,
        response_headers: dict[str, str] | None,
    ) -> None:
        if response_headers is not None:
            if degraded:
                response_headers[DEGRADED_HEADER] = degraded
            if self.settings.model_uri:
                response_headers[MODEL_HEADER] = self.settings.model_uri
        if self.prediction_log is not None:
            self.prediction_log.log(request_id, self.name, request, response, degraded=degraded)


def fallback_score_of(model: LoadedModel, configured: float | None) -> float:
    """The configured fallback, else the training data's positive rate (the no-information answer).

    A model trained before the rate was recorded falls back to 0.5, with a warning: refusing to
    serve it would break the rollback path to exactly the older models one may need.
    """
    if configured is not None:
        return configured
    prior = model.metadata.get("lineage", {}).get("train_positive_rate")
    if prior is None:
        log.warning("the model records no train_positive_rate: the fallback score is 0.5 (set --fallback-score)")
        return UNINFORMED_SCORE
    return float(prior)

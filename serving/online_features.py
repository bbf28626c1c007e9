"""Request enrichment from the online feature store: entity keys in the request, Feast features added.

This is the transformer step of KServe's predictor/transformer pair. In one `slipway serve`
process (locally) the predictor calls it before scoring; its features are the same
"{view}__{feature}" columns the point-in-time training set holds (components/feature_store.py),
looked up by the request's own entity columns.

The feature store is a dependency the model server must survive losing: when a lookup fails
(Redis stopped, registry unreadable), every feature is answered missing and the response is marked
degraded (`feature-store-unavailable`), which the model's preprocessing turns into its missing
indicators. A request never fails because the store did, and the store never looks failed because of a
request: keys it could not hold (not of the entity's type, infinite, beyond 64 bits) are the caller's
error, refused before it is asked. Nor should every request wait for it:
the Redis client retries a refused connection with backoff (seconds), so after a failure the
store is not asked again for `retry_after_s`; requests meanwhile are answered degraded at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slipway.components import feature_store
from slipway.problem import Problem
from slipway.serving.protocol import FEATURE_STORE_UNAVAILABLE

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the integer keys a Feast entity of type Int64 holds



class RequestKeyError(ValueError):
    """The request's entity keys are missing or not of their entity's type: the caller's error (a 400)."""


class OnlineFeatures:
    """Adds the problem's online features to request columns; opens the store on first use."""

    def __init__(
        self,
        config: feature_store.StoreConfig,
        problem: Problem,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if problem.feature_store is None:
            raise ValueError(f"problem {problem.name!r} defines no feature_store section: nothing to look up")
        self.config = config
        self.problem = problem
        self.columns = feature_store.joined_columns(problem)
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._store: FeatureStore | None = None
        self._unavailable_until: float | None = None

    def warm_up(self) -> bool:
        """One lookup (of the missing keys) before the first request, which would otherwise wait seconds for
        Feast's imports and the registry; whether the store answered. A store that did not is only logged:
        requests are answered degraded until it does."""
        return self.enrich({entity: [None] for entity in self.problem.entities})[1] is None

    def enrich(self, columns: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], str | None]:
        """`columns` plus every feature column, and the degraded reason (None when the lookup worked).

        The entity columns must be in the request (they are the lookup keys) and hold keys of their
        entity's type: otherwise it is the caller's error, a RequestKeyError naming the column, checked
        before the store is asked (a bad request must not count as the store failing). Unknown entities
        get missing features, not degraded: the store answered, it just knows nothing about them.
        """
        missing = [entity for entity in self.problem.entities if entity not in columns]
        if missing:
            raise RequestKeyError(f"the request has no {missing} column(s): the feature store is looked up by them")
        rows = len(columns[self.problem.entities[0]])
        keys = {entity: self._keys(entity, columns[entity]) for entity in self.problem.entities}
        missing_features = columns | {name: [None] * rows for name in self.columns}
        if self._unavailable_until is not None and self._clock() < self._unavailable_until:
            return missing_features, FEATURE_STORE_UNAVAILABLE
        try:
            if self._store is None:
                self._store = feature_store.open_store(self.config, self.problem)
            answer = feature_store.online_features(self._store, self.problem, keys)
        except Exception:  # noqa: BLE001 - any store failure degrades; the log keeps the cause
            log.exception("online feature lookup failed; answering features missing, and not asking the store "
                          "again for %.0f s", self.retry_after_s)
            self._unavailable_until = self._clock() + self.retry_after_s
            return missing_features, FEATURE_STORE_UNAVAILABLE
        if self._unavailable_until is not None:
            log.info("the online feature store answers again")
            self._unavailable_until = None
        return columns | {name: answer[name] for name in self.columns}, None

    def _keys(self, entity: str, values: list[Any]) -> list[Any]:
        """The entity's keys as the store holds them; a key it cannot hold is the caller's error, found before the
        store is asked: the store refusing it would count as the store failing, and answer every request degraded
        for `retry_after_s`."""
        try:
            keys = feature_store.online_keys(values, self.problem, entity)
        except feature_store.EntityKeyError as error:
            raise RequestKeyError(str(error)) from None
        except OverflowError:  # int() of an infinity
            raise RequestKeyError(f"entity {entity!r} (integer) has keys that are not integers: an infinite "
                                  "number") from None
        outside = [key for key in keys if isinstance(key, int) and not INT64_MIN <= key <= INT64_MAX]
        if outside:
            raise RequestKeyError(f"entity {entity!r} (integer) has keys out of the 64-bit range the store holds: "
                                  f"{outside[:3]}")
        return keys

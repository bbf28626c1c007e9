"""The model server's inference cache: a row's score, remembered for the model that computed it.

A deterministic model gives the same score for the same feature values, so the predictor
(serving/predictor.py) asks the cache first, row by row, and runs the model only on the rows it
misses: a batch with some known rows and some new ones scores only the new ones, and answers in
the request's order, the same scores the model would have given.

Each row's key (`row_keys`, a 16-byte BLAKE2b digest) covers:

- the model's identity (`model_identity`): its URI and registry version, plus a digest of its
  weights and its metadata (preprocessing, architecture), so a model reloaded under the same
  name with other weights never meets the old entries;
- the exact feature values of one row as the model reads them, after the Feast transformer (the
  predictor's input, with the online features already joined): columns in the model's own
  order (whatever order the request sends them in), numerics by the bit pattern of their float64
  value with missing (None or NaN, which the model treats alike) as one explicit marker, and
  categoricals by their vocabulary key (`category_key`: 32, 32.0 and "32" are one category to the
  model, and one key here).

Backends (`InferenceCache`, two methods: `get_many(keys)` and `put_many(items)`):

- `LocalCache`: in-process, a bounded LRU with a TTL (O(1) per key, thread-safe; about 200 bytes an
  entry, so the 100,000 entries of `--cache-size 100000` hold about 20 MiB);
- `RedisCache`: shared by every replica (`SET key value PX ttl` in one pipeline, `MGET`); a Redis
  that fails is a miss, never a failed request: the error is counted
  (`slipway_inference_cache_errors_total{backend="redis"}`), logged once, and Redis is left alone
  for `retry_after_s` before it is tried again, so a dead Redis costs one failed connect a second,
  not one per request;
- `TieredCache`: the local LRU in front of Redis (both configured): the hot rows never leave the
  process, the rest are shared.

Never cached: degraded answers (the model failed, or the feature store did and the row's features
were answered missing), and errors.

Non-deterministic models: a model whose `model.json` says `"deterministic": false` at its top level
(a model meant to sample, e.g. MC dropout at inference), or whose module is still in training mode
after loading, is served without the cache even when one is configured, and the server logs why.
Our artifacts are loaded in eval mode and omit the field, so they are deterministic.

Configuration (`slipway serve`, and the same through the environment for an InferenceService's
predictor container): `--cache-size N` / `SLIPWAY_INFERENCE_CACHE_SIZE` (entries of the local
LRU; 0, the default, is no local cache), `--cache-ttl S` / `SLIPWAY_INFERENCE_CACHE_TTL` (seconds,
default 300), `--cache-redis HOST:PORT` / `SLIPWAY_INFERENCE_CACHE_REDIS` (share through Redis).
Off by default: a cache trades memory and a per-row hash for latency only where requests repeat,
and an answer that outlives a silent change of what the model reads (a feature store's value is in
the key, but a model's code is not) is a surprise nobody should get without asking for it.

Prometheus, on the server's /metrics: `slipway_inference_cache_hits_total{model}`,
`slipway_inference_cache_misses_total{model}` (rows), `slipway_inference_cache_errors_total{model,
backend}` and `slipway_inference_cache_entries{model}` (the local LRU's size).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SIZE_ENV = "SLIPWAY_INFERENCE_CACHE_SIZE"
TTL_ENV = "SLIPWAY_INFERENCE_CACHE_TTL"
REDIS_ENV = "SLIPWAY_INFERENCE_CACHE_REDIS"
DEFAULT_TTL_S = 300.0
KEY_PREFIX = "slipway:inference:"

HITS = Counter("slipway_inference_cache_hits", "Rows answered from the inference cache", ["model"])
MISSES = Counter("slipway_inference_cache_misses", "Rows the inference cache did not hold (scored by the model)",
                 ["model"])
ERRORS = Counter("slipway_inference_cache_errors", "Inference cache calls that failed (answered as misses)",
                 ["model", "backend"])
ENTRIES = Gauge("slipway_inference_cache_entries", "Entries in the in-process inference cache", ["model"])

_VALUE = struct.Struct("<d")
_MISSING = b"\x00"  # a missing value's marker; a present one starts with \x01
_CANONICAL_NAN = np.float64("nan")


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    size: int = 0  # entries of the in-process LRU; 0: none
    ttl_s: float = DEFAULT_TTL_S
    redis: str = ""  # HOST:PORT of a Redis shared by the replicas; "": none

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"cache size must be 0 (off) or more entries, got {self.size}")
        if not self.ttl_s > 0:
            raise ValueError(f"cache ttl must be a positive number of seconds, got {self.ttl_s}")
        if self.redis:
            host, _, port = self.redis.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"cache redis must be HOST:PORT, got {self.redis!r}")

    @property
    def enabled(self) -> bool:
        return self.size > 0 or bool(self.redis)

    def environment(self) -> dict[str, str]:
        """These settings as the SLIPWAY_INFERENCE_CACHE_* variables `slipway serve` reads: how an
        InferenceService's predictor gets them (serving/inference_service.py)."""
        return {SIZE_ENV: str(self.size), TTL_ENV: f"{self.ttl_s:g}", **({REDIS_ENV: self.redis} if self.redis else {})}


class InferenceCache(Protocol):
    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        """The cached score of each key, None where there is none."""

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        """Remembers each (key, score)."""

    def clear(self) -> None:
        """Forgets what this process holds (a shared store's entries expire by their TTL)."""


class LocalCache:
    """A bounded LRU of scores with a TTL per entry: the oldest-used entry goes when it is full; an
    entry older than `ttl_s` is a miss (and is dropped)."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 model: str = "") -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size, self.ttl_s, self.clock, self.model = size, ttl_s, clock, model
        self._entries: collections.OrderedDict[bytes, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        now = self.clock()
        found: list[float | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    found.append(None)
                elif entry[1] <= now:
                    del self._entries[key]
                    found.append(None)
                else:
                    self._entries.move_to_end(key)
                    found.append(entry[0])
            ENTRIES.labels(self.model).set(len(self._entries))
        return found

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        expires = self.clock() + self.ttl_s
        with self._lock:
            for key, value in items:
                self._entries[key] = (value, expires)
                self._entries.move_to_end(key)
                if len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            ENTRIES.labels(self.model).set(len(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            ENTRIES.labels(self.model).set(0)


class RedisCache:
    """Scores in a Redis that several replicas share, under `prefix`, each with the TTL in milliseconds.

    Any Redis failure answers misses (a get) or drops the entries (a put): counted, logged once per
    outage, and Redis is not asked again for `retry_after_s`."""

    def __init__(self, address: str, ttl_s: float, model: str = "", prefix: str = KEY_PREFIX,
                 timeout_s: float = 0.05, retry_after_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        host, _, port = address.rpartition(":")
        # No retries: a request must not wait on a Redis that fails (the client's default retries 3 times).
        self.client = redis.Redis(host=host, port=int(port), socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        self.address, self.ttl_ms, self.model, self.prefix = address, max(1, round(ttl_s * 1000)), model, prefix
        self.retry_after_s, self.clock = retry_after_s, clock
        self._down_until = 0.0
        self._failing = False

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        if not keys or self._resting():
            return [None] * len(keys)
        try:
            values = self.client.mget([self.prefix.encode() + key for key in keys])
        except Exception as error:  # noqa: BLE001 - the cache must never fail a request
            self._failed(error)
            return [None] * len(keys)
        self._recovered()
        return [None if value is None or len(value) != _VALUE.size else _VALUE.unpack(value)[0] for value in values]

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        items = list(items)
        if not items or self._resting():
            return
        try:
            pipeline = self.client.pipeline(transaction=False)
            for key, value in items:
                pipeline.set(self.prefix.encode() + key, _VALUE.pack(value), px=self.ttl_ms)
            pipeline.execute()
        except Exception as error:  # noqa: BLE001
            self._failed(error)
            return
        self._recovered()

    def clear(self) -> None:
        """Nothing to do: the old model's keys no longer match and expire by their TTL."""

    def _resting(self) -> bool:
        return self.clock() < self._down_until

    def _failed(self, error: Exception) -> None:
        ERRORS.labels(self.model, "redis").inc()
        self._down_until = self.clock() + self.retry_after_s
        if not self._failing:
            self._failing = True
            log.warning("inference cache: Redis at %s failed (%s: %s); answering from the model, retrying every "
                        "%.0f s", self.address, type(error).__name__, error, self.retry_after_s)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("inference cache: Redis at %s answers again", self.address)


class TieredCache:
    """The in-process LRU in front of a shared cache: a shared hit is kept locally too."""

    def __init__(self, local: LocalCache, shared: InferenceCache) -> None:
        self.local, self.shared = local, shared

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        found = self.local.get_many(keys)
        missed = [i for i, value in enumerate(found) if value is None]
        if missed:
            shared = self.shared.get_many([keys[i] for i in missed])
            self.local.put_many((keys[i], value) for i, value in zip(missed, shared, strict=True) if value is not None)
            for i, value in zip(missed, shared, strict=True):
                found[i] = value
        return found

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        items = list(items)
        self.local.put_many(items)
        self.shared.put_many(items)

    def clear(self) -> None:
        self.local.clear()
        self.shared.clear()


def build_cache(settings: CacheSettings, model: str, clock: Callable[[], float] = time.monotonic
                ) -> InferenceCache | None:
    """The cache `settings` ask for (None: off), its metrics labelled with the served `model` name."""
    local = LocalCache(settings.size, settings.ttl_s, clock, model) if settings.size > 0 else None
    shared = RedisCache(settings.redis, settings.ttl_s, model, clock=clock) if settings.redis else None
    if local is not None and shared is not None:
        return TieredCache(local, shared)
    return local if shared is None else shared  # (not `local or shared`: an empty LocalCache is falsy)


def model_identity(module: Any, metadata: Mapping[str, Any], uri: str = "", version: str = "") -> bytes:
    """A digest naming one model exactly: its URI and version, its metadata, and every weight's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"uri": uri, "version": version, "metadata": metadata}, sort_keys=True,
                             default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + b"\x00" + str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.digest()


def non_deterministic_reason(module: Any, metadata: Mapping[str, Any]) -> str | None:
    """Why this model's answers cannot be cached, or None when they can."""
    if metadata.get("deterministic", True) is False:
        return 'its model.json says "deterministic": false'
    if any(part.training for part in module.modules()):
        return "its module is in training mode (dropout or batch statistics would change its answers)"
    return None


def row_keys(identity: bytes, numeric: Sequence[str], categorical: Sequence[str],
             columns: Mapping[str, Any]) -> list[bytes]:
    """One key per row of `columns`, over the model's `identity` and the row's values as the model reads them
    (see the module docstring). A numeric value that is not a number raises FeatureInputError, as the model
    would."""
    from slipway.components.preprocessing import _as_floats, category_key  # torch: only where a model is served

    rows = len(next(iter(columns.values())))
    if numeric:
        values = np.stack([_as_floats(name, columns[name]) for name in numeric], axis=1)
        values[np.isnan(values)] = _CANONICAL_NAN  # every NaN (and None) alike: one bit pattern
        numeric_bytes = [row.tobytes() for row in np.ascontiguousarray(values, dtype="<f8")]
    else:
        numeric_bytes = [b""] * rows
    categories = [list(columns[name]) for name in categorical]
    keys = []
    for i in range(rows):
        digest = hashlib.blake2b(identity, digest_size=16)
        digest.update(numeric_bytes[i])
        for values in categories:
            key = category_key(values[i])
            if key is None:
                digest.update(_MISSING)
            else:
                encoded = key.encode("utf-8")
                digest.update(b"\x01" + len(encoded).to_bytes(4, "little") + encoded)
        keys.append(digest.digest())
    return keys

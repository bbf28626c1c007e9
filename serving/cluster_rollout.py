"""Canary rollouts on the cluster: apply an InferenceService, move its traffic, promote or roll back, wait.

A thin layer over the Kubernetes `CustomObjectsApi`, which the caller injects: nothing here loads a
kubeconfig or opens a connection at import or construction (`custom_objects.kube_client` makes an API
client; `CustomObjectsApi(that_client)` is what to pass).

    rollout = InferenceServiceRollout(client.CustomObjectsApi(kube_client()))
    stored = rollout.apply(build_canary(config, new_uri, percent=10))
    rollout.wait_ready(config.name, config.namespace, stored["metadata"]["generation"], timeout_s=900)
    endpoint = CanaryEndpoint(rollout, config.name, config.namespace, config.deployment_mode)
    endpoint.set_canary_percent(50); endpoint.promote()        # what serving/canary.py drives

How each change is sent. `patch_namespaced_custom_object` of kubernetes 30.1.0 always sends
`Content-Type: application/merge-patch+json` (RFC 7386; custom resources take no strategic merge
patch, and this client offers no JSON Patch for them): a key with a null value is deleted, an object
is merged key by key, and a list is replaced whole. So:

- Serverless: `{"spec": {"predictor": {"canaryTrafficPercent": N}}}` to move traffic, `null` to
  promote (the field removed), `0` to roll back.
- Standard: `spec.canary` is an atomic list, so a new percentage sends the whole entry back, and a
  promotion sends the difference between the stable predictor and the canary's (removed keys as
  null) with `"canary": null`; both carry the `metadata.resourceVersion` they were computed from, so
  that the API server refuses them (409) if the object changed in between, and they are computed
  again. A rollback is `{"spec": {"canary": null}}`.

`wait_ready` polls until `status.observedGeneration` has reached the generation a change produced and
the Ready condition is True. `CanaryEndpoint.rollback` waits only for the change to be observed: a
rollback usually follows a canary that failed, and in Serverless mode a failed latest revision keeps
Ready False even when all the traffic is back on the previous one.

What is verified how. No cluster exists here (REFERENCE.md). tests/test_inference_service.py drives
this module with a recording fake of CustomObjectsApi that applies each body the way the API server
would (merge patch with null deleting, resourceVersion preconditions, generation bumps on spec
changes, status kept out of spec writes) to a stored object, and validates every stored object
against the real InferenceService CRD. One test sends the requests through the real kubernetes client
to a local HTTP server, to pin the content type and the JSON on the wire. KServe's reaction (traffic
split, readiness) is not simulated beyond scripted status blocks shaped like KServe's own (Knative
traffic targets tagged `latest`/`prev`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kserve.models import V1beta1InferenceService, V1beta1PredictorSpec
from kubernetes import client
from kubernetes.client.rest import ApiException

from slipway.serving.inference_service import (
    DEPLOYMENT_MODE_ANNOTATION,
    GROUP,
    PLURAL,
    STABLE_ONLY_PREDICTOR_FIELDS,
    VERSION,
    DeploymentMode,
    check_percent,
    to_dict,
)

log = logging.getLogger(__name__)

TRANSIENT_STATUS = (429, 500, 502, 503, 504)  # worth polling again while waiting
CONFLICT_ATTEMPTS = 3  # read-modify-write rounds before a 409 is reported


class RolloutError(RuntimeError):
    """The cluster refused or lost a change; the message names the InferenceService and the reason."""


class RolloutTimeoutError(RolloutError, TimeoutError):
    """The change was not observed (or not Ready) in time; the message holds the last status seen."""


@dataclasses.dataclass(frozen=True)
class TrafficTarget:
    """One entry of `status.components.predictor.traffic` (a Knative traffic target, Serverless mode)."""

    percent: int
    revision_name: str | None
    tag: str | None
    latest_revision: bool | None

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> TrafficTarget:
        return cls(percent=int(entry.get("percent") or 0), revision_name=entry.get("revisionName"),
                   tag=entry.get("tag"), latest_revision=entry.get("latestRevision"))


# --- the patches --------------------------------------------------------------------------------------


def canary_percent_patch(live: Mapping[str, Any], mode: DeploymentMode, percent: int) -> dict[str, Any]:
    """The merge patch that sends `percent`% of the traffic to the canary of the object `live`."""
    percent = check_percent(percent)
    if mode is DeploymentMode.SERVERLESS:
        return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
    entry = copy.deepcopy(_standard_canary(live))
    entry["trafficPercent"] = percent
    return {"metadata": {"resourceVersion": _resource_version(live)}, "spec": {"canary": [entry]}}


def promotion_patch(live: Mapping[str, Any], mode: DeploymentMode) -> dict[str, Any]:
    """The merge patch that gives the canary all of the traffic and makes it the stable predictor."""
    if mode is DeploymentMode.SERVERLESS:
        return {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    stable = live["spec"]["predictor"]
    target = copy.deepcopy(_standard_canary(live)["predictor"])
    for field in STABLE_ONLY_PREDICTOR_FIELDS:
        key = V1beta1PredictorSpec.attribute_map[field]
        if key in stable:
            target[key] = copy.deepcopy(stable[key])
        else:
            target.pop(key, None)
    return {"metadata": {"resourceVersion": _resource_version(live)},
            "spec": {"predictor": _merge_patch(stable, target), "canary": None}}


def rollback_patch(mode: DeploymentMode) -> dict[str, Any]:
    """The merge patch that puts all of the traffic back on the stable predictor."""
    if mode is DeploymentMode.SERVERLESS:
        return {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    return {"spec": {"canary": None}}


# --- the cluster ----------------------------------------------------------------------------------------


class InferenceServiceRollout:
    """InferenceServices through an injected `CustomObjectsApi`: apply, move traffic, read it, wait.

    `sleep` and `clock` are injectable so that tests wait in simulated time.
    """

    def __init__(self, api: client.CustomObjectsApi, *, poll_s: float = 5.0, request_timeout_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.api = api
        self.poll_s = poll_s
        self.request_timeout_s = request_timeout_s
        self.sleep = sleep
        self.clock = clock

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        """The InferenceService as the API server stores it."""
        try:
            return self.api.get_namespaced_custom_object(group=GROUP, version=VERSION, namespace=namespace,
                                                         plural=PLURAL, name=name,
                                                         _request_timeout=self.request_timeout_s)
        except ApiException as error:
            raise _refused("read it", name, namespace, error) from None
        except urllib3.exceptions.HTTPError as error:
            raise _unanswered("read it", name, namespace, error) from None

    def apply(self, isvc: V1beta1InferenceService | Mapping[str, Any]) -> dict[str, Any]:
        """Creates the InferenceService, or replaces the one of that name with it; returns the stored object.

        A replacement is the whole desired object: fields set on the cluster by others are dropped
        (KServe's own defaults are set again by its webhook).
        """
        manifest = to_dict(isvc) if isinstance(isvc, V1beta1InferenceService) else copy.deepcopy(dict(isvc))
        metadata = manifest.get("metadata") or {}
        name, namespace = metadata.get("name"), metadata.get("namespace")
        if not name or not namespace:
            raise RolloutError("the InferenceService needs metadata.name and metadata.namespace")
        try:
            stored = self.api.create_namespaced_custom_object(group=GROUP, version=VERSION, namespace=namespace,
                                                              plural=PLURAL, body=manifest,
                                                              _request_timeout=self.request_timeout_s)
            log.info("created InferenceService %s/%s", namespace, name)
            return stored
        except ApiException as error:
            if error.status != 409:
                raise _refused("create it", name, namespace, error) from None
        except urllib3.exceptions.HTTPError as error:
            raise _unanswered("create it", name, namespace, error) from None
        attempt = 1
        while True:
            manifest["metadata"]["resourceVersion"] = _resource_version(self.get(name, namespace))
            try:
                stored = self.api.replace_namespaced_custom_object(
                    group=GROUP, version=VERSION, namespace=namespace, plural=PLURAL, name=name, body=manifest,
                    _request_timeout=self.request_timeout_s)
                log.info("replaced InferenceService %s/%s (generation %s)", namespace, name, _generation(stored))
                return stored
            except ApiException as error:
                if error.status != 409 or attempt == CONFLICT_ATTEMPTS:
                    raise _refused("replace it", name, namespace, error) from None
            except urllib3.exceptions.HTTPError as error:
                raise _unanswered("replace it", name, namespace, error) from None
            attempt += 1

    def set_canary_percent(self, name: str, namespace: str, percent: int, mode: DeploymentMode) -> dict[str, Any]:
        """Sends `percent`% of the traffic to the canary; returns the stored object (its new generation)."""
        check_percent(percent)
        return self._patch(name, namespace, mode, f"set the canary to {percent}%",
                           lambda live: canary_percent_patch(live, mode, percent))

    def promote(self, name: str, namespace: str, mode: DeploymentMode) -> dict[str, Any]:
        """Gives the canary all of the traffic and makes it the stable predictor; returns the stored object."""
        return self._patch(name, namespace, mode, "promote the canary", lambda live: promotion_patch(live, mode))

    def rollback(self, name: str, namespace: str, mode: DeploymentMode) -> dict[str, Any]:
        """Puts all of the traffic back on the stable predictor; returns the stored object."""
        return self._patch(name, namespace, mode, "roll back the canary", lambda live: rollback_patch(mode))

    def traffic(self, name: str, namespace: str) -> list[TrafficTarget]:
        """The predictor's traffic split as KServe reports it (Serverless mode; Standard reports none: its
        split is `spec.canary[].trafficPercent`, its progress `status.canaryStatuses`)."""
        status = self.get(name, namespace).get("status") or {}
        predictor = (status.get("components") or {}).get("predictor") or {}
        return [TrafficTarget.from_status(entry) for entry in predictor.get("traffic") or []]

    def wait_ready(self, name: str, namespace: str, generation: int, timeout_s: float) -> dict[str, Any]:
        """Polls until KServe has observed `generation` and the Ready condition is True; returns the object."""
        return self._wait(name, namespace, generation, timeout_s, ready=True)

    def wait_observed(self, name: str, namespace: str, generation: int, timeout_s: float) -> dict[str, Any]:
        """Polls until KServe has observed `generation`, Ready or not; returns the object."""
        return self._wait(name, namespace, generation, timeout_s, ready=False)

    # --- internals ---

    def _patch(self, name: str, namespace: str, mode: DeploymentMode, what: str,
               body_for: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Reads the object, checks its mode, sends the patch computed from it; again after a conflict."""
        attempt = 1
        while True:
            live = self.get(name, namespace)
            _check_mode(live, mode)
            body = body_for(live)
            try:
                stored = self.api.patch_namespaced_custom_object(
                    group=GROUP, version=VERSION, namespace=namespace, plural=PLURAL, name=name, body=body,
                    _request_timeout=self.request_timeout_s)
                log.info("InferenceService %s/%s: %s (generation %s)", namespace, name, what, _generation(stored))
                return stored
            except ApiException as error:
                if error.status != 409 or attempt == CONFLICT_ATTEMPTS:
                    raise _refused(what, name, namespace, error) from None
                log.info("InferenceService %s/%s changed while we wrote; reading it again", namespace, name)
            except urllib3.exceptions.HTTPError as error:
                raise _unanswered(what, name, namespace, error) from None
            attempt += 1

    def _wait(self, name: str, namespace: str, generation: int, timeout_s: float, *, ready: bool) -> dict[str, Any]:
        what = f"InferenceService {namespace}/{name}"
        goal = "Ready" if ready else "observed"
        deadline = self.clock() + timeout_s
        seen = "nothing (no answer yet)"
        while True:
            try:
                live = self.api.get_namespaced_custom_object(group=GROUP, version=VERSION, namespace=namespace,
                                                             plural=PLURAL, name=name,
                                                             _request_timeout=self.request_timeout_s)
            except ApiException as error:
                if error.status not in TRANSIENT_STATUS:
                    raise _refused("read it", name, namespace, error) from None
                log.warning("%s: not readable (HTTP %s); polling again", what, error.status)
            except urllib3.exceptions.HTTPError as error:
                log.warning("%s: the API server did not answer (%s); polling again", what, error)
            else:
                status = live.get("status") or {}
                observed = status.get("observedGeneration")
                conditions = status.get("conditions") or []
                summary = _summary(observed, conditions)
                if summary != seen:
                    log.info("%s: %s", what, summary)
                    seen = summary
                if observed is not None and observed >= generation and (not ready or _is_true(conditions, "Ready")):
                    return live
            if self.clock() >= deadline:
                raise RolloutTimeoutError(f"{what} was not {goal} at generation {generation} within {timeout_s:g} s;"
                                          f" last seen: {seen}")
            self.sleep(self.poll_s)


@dataclasses.dataclass(frozen=True)
class CanaryEndpoint:
    """One InferenceService's canary, as the canary controller (serving/canary.py) drives it.

    Each call returns once KServe has acted on it: `set_canary_percent` and `promote` when the
    InferenceService is Ready at the new generation, `rollback` when the new generation is observed
    (see the module docstring); a RolloutTimeoutError after `timeout_s` otherwise.
    """

    rollout: InferenceServiceRollout
    name: str
    namespace: str
    mode: DeploymentMode
    timeout_s: float = 900.0

    def set_canary_percent(self, percent: int) -> None:
        stored = self.rollout.set_canary_percent(self.name, self.namespace, percent, self.mode)
        self.rollout.wait_ready(self.name, self.namespace, _generation(stored), self.timeout_s)

    def promote(self) -> None:
        stored = self.rollout.promote(self.name, self.namespace, self.mode)
        self.rollout.wait_ready(self.name, self.namespace, _generation(stored), self.timeout_s)

    def rollback(self) -> None:
        stored = self.rollout.rollback(self.name, self.namespace, self.mode)
        self.rollout.wait_observed(self.name, self.namespace, _generation(stored), self.timeout_s)


# --- helpers ------------------------------------------------------------------------------------------


def _merge_patch(current: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns `current` into `target` (keys only in `current` become null)."""
    patch: dict[str, Any] = {key: None for key in current if key not in target}
    for key, value in target.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = _merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in current or old != value:
            patch[key] = copy.deepcopy(value)
    return patch


def _standard_canary(live: Mapping[str, Any]) -> dict[str, Any]:
    canaries = (live.get("spec") or {}).get("canary") or []
    if len(canaries) != 1:
        metadata = live.get("metadata") or {}
        raise RolloutError(f"InferenceService {metadata.get('namespace')}/{metadata.get('name')}: expected one "
                           f"canary in spec.canary, found {len(canaries)}")
    return canaries[0]


def _check_mode(live: Mapping[str, Any], mode: DeploymentMode) -> None:
    """Refuses to send one mode's patch to an InferenceService of the other (KServe would ignore it)."""
    metadata = live.get("metadata") or {}
    recorded = (live.get("status") or {}).get("deploymentMode") or \
        (metadata.get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    if recorded is None:
        return
    try:
        actual = DeploymentMode(recorded)
    except ValueError:
        actual = None
    if actual is not mode:
        raise RolloutError(f"InferenceService {metadata.get('namespace')}/{metadata.get('name')} runs in "
                           f"{recorded!r} mode, not {mode.value!r}: its canary is driven differently")


def _resource_version(live: Mapping[str, Any]) -> str:
    return (live.get("metadata") or {})["resourceVersion"]


def _generation(stored: Mapping[str, Any]) -> int:
    return int((stored.get("metadata") or {}).get("generation") or 0)


def _is_true(conditions: list[Mapping[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _summary(observed: int | None, conditions: list[Mapping[str, Any]]) -> str:
    """`observedGeneration 2; Ready=False (RevisionFailed: ...), PredictorReady=False (...)`."""
    parts = []
    for condition in conditions:
        detail = ": ".join(str(p) for p in (condition.get("reason"), condition.get("message")) if p)
        parts.append(f"{condition.get('type')}={condition.get('status')}" + (f" ({detail})" if detail else ""))
    return f"observedGeneration {observed}; " + (", ".join(parts) if parts else "no conditions yet")


def _refused(what: str, name: str, namespace: str, error: ApiException) -> RolloutError:
    gone = " (it does not exist)" if error.status == 404 else ""
    return RolloutError(f"InferenceService {namespace}/{name}: could not {what}{gone}: "
                        f"HTTP {error.status} {_reason(error)}")


def _unanswered(what: str, name: str, namespace: str, error: Exception) -> RolloutError:
    return RolloutError(f"InferenceService {namespace}/{name}: could not {what}: "
                        f"the API server did not answer ({error})")


def _reason(error: ApiException) -> str:
    """The API server's own message from an error response (a Status object), else the HTTP reason."""
    try:
        return json.loads(error.body).get("message") or str(error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)

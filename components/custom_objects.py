"""Creating a Kubeflow custom object and following it to its end: TrainJobs, PyTorchJobs, Katib Experiments.

Every cluster-side step of Slipway has the same shape: build an object with the official model
classes, create it through the Kubernetes `CustomObjectsApi`, then poll it until a condition says
it finished well or failed. This module is that shape, once: `create` names the object and the API
server's own reason when it is refused; `follow` logs each change of what it sees (the conditions,
and whatever progress the caller reads from the status), tolerates transient API errors, and names
the failing condition's reason and message.

Verified against a fake API server on loopback (tests/fake_apiserver.py) that validates what is
created (the real CRDs, or Katib's webhook rules); no cluster runs in the tests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TRANSIENT = (429, 500, 502, 503, 504)


@dataclasses.dataclass(frozen=True)
class CustomResource:
    """Where a kind of custom object lives, and which condition types end it."""

    group: str
    version: str
    plural: str
    kind: str
    succeeded: str  # the condition type that means it finished well
    failed: str = "Failed"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


class CustomObjectError(RuntimeError):
    """The cluster refused the object, or it failed; the message names the object."""


class SubmitError(CustomObjectError):
    """The API server did not create the object (invalid, forbidden, already exists, unreachable)."""


class ObjectFailedError(CustomObjectError):
    """The object reached its failed condition (the message carries the condition's reason and message)."""


class WaitTimeoutError(CustomObjectError, TimeoutError):
    """The object did not finish in time; the message holds what was last seen."""


def kube_client(config_file: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client: the pod's service account inside a cluster (a KFP task), the kubeconfig elsewhere."""
    configuration = client.Configuration()
    if config_file is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=config_file, context=context, client_configuration=configuration)
    return client.ApiClient(configuration)


def pod_namespace(default: str = "kubeflow") -> str:
    """The namespace this pod runs in (a KFP task's profile namespace), else `default`."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or default
    except OSError:
        return default


def describe(resource: CustomResource, manifest: Mapping[str, Any]) -> str:
    """`TrainJob kubeflow-user/train-3f2a9c`: how logs and errors name an object."""
    namespace, name = identity(manifest)
    return f"{resource.kind} {namespace}/{name}"


def identity(manifest: Mapping[str, Any]) -> tuple[str, str]:
    metadata = manifest.get("metadata") or {}
    if not metadata.get("name") or not metadata.get("namespace"):
        raise ValueError("the manifest needs metadata.name and metadata.namespace")
    return metadata["namespace"], metadata["name"]


def create(manifest: Mapping[str, Any], resource: CustomResource, api: client.ApiClient, *,
           adopt_existing: bool = False) -> dict[str, Any]:
    """Creates the object in its namespace; returns it as the API server stored it.

    With `adopt_existing`, an object of the same name that already exists is returned instead of an
    error (a retried KFP task following what its first attempt created).
    """
    namespace, name = identity(manifest)
    what = describe(resource, manifest)
    custom = client.CustomObjectsApi(api)
    try:
        return custom.create_namespaced_custom_object(resource.group, resource.version, namespace, resource.plural,
                                                      dict(manifest), _request_timeout=60)
    except ApiException as error:
        if error.status == 409 and adopt_existing:
            log.warning("%s already exists: following it instead of creating another", what)
            return custom.get_namespaced_custom_object(resource.group, resource.version, namespace, resource.plural,
                                                       name, _request_timeout=60)
        raise SubmitError(f"could not create {what}: HTTP {error.status} {api_reason(error)}") from None
    except urllib3.exceptions.HTTPError as error:
        raise SubmitError(f"could not create {what}: the API server did not answer ({error})") from None


def follow(obj: Mapping[str, Any], resource: CustomResource, api: client.ApiClient, *,
           progress: Callable[[Mapping[str, Any]], str] | None = None, timeout_s: float = 24 * 3600,
           poll_s: float = 15.0, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Polls the object until its succeeded condition; returns it as last read.

    Logs each change of its true conditions (with `progress(status)` appended). Raises
    ObjectFailedError when the failed condition comes up (with its reason and message),
    WaitTimeoutError after `timeout_s`, and CustomObjectError when the object is gone or unreadable;
    a transient API error (429, 5xx, no answer) is logged and polled again.
    """
    namespace, name = identity(obj)
    what = describe(resource, obj)
    custom = client.CustomObjectsApi(api)
    deadline = clock() + timeout_s
    seen = ""
    while True:
        try:
            current = custom.get_namespaced_custom_object(resource.group, resource.version, namespace,
                                                          resource.plural, name, _request_timeout=60)
        except ApiException as error:
            if error.status not in _TRANSIENT:
                gone = " (deleted while we waited?)" if error.status == 404 else ""
                raise CustomObjectError(f"could not read {what}{gone}: HTTP {error.status} "
                                        f"{api_reason(error)}") from None
            log.warning("%s: status not readable (HTTP %s); polling again", what, error.status)
        except urllib3.exceptions.HTTPError as error:
            log.warning("%s: the API server did not answer (%s); polling again", what, error)
        else:
            status = current.get("status") or {}
            conditions = status.get("conditions") or []
            summary = conditions_summary(conditions)
            extra = progress(status) if progress else ""
            summary += f", {extra}" if extra else ""
            if summary != seen:
                log.info("%s: %s", what, summary)
                seen = summary
            failed = _condition(conditions, resource.failed)
            if failed:
                raise ObjectFailedError(f"{what} failed: {failed.get('reason') or 'no reason'}: "
                                        f"{failed.get('message') or 'no message'}")
            if _condition(conditions, resource.succeeded):
                return current
        if clock() >= deadline:
            raise WaitTimeoutError(f"{what} did not finish within {timeout_s:g} s; last seen: {seen or 'nothing'}")
        sleep(poll_s)


def conditions_summary(conditions: list[Mapping[str, Any]]) -> str:
    """`Created, Running (reason: message)`: the true conditions, the latest with its reason."""
    true = [c for c in conditions if c.get("status") == "True"]
    if not true:
        return "no conditions yet"
    latest = true[-1]
    detail = ": ".join(str(part) for part in (latest.get("reason"), latest.get("message")) if part)
    return ", ".join(str(c.get("type")) for c in true) + (f" ({detail})" if detail else "")


def api_reason(error: ApiException) -> str:
    """The API server's own message from an error response (a Status object), else the HTTP reason."""
    try:
        return json.loads(error.body).get("message") or str(error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def _condition(conditions: list[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind and c.get("status") == "True"), None)

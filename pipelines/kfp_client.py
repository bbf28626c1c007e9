"""Upload compiled pipelines to a Kubeflow Pipelines backend, start runs of them, follow the runs.

A thin layer over `kfp.Client` (which `KfpSession` takes, so a test or a notebook can hand it one):
what it adds is what `slipway upload | submit | runs` need and the client leaves out.

- Re-uploading a pipeline under a name already taken adds a version to that pipeline instead of
  failing with "already exists"; the version is named `<pipeline>-<UTC time>-<sha256 of the package>`,
  so that it is unique and says what it holds.
- A run's `key=value` arguments are typed and checked against the pipeline's parameters, read from
  the version's pipeline spec on the server, with the same parser as `slipway run` (an unknown name
  lists the valid ones) before anything is submitted.
- Waiting for a run reports each state change and treats CANCELED as the end (kfp.Client's own
  `wait_for_run_completion` does not, and would wait until its timeout).
- Every failure is one `KfpError` that names the host: unreachable, authentication refused, or the
  server's own status and message; never a urllib3 traceback. kfp.Client asks `/healthz` up to five
  times, five seconds apart, when it is made; here it asks once, and refuses an answer that is a web
  page (a login page in front of the API) instead of reading it as an empty health report.
- kfp.Client prints links on stdout as it goes; they are swallowed here, and the CLI prints its own.

What is verified how: the REST shapes are KFP's v2beta1 as kfp-server-api 2.17.3 serialises them (paths,
query parameters, the `uploadfile` multipart field, snake_case JSON, google.rpc.Status errors). The tests
run this module and the CLI through a real `kfp.Client` against `tests/kfp_apiserver.py`, an HTTP server
on 127.0.0.1 that answers those shapes strictly (404 for unknown routes, 400 for bodies it cannot read,
409 for a name taken) and keeps pipelines, versions, experiments and runs in memory. No real KFP
backend exists here: behaviour that only a real backend shows (multi-user namespaces and profiles,
Istio or Dex in front of the API, the argo workflow behind a run) is not exercised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kfp
import kfp_server_api
import urllib3
import yaml

DEFAULT_EXPERIMENT = "slipway"
UI_ENDPOINT_ENV = "KF_PIPELINES_UI_ENDPOINT"  # kfp.Client's, for links when the UI is elsewhere
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
CREDENTIALS = "pass credentials (a bearer token, or a Kubeflow login session cookie)"


class KfpError(Exception):
    """Talking to the KFP API failed; the message names the host and says what went wrong."""


class EndpointUnreachable(KfpError):
    """Nothing answers at the host (refused, unknown name, TLS failure)."""


class AuthenticationFailed(KfpError):
    """The API answered 401/403, or a login page answered instead of the API."""


class NotFound(KfpError):
    """The pipeline, version, experiment or run named does not exist on the host."""


class PackageError(KfpError):
    """The pipeline package to upload is missing or is not a compiled pipeline."""


class RunTimeout(KfpError):
    """A run was still going when the wait ended."""


@dataclasses.dataclass(frozen=True)
class Upload:
    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    new_pipeline: bool  # False: a new version of a pipeline uploaded before


@dataclasses.dataclass(frozen=True)
class Submission:
    run_id: str
    run_name: str
    experiment_id: str
    pipeline_id: str
    version_id: str
    arguments: dict[str, Any]
    url: str


@dataclasses.dataclass(frozen=True)
class RunStatus:
    run_id: str
    name: str
    state: str
    created_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    error: str  # the server's message for a failed run, else ""

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


def normalise_host(host: str) -> str:
    """The address kfp.Client will call: https:// when no scheme is given (kfp's default), no trailing /."""
    host = host.strip()
    return (host if host.startswith(("http://", "https://")) else f"https://{host}").rstrip("/")


class _Client(kfp.Client):
    """kfp.Client with a one-shot health check that tells the API from a login page."""

    _health: kfp_server_api.V2beta1GetHealthzResponse | None = None

    def get_kfp_healthz(self, sleep_duration: int = 5) -> kfp_server_api.V2beta1GetHealthzResponse:
        if self._health is None:
            answer = self._healthz_api.healthz_service_get_healthz(_preload_content=False)
            kind = answer.headers.get("Content-Type", "")
            if "json" not in kind:
                raise _LoginPage(kind or "no content type")
            try:
                multi_user = json.loads(answer.data).get("multi_user")
            except (ValueError, AttributeError):  # answered, but not with the health report: nothing to learn
                multi_user = None
            self._health = kfp_server_api.V2beta1GetHealthzResponse(multi_user=multi_user)
        return self._health


class _LoginPage(Exception):
    pass


def connect(host: str, namespace: str | None = None, existing_token: str | None = None,
            cookies: str | None = None) -> KfpSession:
    """A session with the KFP API at `host`, checked to answer (its `/healthz`) before it is used.

    `existing_token` is sent as `Authorization: Bearer`, `cookies` as the Cookie header (a Kubeflow
    login session, e.g. `authservice_session=...`); `namespace` is the user's profile namespace on a
    multi-user Kubeflow, where experiments and runs live.
    """
    host = normalise_host(host)
    with speaking_to(host), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        client = _Client(host=host, namespace=namespace or "kubeflow", existing_token=existing_token,
                         cookies=cookies)
        client.get_kfp_healthz()
    return KfpSession(client, host, namespace)


class KfpSession:
    """What Slipway does with a KFP backend, over a `kfp.Client` for `host`."""

    def __init__(self, client: kfp.Client, host: str, namespace: str | None = None):
        self.client = client
        self.host = normalise_host(host)
        self.namespace = namespace

    def run_url(self, run_id: str) -> str:
        """The run's page in the KFP UI (at KF_PIPELINES_UI_ENDPOINT when the UI is not at the API's host)."""
        return f"{normalise_host(os.environ.get(UI_ENDPOINT_ENV) or self.host)}/#/runs/details/{run_id}"

    # --- upload ---------------------------------------------------------------------------

    def upload(self, package: Path, name: str | None = None, description: str | None = None,
               now: datetime.datetime | None = None) -> Upload:
        """Uploads a compiled pipeline: a new pipeline the first time, a new version of it after that.

        `name` defaults to the pipeline's name in the package (`pipelineInfo.name`).
        """
        data = read_package(package)
        name = name or data["pipelineInfo"]["name"]
        with self._api():
            pipeline_id = self.client.get_pipeline_id(name)
            if pipeline_id is None:
                pipeline = self.client.upload_pipeline(str(package), pipeline_name=name, description=description)
                latest = self._latest_version(pipeline.pipeline_id)
                return Upload(pipeline.pipeline_id, name, latest.pipeline_version_id, latest.display_name, True)
            stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%d-%H%M%S")
            version_name = f"{name}-{stamp}-{hashlib.sha256(package.read_bytes()).hexdigest()[:8]}"
            version = self.client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id,
                                                          description=description)
            return Upload(pipeline_id, name, version.pipeline_version_id, version_name, False)

    def _latest_version(self, pipeline_id: str) -> Any:
        answer = self.client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        if not answer.pipeline_versions:
            raise NotFound(f"pipeline {pipeline_id} on {self.host} has no versions")
        return answer.pipeline_versions[0]

    # --- submit ---------------------------------------------------------------------------

    def submit(self, pipeline: str, assignments: list[str], experiment: str = DEFAULT_EXPERIMENT,
               run_name: str | None = None, version_id: str | None = None) -> Submission:
        """Starts a run of the uploaded pipeline named `pipeline` (its latest version, or `version_id`).

        `assignments` are `key=value` texts, typed by the version's parameters; the experiment is
        created if it does not exist. Raises `PipelineArgumentError` (a ValueError) for a bad argument.
        """
        with self._api():
            pipeline_id = self.client.get_pipeline_id(pipeline)
            if pipeline_id is None:
                raise NotFound(f"no pipeline named {pipeline!r} on {self.host}: upload it first (slipway upload)")
            if version_id:
                try:
                    version = self.client.get_pipeline_version(pipeline_id, version_id)
                except kfp_server_api.ApiException as exc:
                    if exc.status != 404:
                        raise
                    raise NotFound(f"pipeline {pipeline!r} on {self.host} has no version {version_id!r}") from None
            else:
                version = self._latest_version(pipeline_id)
                if version.pipeline_spec is None:  # lists may leave the spec out; the version's GET has it
                    version = self.client.get_pipeline_version(pipeline_id, version.pipeline_version_id)
            arguments = typed_arguments(version.pipeline_spec, assignments)
            experiment_id = self.client.create_experiment(experiment, namespace=self.namespace).experiment_id
            run_name = run_name or f"{pipeline} {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S}"
            run = self.client.run_pipeline(experiment_id, run_name, params=arguments, pipeline_id=pipeline_id,
                                           version_id=version.pipeline_version_id)
        return Submission(run.run_id, run_name, experiment_id, pipeline_id, version.pipeline_version_id,
                          arguments, self.run_url(run.run_id))

    # --- runs -----------------------------------------------------------------------------

    def run(self, run_id: str) -> RunStatus:
        """One run's state now."""
        with self._api():
            try:
                return _status(self.client.get_run(run_id))
            except kfp_server_api.ApiException as exc:
                if exc.status != 404:
                    raise
                raise NotFound(f"no run {run_id!r} on {self.host}") from None

    def runs(self, experiment: str | None = None, limit: int = 20) -> list[RunStatus]:
        """The most recent runs, newest first: of one experiment, or all the user can see."""
        with self._api():
            experiment_id = None
            if experiment:
                try:
                    experiment_id = self.client.get_experiment(experiment_name=experiment,
                                                               namespace=self.namespace).experiment_id
                except ValueError as exc:  # kfp: "No experiment is found with name ..."
                    raise NotFound(f"no experiment named {experiment!r} on {self.host}") from exc
            answer = self.client.list_runs(page_size=limit, sort_by="created_at desc", experiment_id=experiment_id,
                                           namespace=self.namespace)
        return [_status(run) for run in answer.runs or []]

    def wait(self, run_id: str, timeout_s: float, poll_s: float = 5.0,
             on_change: Callable[[RunStatus], None] = lambda status: None) -> RunStatus:
        """Polls the run until it ends (SUCCEEDED, FAILED, SKIPPED, CANCELED), calling `on_change` on each new
        state; raises `RunTimeout` if it has not ended after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            status = self.run(run_id)
            if status.state != last:
                on_change(status)
                last = status.state
            if status.done:
                return status
            if time.monotonic() >= deadline:
                raise RunTimeout(f"run {run_id} on {self.host} is still {status.state} after {timeout_s:g} s "
                                 f"(it goes on; follow it with: slipway runs {run_id})")
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))

    def _api(self) -> contextlib.AbstractContextManager[None]:
        return speaking_to(self.host)


@contextlib.contextmanager
def speaking_to(host: str) -> Iterator[None]:
    """Turns what kfp.Client raises into one `KfpError` naming `host`, and keeps its prints off stdout."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except urllib3.exceptions.HTTPError as exc:  # MaxRetryError around the connection's own error
        detail = str(getattr(exc, "reason", None) or exc).split("Failed to establish a new connection: ")[-1]
        raise EndpointUnreachable(f"{host} is unreachable ({detail}): check the address, and that the KFP API "
                                  "is up there (or port-forwarded to it)") from None
    except _LoginPage as exc:
        raise AuthenticationFailed(f"{host} answered with a web page ({exc}), not the KFP API: most likely a "
                                   f"login page, so authentication failed; {CREDENTIALS}") from None
    except kfp_server_api.ApiException as exc:
        if exc.status == 0:  # kfp-server-api's wrapping of a TLS failure
            raise EndpointUnreachable(f"{host} is unreachable: {exc.reason}") from None
        if exc.status in (401, 403):
            what = "authentication" if exc.status == 401 else "authorization"
            raise AuthenticationFailed(f"{host} refused the request: {what} failed (HTTP {exc.status}: "
                                       f"{_server_message(exc)}); {CREDENTIALS}") from None
        raise KfpError(f"{host} answered HTTP {exc.status} {exc.reason}: {_server_message(exc)}") from None


def read_package(package: Path) -> dict[str, Any]:
    """The pipeline spec in a compiled pipeline YAML (what `slipway compile` writes), checked to be one."""
    try:
        docs = list(yaml.safe_load_all(package.read_bytes()))
    except OSError as exc:
        raise PackageError(f"cannot read the pipeline package {package}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        raise PackageError(f"{package} is not YAML: {getattr(exc, 'problem', None) or exc}"
                           + (f" (line {where.line + 1})" if where else "")) from None
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "root" not in spec or not (spec.get("pipelineInfo") or {}).get("name"):
        raise PackageError(f"{package} is not a compiled KFP pipeline (no pipelineInfo.name and root); "
                           "write one with: slipway compile")
    return spec


def typed_arguments(pipeline_spec: dict[str, Any] | None, assignments: list[str]) -> dict[str, Any]:
    """`key=value` texts as typed arguments of the pipeline whose IR is `pipeline_spec`, parsed and checked as
    `slipway run` does; also refuses to leave out a parameter that has no default (the run would fail later).

    Without a spec to read (an old server), values are read as JSON where they parse, else as text.
    """
    from kfp import components

    from slipway.pipelines.local import PipelineArgumentError, parse_arguments, pipeline_parameters

    if not pipeline_spec:
        return {key: _json_or_text(text) for key, _, text in (a.partition("=") for a in assignments)}
    if "pipeline_spec" in pipeline_spec and "pipelineInfo" not in pipeline_spec:
        pipeline_spec = pipeline_spec["pipeline_spec"]  # KFP wraps it so when a platform spec came with it
    component = components.load_component_from_text(yaml.safe_dump(pipeline_spec))
    arguments = parse_arguments(component, assignments)
    inputs = component.component_spec.inputs or {}
    missing = [f"{name} ({kind.lower()})" for name, (kind, _) in pipeline_parameters(component).items()
               if not inputs[name].optional and name not in arguments]
    if missing:
        raise PipelineArgumentError(f"pipeline {component.name!r} has no default for {', '.join(missing)}: "
                                    "give each a value")
    return arguments


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _status(run: kfp_server_api.V2beta1Run) -> RunStatus:
    return RunStatus(run.run_id, run.display_name or "", run.state or "RUNTIME_STATE_UNSPECIFIED",
                     run.created_at, run.finished_at, (run.error.message or "") if run.error else "")


def _server_message(exc: kfp_server_api.ApiException) -> str:
    """The google.rpc.Status message in the answer's body, else the body itself (shortened)."""
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        answer = json.loads(body)
        return str(answer.get("message") or answer.get("error") or body)
    except (ValueError, AttributeError):
        return " ".join(body.split())[:200] or str(exc.reason)

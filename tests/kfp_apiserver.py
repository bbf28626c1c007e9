"""A stand-in Kubeflow Pipelines API server (REST, v2beta1) on loopback, for `slipway upload | submit | runs`.

No KFP backend can run here (no cluster, no Docker). This one speaks the REST shapes that `kfp.Client`
2.17 and `kfp-server-api` 2.17.3 send and read, as read from their source: the paths under
`/apis/v2beta1/`, snake_case JSON fields, the `filter` query parameter as a JSON Filter (predicates
with `operation` 1 = EQUALS), multipart uploads whose file field is `uploadfile` with the pipeline's
name in the query, and errors as a google.rpc.Status body (`code`, `message`) with the HTTP status
grpc-gateway maps it to. It is strict where the real server is: an unknown route is 404, a body or
query it cannot read is 400, a pipeline name or a version name used twice is 409, a run that names
a missing experiment or pipeline version is 404.

State is real and in memory: uploads create pipelines and versions (the first upload's version is
named after the pipeline, as KFP does), runs keep their runtime config, and the n-th
`GET /runs/{id}` answers the n-th state of `script` (the first is the state a run is created in;
the last repeats), so a client that polls sees the transitions a real run goes through.
Timestamps come from a clock that ticks one second per object created, so "the latest" is never
a tie. With `token` set, every request needs `Authorization: Bearer <token>`: none is 401, a wrong
one 403. With `login_page`, the server stands behind a login as Kubeflow's is (oauth2-proxy, Dex):
every API request is redirected (302) to `/dex/auth`, which answers with an HTML login page.
"""

from __future__ import annotations

import copy
import datetime
import email.parser
import email.policy
import http.server
import itertools
import json
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import yaml

API = "/apis/v2beta1"
EQUALS = 1
# google.rpc.Code -> the HTTP status grpc-gateway answers with.
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class FakeKfp:
    """Enough of the KFP API server for the client: pipelines, versions, experiments, runs, healthz."""

    def __init__(self, token: str | None = None,
                 script: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED"), login_page: bool = False):
        self.token = token
        self.login_page = login_page
        self.script = script
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}  # version id -> version (with its pipeline_id)
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self._clock = itertools.count()
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKfp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def versions_of(self, pipeline_id: str) -> list[dict[str, Any]]:
        return [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]

    def _now(self) -> str:
        start = datetime.datetime(2026, 11, 24, 12, 0, 0, tzinfo=datetime.UTC)
        return (start + datetime.timedelta(seconds=next(self._clock))).strftime("%Y-%m-%dT%H:%M:%SZ")

    # --- the API --------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str
               ) -> tuple[int, dict[str, Any]]:
        if not path.startswith(API + "/"):
            raise ApiError(404, "Not Found")
        parts = path[len(API) + 1:].split("/")
        routes = {
            ("GET", "healthz"): lambda: {"multi_user": False, "pipeline_store": "database"},
            ("GET", "pipelines"): lambda: self._page("pipelines", self.pipelines.values(), query),
            ("POST", "pipelines", "upload"): lambda: self._upload(query, body, content_type),
            ("POST", "pipelines", "upload_version"): lambda: self._upload_version(query, body, content_type),
            ("GET", "pipelines", "*"): lambda: self._pipeline(parts[1]),
            ("GET", "pipelines", "*", "versions"): lambda: self._page(
                "pipeline_versions", self.versions_of(self._pipeline(parts[1])["pipeline_id"]), query),
            ("GET", "pipelines", "*", "versions", "*"): lambda: self._version(parts[1], parts[3]),
            ("GET", "experiments"): lambda: self._page("experiments", self.experiments.values(), query),
            ("POST", "experiments"): lambda: self._create_experiment(_json(body)),
            ("GET", "experiments", "*"): lambda: self._found(self.experiments, parts[1], "experiment"),
            ("GET", "runs"): lambda: self._page("runs", self._runs_in(query), query),
            ("POST", "runs"): lambda: self._create_run(_json(body)),
            ("GET", "runs", "*"): lambda: self._get_run(parts[1]),
        }
        matching = {key[0]: action for key, action in routes.items() if len(key) - 1 == len(parts) and all(
            want in ("*", part) for want, part in zip(key[1:], parts, strict=True))}
        if method in matching:
            return 200, matching[method]()
        raise ApiError(405, "Method Not Allowed") if matching else ApiError(404, "Not Found")

    def _page(self, field: str, items: Any, query: dict[str, str]) -> dict[str, Any]:
        """A list answer: `filter` (EQUALS predicates), `sort_by` ("field [desc]"), `page_size`/`page_token`."""
        rows = list(items)
        if query.get("filter"):
            try:
                predicates = json.loads(query["filter"])["predicates"]
                for predicate in predicates:
                    if predicate["operation"] not in (EQUALS, "EQUALS"):
                        raise ApiError(400, f"unsupported filter operation {predicate['operation']!r}")
                    if predicate["key"] not in ("display_name", "name"):
                        raise ApiError(400, f"Invalid input error: filter key {predicate['key']!r} is not supported")
                    want = predicate.get("stringValue", predicate.get("string_value"))
                    rows = [row for row in rows if row.get(predicate["key"]) == want]
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, f"Invalid input error: failed to parse the filter: {exc}") from None
        field_name, _, order = query.get("sort_by", "").partition(" ")
        if field_name:
            if field_name not in ("created_at", "display_name", "name") or order not in ("", "asc", "desc"):
                raise ApiError(400, f"Invalid input error: invalid sorting field {query['sort_by']!r}")
            rows.sort(key=lambda row: row.get(field_name, ""), reverse=order == "desc")
        try:
            size = int(query.get("page_size") or 20)
            start = int(query.get("page_token") or 0)
        except ValueError:
            raise ApiError(400, "Invalid input error: page_size and page_token are numbers") from None
        answer: dict[str, Any] = {"total_size": len(rows)}
        if rows[start:start + size]:
            answer[field] = [_public(row) for row in rows[start:start + size]]
        if start + size < len(rows):
            answer["next_page_token"] = str(start + size)
        return answer

    @staticmethod
    def _found(table: dict[str, dict[str, Any]], key: str, kind: str) -> dict[str, Any]:
        if key not in table:
            raise ApiError(404, f"{kind} {key} not found: ResourceNotFoundError")
        return _public(table[key])

    def _pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return self._found(self.pipelines, pipeline_id, "Pipeline")

    def _version(self, pipeline_id: str, version_id: str) -> dict[str, Any]:
        version = self.versions.get(version_id)
        if version is None or version["pipeline_id"] != pipeline_id:
            raise ApiError(404, f"PipelineVersion {version_id} of pipeline {pipeline_id} not found")
        return copy.deepcopy(version)

    def _uploaded_spec(self, body: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
        """The `uploadfile` part of a multipart body, read as a compiled pipeline (IR YAML)."""
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "Invalid input error: expected a multipart/form-data upload")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        files = [part for part in message.iter_parts() if part.get_param("name", header="content-disposition")
                 == "uploadfile"]
        if len(files) != 1:
            raise ApiError(400, "Invalid input error: failed to read the pipeline file from the form field "
                                "'uploadfile'")
        try:
            docs = list(yaml.safe_load_all(files[0].get_payload(decode=True)))
        except yaml.YAMLError as exc:
            raise ApiError(400, f"Invalid input error: the pipeline file is not YAML: {exc}") from None
        spec = docs[0] if docs else None
        if not isinstance(spec, dict) or "root" not in spec or not spec.get("pipelineInfo", {}).get("name"):
            raise ApiError(400, "Invalid input error: the file is not a KFP pipeline spec (no pipelineInfo.name "
                                "or root)")
        if len(docs) > 1:  # the platform spec (kfp-kubernetes) travels with it, as KFP stores it
            spec = {"pipeline_spec": spec, "platform_spec": docs[1]}
        return files[0].get_filename() or "pipeline.yaml", spec

    def _add_version(self, pipeline_id: str, name: str, description: str, spec: dict[str, Any]
                     ) -> dict[str, Any]:
        if any(v["display_name"] == name for v in self.versions_of(pipeline_id)):
            raise ApiError(409, f"Already exists error: a pipeline version named {name!r} exists in pipeline "
                                f"{pipeline_id}")
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "name": name,
                   "display_name": name, "description": description, "created_at": self._now(),
                   "pipeline_spec": spec}
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _upload(self, query: dict[str, str], body: bytes, content_type: str) -> dict[str, Any]:
        name = query.get("name") or query.get("display_name") or ""
        if not name.strip():
            raise ApiError(400, "Invalid input error: pipeline name is empty")
        _, spec = self._uploaded_spec(body, content_type)
        if any(p["display_name"] == name for p in self.pipelines.values()):
            raise ApiError(409, f"Already exists error: a pipeline named {name!r} already exists")
        pipeline = {"pipeline_id": str(uuid.uuid4()), "name": name, "display_name": name,
                    "description": query.get("description", ""), "created_at": self._now()}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self._add_version(pipeline["pipeline_id"], name, pipeline["description"], spec)
        return _public(pipeline)

    def _upload_version(self, query: dict[str, str], body: bytes, content_type: str) -> dict[str, Any]:
        name = query.get("name") or query.get("display_name") or ""
        if not name.strip() or not query.get("pipelineid"):
            raise ApiError(400, "Invalid input error: a pipeline version needs a name and a pipelineid")
        self._pipeline(query["pipelineid"])
        _, spec = self._uploaded_spec(body, content_type)
        return _public(self._add_version(query["pipelineid"], name, query.get("description", ""), spec))

    def _create_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("display_name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "Invalid input error: experiment display_name is empty")
        if any(e["display_name"] == name for e in self.experiments.values()):
            raise ApiError(409, f"Already exists error: an experiment named {name!r} already exists")
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": name,
                      "description": body.get("description") or "", "namespace": body.get("namespace") or "",
                      "created_at": self._now(), "storage_state": "AVAILABLE"}
        self.experiments[experiment["experiment_id"]] = experiment
        return _public(experiment)

    def _create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("display_name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "Invalid input error: run display_name is empty")
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"experiment {body.get('experiment_id')} not found: ResourceNotFoundError")
        reference = body.get("pipeline_version_reference")
        if not isinstance(reference, dict):
            raise ApiError(400, "Invalid input error: a run needs a pipeline_version_reference or a pipeline_spec")
        self._version(str(reference.get("pipeline_id")), str(reference.get("pipeline_version_id")))
        config = body.get("runtime_config") or {}
        if not isinstance(config, dict) or not isinstance(config.get("parameters", {}), dict):
            raise ApiError(400, "Invalid input error: runtime_config.parameters must be an object")
        created = self._now()
        run = {"run_id": str(uuid.uuid4()), "display_name": name, "experiment_id": body["experiment_id"],
               "pipeline_version_reference": reference, "runtime_config": config,
               "service_account": body.get("service_account", ""), "storage_state": "AVAILABLE",
               "created_at": created, "scheduled_at": created, "state": self.script[0],
               "state_history": [{"update_time": created, "state": self.script[0]}],
               "_script": list(self.script), "_step": 0}
        self.runs[run["run_id"]] = run
        return _public(run)

    def _get_run(self, run_id: str) -> dict[str, Any]:
        if run_id not in self.runs:
            raise ApiError(404, f"run {run_id} not found: ResourceNotFoundError")
        run = self.runs[run_id]
        state = run["_script"][min(run["_step"], len(run["_script"]) - 1)]
        run["_step"] += 1
        if state != run["state"]:
            run["state"] = state
            run["state_history"].append({"update_time": self._now(), "state": state})
            if state in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"):
                run["finished_at"] = run["state_history"][-1]["update_time"]
            if state == "FAILED":
                run["error"] = {"code": 2, "message": "task 'train' failed: exit code 1"}
        return _public(run)

    def _runs_in(self, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        if query.get("experiment_id") and query["experiment_id"] not in self.experiments:
            raise ApiError(404, f"experiment {query['experiment_id']} not found: ResourceNotFoundError")
        return (run for run in self.runs.values()
                if not query.get("experiment_id") or run["experiment_id"] == query["experiment_id"])

    # --- HTTP -----------------------------------------------------------------------------

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def serve(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                fake.requests.append(f"{method} {url.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fake.login_page:
                    return self.login(url.path)
                try:
                    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                    if fake.token is not None:
                        sent = self.headers.get("Authorization")
                        if not sent:
                            raise ApiError(401, "Unauthenticated: request has no Authorization header")
                        if sent != f"Bearer {fake.token}":
                            raise ApiError(403, "PermissionDenied: the token is not valid for this user")
                    with fake._lock:
                        code, answer = fake.handle(method, url.path, query, body,
                                                   self.headers.get("Content-Type", ""))
                except ApiError as exc:
                    code = exc.status
                    answer = {"error": exc.message, "code": GRPC_CODES.get(code, 2), "message": exc.message,
                              "details": []}
                self.answer(code, answer)

            def login(self, path: str) -> None:
                page = b"<!DOCTYPE html><html><head><title>Log in to Your Account</title></head></html>"
                self.send_response(200 if path.startswith("/dex/") else 302)
                if not path.startswith("/dex/"):
                    self.send_header("Location", "/dex/auth?client_id=kubeflow-oidc-authservice")
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_GET(self) -> None:
                self.serve("GET")

            def do_POST(self) -> None:
                self.serve("POST")

            def do_DELETE(self) -> None:
                self.serve("DELETE")

        return Handler


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"Invalid input error: the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "Invalid input error: the body is not a JSON object")
    return value


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """What the server sends: a copy, without the fake's bookkeeping fields."""
    return {key: copy.deepcopy(value) for key, value in row.items() if not key.startswith("_")}

"""A stand-in Kubernetes API server for custom objects, on loopback, for the cluster-facing code's tests.

No API server can run here (no cluster, no Docker). This one speaks the few REST shapes that
`kubernetes.client.CustomObjectsApi` uses (discovery, create, get), answers errors as Status objects
the way the real one does, and validates every created object, so what the code under test sends
is checked and what it reads back is scripted.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from slipway.components.custom_objects import CustomResource


class FakeApiServer:
    """Enough of a Kubernetes API server for custom objects, on 127.0.0.1.

    Discovery (`GET /apis/<group>/<version>`) for the resources it serves; `POST` checks the body with
    the resource's validator (the real CRD, or Katib's webhook rules: 422 Invalid with the errors, as
    the API server answers) and stores it (409 if the name is taken); `GET` returns it with the next
    status of its script (the last one repeats). `fail_gets` makes that many GETs answer 503 first.
    """

    def __init__(self, served: Mapping[CustomResource, Callable[[dict[str, Any]], list[str]]], script: Any):
        self.served = served
        self.script = script
        self.objects: dict[str, dict[str, Any]] = {}
        self.gets: dict[str, int] = {}
        self.fail_gets = 0
        self.requests: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.url))

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

            def status(self, code: int, reason: str, message: str) -> None:
                self.answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                   "reason": reason, "code": code})

            def route(self) -> tuple[CustomResource | None, list[str]]:
                parts = self.path.split("?")[0].strip("/").split("/")
                for kind in fake.served:
                    if parts[:3] == ["apis", kind.group, kind.version]:
                        return kind, parts[3:]
                return None, parts

            def do_GET(self) -> None:
                fake.requests.append(f"GET {self.path}")
                kind, rest = self.route()
                if kind is None:
                    return self.status(404, "NotFound", "the server could not find the requested resource")
                if not rest:
                    return self.answer(200, {"kind": "APIResourceList", "groupVersion": kind.api_version, "resources": [
                        {"name": kind.plural, "singularName": kind.kind.lower(), "namespaced": True, "kind": kind.kind,
                         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]})
                key = "/".join(rest)
                if key not in fake.objects:
                    return self.status(404, "NotFound", f'{kind.plural}.{kind.group} "{rest[-1]}" not found')
                if fake.fail_gets:
                    fake.fail_gets -= 1
                    return self.status(503, "ServiceUnavailable", "etcd is catching its breath")
                step = fake.gets.get(key, 0)
                fake.gets[key] = step + 1
                stored = copy.deepcopy(fake.objects[key])
                stored["status"] = fake.script[min(step, len(fake.script) - 1)]
                self.answer(200, stored)

            def do_POST(self) -> None:
                fake.requests.append(f"POST {self.path}")
                kind, rest = self.route()
                if kind is None or len(rest) != 3 or rest[0] != "namespaces" or rest[2] != kind.plural:
                    return self.status(404, "NotFound", "the server could not find the requested resource")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = body.get("metadata", {}).get("name", "")
                errors = fake.served[kind](body)
                if errors:
                    return self.status(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: '
                                                       + "; ".join(errors))
                key = f"namespaces/{rest[1]}/{kind.plural}/{name}"
                if key in fake.objects:
                    return self.status(409, "AlreadyExists", f'{kind.plural}.{kind.group} "{name}" already exists')
                body["metadata"].update(uid="6a4c9b1e-0000-4000-8000-000000000001", resourceVersion="1", generation=1,
                                        creationTimestamp="2026-11-23T12:00:00Z")
                fake.objects[key] = body
                self.answer(201, body)

        return Handler

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A Slipway server (`slipway serve`, `slipway transform`) as a child process on free loopback ports.

What a local deployment and the serving benchmark need of a server they start: free ports, a log
file, "ready" meaning both its REST model endpoint and its gRPC port answer, a clear error with the
log's tail when it dies or never comes up, and a stop that leaves nothing behind (its own process
group gets SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """The server exited, or did not become ready in time; the message ends with its log's tail."""


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (each probe stays bound until all are chosen)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


class ServerProcess:
    """`slipway <args> --http-port P --grpc-port G` in its own process group; ready when model `name` is.

        with ServerProcess(["serve", "--model", str(model), "--name", "taxi"], "taxi", workdir) as server:
            httpx.post(f"{server.url}/v1/models/taxi:predict", json=...)
    """

    def __init__(self, args: Sequence[str], name: str, workdir: Path, start_timeout_s: float = 180.0) -> None:
        self.args, self.name, self.workdir, self.start_timeout_s = list(args), name, Path(workdir), start_timeout_s
        self.http_port, self.grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def what(self) -> str:
        return f"slipway {' '.join(self.args[:3])}"

    def __enter__(self) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "slipway", *self.args,
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        with self.log_path.open("wb") as server_log:
            self.process = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.info("started %s at %s (pid %d, log %s)", self.what, self.url, self.process.pid, self.log_path)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        import grpc

        started = time.monotonic()
        deadline = started + self.start_timeout_s
        while True:
            self.check_alive("before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/models/{self.name}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.what} was not ready within {self.start_timeout_s:g} s:\n"
                                       f"{self.log_tail()}")
            time.sleep(0.2)
        with grpc.insecure_channel(self.grpc_target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))
            except grpc.FutureTimeoutError:
                raise ServerStartError(f"{self.what}: its gRPC port {self.grpc_port} did not come up:\n"
                                       f"{self.log_tail()}") from None
        log.info("%s ready in %.1f s", self.what, time.monotonic() - started)

    def check_alive(self, when: str) -> None:
        """Raises ServerStartError with the log's tail if the server has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ServerStartError(f"{self.what} exited with status {self.process.returncode} {when}:\n"
                                   f"{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def rss_mib(self) -> float | None:
        """The server's resident memory now, from /proc (None where there is none)."""
        with contextlib.suppress(OSError, StopIteration, AttributeError):
            status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
            return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024
        return None

    def stop(self) -> None:
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the group outlived the leader
        log.info("stopped %s at %s", self.what, self.url)

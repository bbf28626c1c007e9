"""Load generator for bench/serving.py: cheap on CPU, so that on a shared machine it measures the server, not itself.

It runs in its own process. Requests are pre-built by the caller and read from a bodies file
(records of a 4-byte big-endian length, then the bytes): JSON bodies for HTTP, serialized
`ModelInferRequest` protobufs for gRPC. Nothing is encoded while the clock runs.

- HTTP: raw asyncio streams (uvloop when installed) over keep-alive HTTP/1.1 connections; each
  request is one pre-encoded byte string (request line, headers, body); a response is read as the
  status line and headers, then Content-Length bytes (or chunks). No HTTP client library.
- gRPC: grpc.aio on one channel with pre-built `ModelInferRequest` messages (kserve's
  grpc_predict_v2 protobufs).

Modes:
    closed      --concurrency C requests in flight back to back (one connection each for HTTP)
                for --duration s after --warmup s: throughput and latency.
    open        sends scheduled on the clock at --rate R a second for --duration s after --warmup s,
                over a pool of --connections connections (HTTP) or one multiplexed channel (gRPC).
                Latency is measured from the scheduled send time, so a request that waited for a free
                connection, or for a late generator, counts its wait (no coordinated omission).
                Requests still unanswered --drain s after the last send count as failed.
    sequential  one connection, one request at a time: --warmup-calls untimed calls per bodies file,
                then --calls timed calls per file, the files taking turns call by call.

    python bench/loadgen.py --target 127.0.0.1:8080 --path /v2/models/chicago_taxi/infer \\
        --bodies v2-b1.bin --mode open --rate 500 --duration 10

Prints one JSON object: counts by status, latency percentiles (ms), achieved rate, and the CPU
used (in cores) by this process, by the --watch-pid processes (the servers) and by the whole machine over the
measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import struct
import sys
import time
from pathlib import Path

perf_counter = time.perf_counter
FAILED = "failed"  # a connection error, or no answer before the run was cut off


def read_bodies(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    bodies, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        bodies.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    if not bodies:
        raise SystemExit(f"{path}: no request bodies")
    return bodies


def write_bodies(path: Path, bodies: list[bytes]) -> None:
    """The writer of the bodies format (used by bench/serving.py)."""
    Path(path).write_bytes(b"".join(struct.pack(">I", len(body)) + body for body in bodies))


# --- measurement ---------------------------------------------------------------------------


class Recorder:
    """Latencies and outcomes of the requests inside the measured window."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # seconds
        self.lags: list[float] = []  # open loop: actual send - scheduled send, seconds
        self.outcomes: collections.Counter[str] = collections.Counter()

    def summary(self, window_s: float, late_s: float | None = None) -> dict:
        ok = sum(n for status, n in self.outcomes.items() if status in ("OK", "200"))
        server_errors = sum(n for status, n in self.outcomes.items()
                            if status.isdigit() and int(status) >= 500 or status in GRPC_SERVER_ERRORS)
        answered = sum(n for status, n in self.outcomes.items() if status != FAILED)
        result = {
            "window_s": window_s, "requests": sum(self.outcomes.values()), "answered": answered, "ok": ok,
            "not_ok": answered - ok, "server_errors": server_errors, "failed": self.outcomes[FAILED],
            "status": dict(sorted(self.outcomes.items())), "rps": answered / window_s,
            "latency_ms": distribution(self.latencies),
        }
        if late_s is not None:
            result["send_lag_ms"] = distribution(self.lags)
            result["late"] = sum(1 for lag in self.lags if lag > late_s)
        return result


GRPC_SERVER_ERRORS = {"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS", "UNIMPLEMENTED", "DEADLINE_EXCEEDED"}


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, as numpy's default."""
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(seconds: list[float]) -> dict:
    ordered = sorted(s * 1000 for s in seconds)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "mean": sum(ordered) / len(ordered), "p50": percentile(ordered, 50),
            "p90": percentile(ordered, 90), "p99": percentile(ordered, 99), "p99.9": percentile(ordered, 99.9),
            "max": ordered[-1]}


class CpuMeter:
    """CPU time of this process, of the watched processes (all their threads) and of the whole machine."""

    def __init__(self, watch_pids: list[int]) -> None:
        self.watch_pids = watch_pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> tuple[float, float, float | None, float | None]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return perf_counter(), usage.ru_utime + usage.ru_stime, self._process(), self._machine()

    def _process(self) -> float | None:
        if not self.watch_pids:
            return None
        total = 0
        for pid in self.watch_pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        return total / self.tick

    def _machine(self) -> float | None:
        try:
            cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in cpu]
        idle = values[3] + values[4]  # idle + iowait
        return (sum(values[:8]) - idle) / self.tick  # user..steal, without guest (already in user)

    @staticmethod
    def cores(start: tuple, end: tuple) -> dict:
        elapsed = end[0] - start[0]

        def used(i: int) -> float | None:
            return None if start[i] is None or end[i] is None else (end[i] - start[i]) / elapsed

        return {"loadgen": used(1), "server": used(2), "machine": used(3), "machine_cores": os.cpu_count()}


# --- HTTP/1.1 over asyncio streams ---------------------------------------------------------


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**22)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, data: bytes) -> str:
        """Sends one pre-encoded request and reads the whole response; returns the status code as text."""
        if self.writer is None:
            await self.open()
        writer, reader = self.writer, self.reader
        writer.write(data)
        if writer.transport.get_write_buffer_size() > 2**16:
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12].decode()
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            start = at + 17
            await reader.readexactly(int(lower[start:lower.index(b"\r\n", start)]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            await read_chunked(reader)
        elif not (status.startswith("1") or status in ("204", "304")):
            await reader.read()  # no length: the body runs to the end of the connection
            self.close()
        if b"\r\nconnection: close" in lower:
            self.close()
        return status


async def read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


HTTP_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


def http_requests(host: str, path: str, bodies: list[bytes]) -> list[bytes]:
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]


# --- gRPC ----------------------------------------------------------------------------------


class GrpcCaller:
    def __init__(self, target: str, bodies: list[bytes]) -> None:
        import grpc

        argv, sys.argv = sys.argv, sys.argv[:1]  # importing kserve parses the command line as its server's
        try:
            from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
            from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
        finally:
            sys.argv = argv
        self.grpc = grpc
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 2**26),
                                                                  ("grpc.max_send_message_length", 2**26)])
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.requests = [pb.ModelInferRequest.FromString(body) for body in bodies]

    async def call(self, request: object) -> str:
        try:
            await self.stub.ModelInfer(request, timeout=30)
            return "OK"
        except self.grpc.aio.AioRpcError as error:
            return error.code().name


# --- modes ---------------------------------------------------------------------------------


async def closed_loop(args: argparse.Namespace, bodies: list[bytes], meter: CpuMeter) -> dict:
    recorder = Recorder()
    t0 = t1 = 0.0  # the measured window, set once the connections are ready
    marks: dict[str, tuple] = {}

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, t0 - perf_counter()))
        marks["start"] = meter.sample()
        await asyncio.sleep(max(0.0, t1 - perf_counter()))
        marks["end"] = meter.sample()

    if args.protocol == "http":
        host, port = args.target.rsplit(":", 1)
        requests = http_requests(host, args.path, bodies)

        async def worker(k: int) -> None:
            connection = HttpConnection(host, int(port))
            i, n = k, len(requests)
            try:
                while True:
                    sent = perf_counter()
                    if sent >= t1:
                        return
                    try:
                        status = await connection.request(requests[i % n])
                    except HTTP_ERRORS:
                        connection.close()
                        status = FAILED
                        await asyncio.sleep(0.01)  # a server that is down must not turn this into a busy loop
                    done = perf_counter()
                    if t0 <= done < t1:
                        recorder.outcomes[status] += 1
                        if status != FAILED:
                            recorder.latencies.append(done - sent)
                    i += args.concurrency
            finally:
                connection.close()
    else:
        caller = GrpcCaller(args.target, bodies)
        await caller.channel.channel_ready()

        async def worker(k: int) -> None:
            i, n = k, len(caller.requests)
            while True:
                sent = perf_counter()
                if sent >= t1:
                    return
                status = await caller.call(caller.requests[i % n])
                done = perf_counter()
                if t0 <= done < t1:
                    recorder.outcomes[status] += 1
                    recorder.latencies.append(done - sent)
                i += args.concurrency

    t0 = perf_counter() + args.warmup
    t1 = t0 + args.duration
    await asyncio.gather(mark_window(), *(worker(k) for k in range(args.concurrency)))
    if args.protocol == "grpc":
        await caller.channel.close()
    return {**recorder.summary(args.duration), "cpu_cores": CpuMeter.cores(marks["start"], marks["end"])}


async def open_loop(args: argparse.Namespace, bodies: list[bytes], meter: CpuMeter) -> dict:
    recorder = Recorder()
    interval = 1.0 / args.rate
    warmup_sends = round(args.warmup * args.rate)
    total_sends = warmup_sends + round(args.duration * args.rate)

    def record(scheduled_index: int, scheduled: float, sent: float, status: str) -> None:
        if scheduled_index >= warmup_sends:
            recorder.outcomes[status] += 1
            recorder.lags.append(sent - scheduled)
            if status != FAILED:
                recorder.latencies.append(perf_counter() - scheduled)

    if args.protocol == "http":
        host, port = args.target.rsplit(":", 1)
        requests = http_requests(host, args.path, bodies)
        connections = [HttpConnection(host, int(port)) for _ in range(args.connections)]
        await asyncio.gather(*(c.open() for c in connections))
        queue: asyncio.Queue = asyncio.Queue()
        in_flight: set[int] = set()

        async def worker(connection: HttpConnection) -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                index, scheduled = item
                sent = perf_counter()
                in_flight.add(index)
                try:
                    status = await connection.request(requests[index % len(requests)])
                except HTTP_ERRORS:
                    connection.close()
                    status = FAILED
                in_flight.discard(index)
                record(index, scheduled, sent, status)

        def send(index: int, scheduled: float) -> None:
            queue.put_nowait((index, scheduled))

        tasks = [asyncio.create_task(worker(c)) for c in connections]
    else:
        caller = GrpcCaller(args.target, bodies)
        await caller.channel.channel_ready()
        in_flight = set()
        tasks = []

        async def one(index: int, scheduled: float) -> None:
            in_flight.add(index)
            sent = perf_counter()
            status = await caller.call(caller.requests[index % len(caller.requests)])
            in_flight.discard(index)
            record(index, scheduled, sent, status)

        def send(index: int, scheduled: float) -> None:
            tasks.append(asyncio.create_task(one(index, scheduled)))

    start = perf_counter() + 0.05
    for index in range(total_sends):
        scheduled = start + index * interval
        if index == warmup_sends:
            window_start = meter.sample()
        delay = scheduled - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send(index, scheduled)
    window_end = meter.sample()
    # Let what was sent finish; whatever has not within --drain s is a failure.
    if args.protocol == "http":
        for _ in tasks:
            queue.put_nowait(None)
    _, pending = await asyncio.wait(tasks, timeout=args.drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    unanswered = [i for i in in_flight if i >= warmup_sends]
    if args.protocol == "http":
        while not queue.empty():
            item = queue.get_nowait()
            if item is not None and item[0] >= warmup_sends:
                unanswered.append(item[0])
        for connection in connections:
            connection.close()
    else:
        await caller.channel.close()
    recorder.outcomes[FAILED] += len(unanswered)
    result = recorder.summary(args.duration, late_s=args.late_ms / 1000)
    result["rate"] = args.rate
    result["scheduled"] = total_sends - warmup_sends
    result["unanswered"] = len(unanswered)
    result["cpu_cores"] = CpuMeter.cores(window_start, window_end)
    return result


async def sequential(args: argparse.Namespace, labelled: dict[str, list[bytes]], meter: CpuMeter) -> dict:
    host, port = args.target.rsplit(":", 1)
    requests = {label: http_requests(host, args.path, bodies) for label, bodies in labelled.items()}
    connection = HttpConnection(host, int(port))
    recorders = {label: Recorder() for label in requests}
    for encoded in requests.values():
        for i in range(args.warmup_calls):
            await connection.request(encoded[i % len(encoded)])
    start = meter.sample()
    for i in range(args.calls):
        for label, encoded in requests.items():
            sent = perf_counter()
            try:
                status = await connection.request(encoded[i % len(encoded)])
            except HTTP_ERRORS:
                connection.close()
                status = FAILED
            done = perf_counter()
            recorders[label].outcomes[status] += 1
            if status != FAILED:
                recorders[label].latencies.append(done - sent)
    end = meter.sample()
    connection.close()
    elapsed = end[0] - start[0]
    return {"labels": {label: r.summary(elapsed) for label, r in recorders.items()},
            "cpu_cores": CpuMeter.cores(start, end)}


def new_event_loop(protocol: str) -> tuple[asyncio.AbstractEventLoop, str]:
    """uvloop for raw HTTP (less CPU per request); gRPC's aio integration gets the standard loop."""
    if protocol == "http":
        try:
            import uvloop

            return uvloop.new_event_loop(), f"uvloop {uvloop.__version__}"
        except ImportError:
            pass
    return asyncio.new_event_loop(), "asyncio"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="HOST:PORT of the HTTP or gRPC server")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--path", default="/", help="HTTP request path (POST)")
    parser.add_argument("--bodies", action="append", required=True, metavar="[LABEL=]FILE",
                        help="pre-encoded request bodies; sequential mode takes several, labelled")
    parser.add_argument("--mode", choices=["closed", "open", "sequential"], default="closed")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (closed, open)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (closed, open)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: requests in flight")
    parser.add_argument("--rate", type=float, default=500.0, help="open loop: requests a second")
    parser.add_argument("--connections", type=int, default=32, help="open loop, HTTP: keep-alive connections")
    parser.add_argument("--late-ms", type=float, default=2.0,
                        help="open loop: a send that starts more than this after its schedule is late")
    parser.add_argument("--drain", type=float, default=5.0, help="open loop: seconds to wait for the last answers")
    parser.add_argument("--calls", type=int, default=200, help="sequential: timed calls per bodies file")
    parser.add_argument("--warmup-calls", type=int, default=5, help="sequential: untimed calls per bodies file")
    parser.add_argument("--watch-pid", type=int, action="append", default=[],
                        help="report the CPU of this process (a server; repeat for several, summed)")
    args = parser.parse_args(argv)
    if args.mode == "sequential" and args.protocol != "http":
        parser.error("sequential mode is HTTP only")
    if args.mode != "sequential" and len(args.bodies) != 1:
        parser.error(f"{args.mode} mode takes one --bodies file")
    if args.concurrency < 1 or args.connections < 1 or args.rate <= 0 or args.duration <= 0 or args.calls < 1:
        parser.error("--concurrency, --connections, --rate, --duration and --calls must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    labelled = dict(spec.split("=", 1) if "=" in spec else (spec, spec) for spec in args.bodies)
    bodies = {label: read_bodies(Path(path)) for label, path in labelled.items()}
    meter = CpuMeter(args.watch_pid)
    loop, loop_name = new_event_loop(args.protocol)
    try:
        if args.mode == "closed":
            result = loop.run_until_complete(closed_loop(args, next(iter(bodies.values())), meter))
        elif args.mode == "open":
            result = loop.run_until_complete(open_loop(args, next(iter(bodies.values())), meter))
        else:
            result = loop.run_until_complete(sequential(args, bodies, meter))
    finally:
        loop.close()
    result.update(mode=args.mode, protocol=args.protocol, loop=loop_name)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

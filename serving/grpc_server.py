"""KServe's gRPC server, listening on a port of its own (see serving/ports.py for why)."""

from __future__ import annotations

from concurrent import futures
from typing import Any

from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from slipway.serving.ports import GRPC_FLAG, port_error


class ExclusiveGRPCServer(GRPCServer):
    """KServe's gRPC server (the same servicer, interceptors and message limits), listening without
    SO_REUSEPORT: a busy port is a `PortError`, not a silently shared one."""

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self._data_plane, self._model_repository_extension), self._server)
        try:
            self._server.add_insecure_port(f"[::]:{self._port}")
        except RuntimeError:  # grpcio's "Failed to bind to address": the reason is only in its own log line
            raise port_error(GRPC_FLAG, self._port) from None
        await self._server.start()
        await self._server.wait_for_termination()


def serve_grpc_exclusively(server: Any, grpc_port: int) -> None:
    """Gives a KServe `ModelServer` made with `enable_grpc=False` an `ExclusiveGRPCServer` on `grpc_port`, started
    and stopped with it: `start` runs every coroutine in `servers`, and `stop` (SIGTERM) stops `_grpc_server`."""
    import kserve.model_server

    grpc_server = ExclusiveGRPCServer(grpc_port, server.dataplane, server.model_repository_extension,
                                      kwargs=vars(kserve.model_server.args), grace_period=server.grace_period)
    server._grpc_server = grpc_server
    server.servers.append(grpc_server.start(server.max_threads))

"""Servers own their ports: a port that another process listens on is refused, never shared.

grpcio listens with SO_REUSEPORT unless told otherwise (its channel option `grpc.so_reuseport`
defaults to 1), and KServe's `GRPCServer` passes no such option: a second `slipway serve` on a busy
`--grpc-port` started without error, and the kernel split the connections between two servers that
may hold two different models. `ExclusiveGRPCServer` (serving/grpc_server.py) is KServe's gRPC server
listening with `grpc.so_reuseport` = 0, so its bind fails on a busy port; uvicorn (the REST port) never
shares one.

Those binds are the guarantee, but they fail deep in the server's start, after the model has loaded,
with a traceback (uvicorn's bind error ended in exit status 3). `check_ports` binds each port once
first, before anything is loaded: a busy port, or one port given for both, is one line naming the
flag and the port; `run_model_server` checks again once the model has loaded. A port taken in the
instant between that check and the servers' binds still fails the start (`PortError` from the gRPC
bind, uvicorn's error for the REST one), and is still not shared. This module imports nothing
heavy: ports are checked before torch or KServe load.
"""

from __future__ import annotations

import errno
import socket

HTTP_FLAG = "--http-port"
GRPC_FLAG = "--grpc-port"


class PortError(ValueError):
    """A server's port cannot be had: in use, given twice, or not allowed; the message names the flag and port."""


def check_distinct(http_port: int, grpc_port: int) -> None:
    if http_port == grpc_port:
        raise PortError(f"{HTTP_FLAG} and {GRPC_FLAG} are both {http_port}: REST and gRPC each need a port of "
                        "their own")


def check_ports(http_port: int, grpc_port: int) -> None:
    """Refuses ports that the servers could not listen on, before they start: binds each as they will."""
    check_distinct(http_port, grpc_port)
    for flag, port in ((HTTP_FLAG, http_port), (GRPC_FLAG, grpc_port)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As uvicorn binds: SO_REUSEADDR lets a port that a stopped server left in TIME_WAIT be reused, and
            # still refuses one that a process listens on (with or without SO_REUSEPORT).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as error:
                raise port_error(flag, port, error) from None


def port_error(flag: str, port: int, error: OSError | None = None) -> PortError:
    if error is None or error.errno == errno.EADDRINUSE:
        return PortError(f"{flag} {port} is already in use (another process listens on it): stop that process or "
                         "choose another port")
    return PortError(f"{flag} {port} cannot be used: {error.strerror or error}")

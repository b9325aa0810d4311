"""Is a port free to listen on? Checked before gradio loads, so a taken port fails in one line at once."""

from __future__ import annotations

import errno
import socket

from stream_fer.errors import StreamFerError


def check_port_free(host: str, port: int) -> None:
    """A one-line StreamFerError when host:port cannot be listened on (in use, or not an address here)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StreamFerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind(address)
            s.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StreamFerError(f"port {port} on {host} is already in use; choose another with --port") from None
            raise StreamFerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

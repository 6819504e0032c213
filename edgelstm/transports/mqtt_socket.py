"""Socket tuning for paho: no Nagle delay, and reads served from one large recv().

paho reads every packet in two or three recv() calls (type byte, length bytes, body). Each is
a system call that drops and retakes the interpreter lock, so at a few thousand messages per
second the network thread and the inference thread hand the lock back and forth several times
per reading. BufferedSocket takes whatever the kernel holds in one recv() and serves paho's
small reads from it; its pending() tells paho's loop (as for TLS sockets) that bytes are
waiting, so select() is not consulted while they are.
"""

from __future__ import annotations

import socket
import ssl

import paho.mqtt.client as mqtt

CHUNK = 65_536


def no_nagle(client, userdata, sock) -> None:
    """paho leaves Nagle's algorithm on: a small PUBLISH or PUBACK then waits for the previous
    segment's ACK (delayed up to 40 ms) whenever one is outstanding, which dominates latency."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):            # not a TCP socket (e.g. a websocket wrapper)
        pass


class BufferedSocket:
    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(n, CHUNK))     # raises BlockingIOError when nothing waits
            if len(data) <= n:                        # b"" (closed) included
                return data
            self._buf, self._pos = data, 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def __getattr__(self, name):                      # send, fileno, setblocking, close, ...
        return getattr(self._sock, name)


class Client(mqtt.Client):
    """paho's client over a BufferedSocket (plain TCP only: TLS sockets buffer on their own)."""

    def _create_socket(self):
        sock = super()._create_socket()
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            return BufferedSocket(sock)
        return sock

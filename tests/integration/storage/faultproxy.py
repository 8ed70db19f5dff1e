"""A loopback TCP proxy that breaks chosen HTTP requests on their way to a real server.

Real faults rather than mocks: the client sees exactly what a flaky network gives it (a reset
in the middle of a request body, a response that never comes, a download cut short), and the
server sees a client that vanished.

The proxy reads just enough HTTP to find where each request starts and ends (request line,
headers, ``Content-Length``); a ``policy`` looks at each request and names a fault or None.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EveryFifthWrite", "Fault", "FaultProxy", "Request"]

Fault = Literal["cut_request", "drop_response", "cut_response"]


@dataclass(frozen=True)
class Request:
    """The head of one proxied HTTP request."""

    method: str
    target: str  # path and query
    content_length: int


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``, breaking the requests ``policy`` picks.

    Faults:

    * ``cut_request``: forward the head and a random share of the body, then reset both sides.
    * ``drop_response``: forward the whole request (the server acts on it), then reset the
      connection as the response starts: the client never learns the outcome.
    * ``cut_response``: forward the request, then a random share of the response, then reset.
    """

    def __init__(
        self,
        upstream_port: int,
        policy: Callable[[Request], Fault | None],
        *,
        seed: int = 1,
        response_cut_bytes: tuple[int, int] = (0, 8 * 1024 * 1024),
    ) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._policy = policy
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.response_cut_bytes = response_cut_bytes  # where cut_response cuts: uniform in [lo, hi]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        """The proxy's URL, to use in place of the server's."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Start accepting connections."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting connections (open ones end when either side closes)."""
        self._stopped.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def random_share(self, total: int, low: int = 0) -> int:
        """A random cut point in ``[low, total]`` (seeded, shared across connections)."""
        with self._rng_lock:
            return self._rng.randint(low, total)

    def _count(self, counter: Counter[str], key: str) -> None:
        with self._stats_lock:
            counter[key] += 1

    def _accept_loop(self) -> None:
        # A timeout, so stop() is noticed: closing a socket does not wake a thread in accept().
        self._listener.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            _Connection(self, client).start()


class _Connection:
    """One client connection and its upstream twin, pumped by two threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self._proxy = proxy
        self._client = client
        self._upstream = socket.create_connection(proxy._upstream)
        self._lock = threading.Lock()
        self._closed = False
        # Set by the request pump before the last bytes of a request go out; read by the
        # response pump: "drop" (reset at the first response byte) or a byte budget to forward.
        self._response_fault: Literal["drop"] | int | None = None

    def start(self) -> None:
        threading.Thread(target=self._pump_requests, daemon=True).start()
        threading.Thread(target=self._pump_responses, daemon=True).start()

    def _reset(self) -> None:
        """Close both sides with RST, the way a dead network or a killed peer looks."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self._client, self._upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # shutdown() first: close() alone does not end a connection while the other pump
            # thread is blocked in recv() on it, and the client would wait for its read timeout.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _pump_requests(self) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = self._client.recv(1 << 16)
                    if not data:
                        self._reset()
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                head += b"\r\n\r\n"
                request, chunked = _parse_head(head)
                if chunked:  # not something botocore sends here; pass it through untouched
                    self._upstream.sendall(head + buffer)
                    self._pipe_raw()
                    return
                fault = self._proxy._policy(request)
                self._proxy._count(self._proxy.requests, f"{request.method}")
                if fault is not None:
                    self._proxy._count(self._proxy.faults, fault)
                buffer = self._forward(head, request, fault, buffer)
                if buffer is None:
                    return
        except OSError:
            self._reset()

    def _forward(self, head: bytes, request: Request, fault: Fault | None, buffer: bytes) -> bytes | None:
        """Forward one request (head + body), applying ``fault``; return the bytes after it."""
        length = request.content_length
        cut_at = self._proxy.random_share(length) if fault == "cut_request" else None
        if length == 0:
            self._arm(fault)
            self._upstream.sendall(head)
            if cut_at is not None:
                self._reset()
                return None
            return buffer
        self._upstream.sendall(head)
        sent = 0
        while sent < length:
            if not buffer:
                buffer = self._client.recv(1 << 16)
                if not buffer:
                    self._reset()
                    return None
            take, buffer = buffer[: length - sent], buffer[length - sent :]
            if cut_at is not None and sent + len(take) >= cut_at:
                self._upstream.sendall(take[: cut_at - sent])
                self._reset()
                return None
            if sent + len(take) == length:
                self._arm(fault)  # before the last byte: the response cannot start earlier
            self._upstream.sendall(take)
            sent += len(take)
        return buffer

    def _arm(self, fault: Fault | None) -> None:
        if fault == "drop_response":
            self._response_fault = "drop"
        elif fault == "cut_response":
            low, high = self._proxy.response_cut_bytes
            self._response_fault = self._proxy.random_share(high, low)

    def _pump_responses(self) -> None:
        try:
            while True:
                data = self._upstream.recv(1 << 16)
                if not data:
                    self._reset()
                    return
                fault = self._response_fault
                if fault == "drop":
                    self._reset()
                    return
                if isinstance(fault, int):
                    if fault <= len(data):
                        self._client.sendall(data[:fault])
                        self._reset()
                        return
                    self._response_fault = fault - len(data)
                self._client.sendall(data)
        except OSError:
            self._reset()

    def _pipe_raw(self) -> None:
        while data := self._client.recv(1 << 16):
            self._upstream.sendall(data)
        self._reset()


def _parse_head(head: bytes) -> tuple[Request, bool]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    return Request(method, target, int(headers.get("content-length", "0") or 0)), chunked


class EveryFifthWrite:
    """Break exactly one PUT in five (parts and single puts), alternating the kind of fault."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Fault | None:
        if request.method != "PUT":
            return None
        with self._lock:
            n = next(self._counter)
        if n % 5:
            return None
        return "cut_request" if n % 10 else "drop_response"

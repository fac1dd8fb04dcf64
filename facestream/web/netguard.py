"""Connections, not requests: so one slow or hostile client cannot starve the others.

- At most ``max_per_client`` open connections per client address; one more is answered
  ``503`` and closed at once. (aiohttp has no such limit; it is enforced here, around its
  protocol, by the site that listens.)
- Unfinished headers and idle keep-alive connections are closed after ``keepalive_timeout_s``
  (aiohttp's keep-alive timer, which it arms from the moment a connection opens).
- A request body that does not arrive within ``request_timeout_s`` (20 s) is answered 408
  (the ``body_deadline`` middleware in ``web/http.py``); streams and websockets drop a client
  that stops reading (their own write timeouts).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any, Final, cast

from aiohttp import web

log = logging.getLogger(__name__)

class ConnectionLimiter:
    """Open connections per client address."""

    def __init__(self, max_per_client: int) -> None:
        self.max_per_client = max_per_client
        self.open: Counter[str] = Counter()
        self.refused = 0

    def admit(self, client: str) -> bool:
        if self.open[client] >= self.max_per_client:
            self.refused += 1
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


_REFUSAL: Final = json.dumps(
    {"error": "too many open connections from your address; close some and retry"}).encode()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted only within the client's quota."""

    def __init__(self, inner: asyncio.Protocol, limiter: ConnectionLimiter) -> None:
        self._inner = inner
        self._limiter = limiter
        self._client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._limiter.admit(client):
            transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                            b"application/json\r\nConnection: close\r\nContent-Length: "
                            + str(len(_REFUSAL)).encode() + b"\r\n\r\n" + _REFUSAL)
            transport.close()
            return
        self._client = client
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client is None:
            return
        self._limiter.release(self._client)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._client is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._client is not None else None

    def pause_writing(self) -> None:
        if self._client is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass the per-client limit first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 limiter: ConnectionLimiter, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.limiter = limiter

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        limiter = self.limiter
        self._server = await loop.create_server(
            lambda: _Guarded(server(), limiter), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

"""Websocket fan-out: every client gets what changed, at its own pace, in bounded memory.

Each client has a bounded queue drained by its own writer task (Home Assistant's websocket
API does the same). A client that falls behind first loses box-position refreshes (they are
superseded by the next one anyway); one that fills its queue has stopped reading and is
disconnected rather than allowed to grow memory. On shutdown every client's queue is flushed
(briefly) before it is closed with GOING_AWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from aiohttp import WSCloseCode, web

from .events import Camera, GalleryChange, Output
from .metrics import Metrics
from .presence import Snapshot, VisitEvent

log = logging.getLogger(__name__)

#: Messages a client may have pending before it is considered gone.
MAX_PENDING_MESSAGES: Final = 256
#: Above this many pending messages, box refreshes are skipped for that client.
HIGH_WATER: Final = 64
SEND_TIMEOUT_S: Final = 10.0
FLUSH_TIMEOUT_S: Final = 1.0


class Subscriber:
    def __init__(self, ws: web.WebSocketResponse,
                 transport: asyncio.BaseTransport | None = None) -> None:
        self.ws = ws
        self.transport = transport
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_PENDING_MESSAGES)
        self.writer: asyncio.Task[None] | None = None

    async def write_forever(self) -> None:
        while True:
            message = await self.queue.get()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                # cancellation that ends this task, which then waits on its queue forever.
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.ws.send_json(message)
            except ConnectionResetError:
                return
            except TimeoutError:
                # It stopped reading: a close handshake would wait behind the unread
                # messages, so the connection is dropped at once.
                if self.transport is not None:
                    self.transport.abort()
                return
            finally:
                self.queue.task_done()


class Broadcaster(Output):
    """One camera's websocket clients: turns its presence changes and the gallery's into
    messages for each of them."""

    def __init__(self, metrics: Metrics, camera: str = "camera") -> None:
        self._metrics = metrics
        self.camera = camera
        self._subscribers: set[Subscriber] = set()

    # -- what changed (Events calls these for this camera only) ----------------------------

    def snapshot_changed(self, camera: Camera, new: Snapshot, old: Snapshot,
                         boxes_due: bool) -> None:
        self._metrics.faces_in_view.labels(self.camera).set(len(new.faces))
        old_hash = old.primary.hash if old.primary else None
        if (new.primary.hash if new.primary else None) != old_hash:
            self.broadcast({"type": "hash", **new.to_json(), "previous": old_hash,
                            "camera": self.camera})
        faces = {"type": "faces", "faces": [f.to_json() for f in new.faces],
                 "camera": self.camera}
        if new.who() != old.who():
            self.broadcast(faces)
        elif boxes_due:
            self.broadcast(faces, droppable=True)

    def visit_event(self, camera: Camera, event: VisitEvent) -> None:
        self.broadcast(event.to_json())

    def gallery_changed(self, change: GalleryChange) -> None:
        self.broadcast({"type": "gallery", "event": change.event, "face": change.face(),
                        "hashes": list(change.hashes)})

    # -- delivery ------------------------------------------------------------------------

    def broadcast(self, message: dict[str, Any], droppable: bool = False) -> None:
        for sub in list(self._subscribers):
            if droppable and sub.queue.qsize() >= HIGH_WATER:
                continue  # behind: the next refresh supersedes this one
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                log.info("websocket client fell %d messages behind; disconnecting it",
                         MAX_PENDING_MESSAGES)
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        if sub.writer is not None:
            sub.writer.cancel()
        asyncio.ensure_future(sub.ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                           message=b"too slow"))

    async def serve(self, ws: web.WebSocketResponse, snapshot: Callable[[], Snapshot],
                    transport: asyncio.BaseTransport | None = None) -> None:
        """Run one client: a snapshot first, then pushed changes until it leaves."""
        sub = Subscriber(ws, transport)
        sub.queue.put_nowait({"type": "snapshot", **snapshot().to_json(),
                              "camera": self.camera})
        self._subscribers.add(sub)
        self._metrics.ws_clients.inc()
        sub.writer = asyncio.create_task(sub.write_forever())
        try:
            async for _ in ws:  # clients have nothing to say; reading notices them leaving
                pass
        finally:
            self._subscribers.discard(sub)
            self._metrics.ws_clients.dec()
            sub.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sub.writer

    async def close_all(self) -> None:
        """Shutdown: let each client receive what is queued (briefly), then GOING_AWAY."""
        subs = list(self._subscribers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await asyncio.gather(*(s.queue.join() for s in subs))
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

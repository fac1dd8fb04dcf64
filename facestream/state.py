"""Who is in view right now: the one owner of live recognition state, and its websocket fan-out.

The pipeline publishes each processed frame's faces here; handlers only read ``snapshot()``.
Websocket clients each get a bounded queue drained by their own writer task; a client whose
queue fills up (it stopped reading) is disconnected instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import WSCloseCode, web

from .metrics import Metrics
from .tracking import FaceView

log = logging.getLogger(__name__)

#: Messages a websocket client may have pending before it is considered gone.
MAX_PENDING_MESSAGES: Final = 256
SEND_TIMEOUT_S: Final = 10.0
#: Arrivals and departures kept for GET /events.
MAX_EVENTS: Final = 200


class Subscriber:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
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
            except (TimeoutError, ConnectionResetError):
                await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too slow")
                return


class LiveState:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.faces: tuple[FaceView, ...] = ()
        self.updated_at: float | None = None  # wall-clock time of the frame behind `faces`
        self.frame_position: int = -1
        self.signal = False
        self._subscribers: set[Subscriber] = set()
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)

    # -- reading -------------------------------------------------------------------------

    @property
    def primary(self) -> FaceView | None:
        return self.faces[0] if self.faces else None

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /hash`` document."""
        p = self.primary
        return {
            "hash": p.hash if p else None,
            "name": p.name if p else None,
            "known": p.known if p else False,
            "similarity": p.to_json()["similarity"] if p else None,
            "faces": [f.to_json() for f in self.faces],
            "signal": self.signal,
            "updated_at": self.updated_at,
            "frame_position": self.frame_position,
        }

    # -- writing (pipeline only) ---------------------------------------------------------

    def publish(
        self,
        faces: Sequence[FaceView],
        captured_at: float | None = None,
        position: int = -1,
        signal: bool = True,
    ) -> None:
        """Replace the faces in view; notify websocket clients of what changed."""
        before, before_primary = self.faces, self.primary
        self.faces = tuple(faces)
        self.signal = signal
        if captured_at is not None:
            self.updated_at = time.time() - (time.monotonic() - captured_at)
            self.frame_position = position
        self._metrics.faces_in_view.set(len(self.faces))
        self._log_arrivals_and_departures(before, self.faces)
        old_hash = before_primary.hash if before_primary else None
        if (self.primary.hash if self.primary else None) != old_hash:
            self.broadcast({"type": "hash", **self.snapshot(), "previous": old_hash})
        if _who(before) != _who(self.faces):
            self.broadcast({"type": "faces", "faces": [f.to_json() for f in self.faces]})

    def gallery_changed(self, event: str, identity: dict[str, Any] | None) -> None:
        self.broadcast({"type": "gallery", "event": event, "face": identity})

    def _log_arrivals_and_departures(
        self, before: Sequence[FaceView], after: Sequence[FaceView]
    ) -> None:
        old = {f.hash: f for f in before}
        new = {f.hash: f for f in after}
        now = time.time()
        changes = [("left", f) for h, f in old.items() if h not in new]
        changes += [("arrived", f) for h, f in new.items() if h not in old]
        for kind, face in changes:
            event = {"type": "event", "event": kind, "hash": face.hash, "name": face.name,
                     "known": face.known, "at": now}
            self._events.append(event)
            self.broadcast(event)

    def recent_events(self) -> list[dict[str, Any]]:
        """Arrivals and departures, newest first (the last MAX_EVENTS)."""
        return list(reversed(self._events))

    # -- websocket fan-out ---------------------------------------------------------------

    def broadcast(self, message: dict[str, Any]) -> None:
        for sub in list(self._subscribers):
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

    async def serve(self, ws: web.WebSocketResponse) -> None:
        """Run one websocket client: snapshot first, then pushed changes until it leaves."""
        sub = Subscriber(ws)
        sub.queue.put_nowait({"type": "snapshot", **self.snapshot()})
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
        for sub in list(self._subscribers):
            with contextlib.suppress(Exception):
                await sub.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def _who(faces: Sequence[FaceView]) -> list[tuple[str, str | None, bool]]:
    return sorted((f.hash, f.name, f.known) for f in faces)

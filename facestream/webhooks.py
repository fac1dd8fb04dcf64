"""Webhooks: arrivals, departures, who is in view and gallery changes POSTed to receivers.

Each ``[[webhooks]]`` receiver gets its own sender: a bounded queue and one task that POSTs
the events in order. Presence and the gallery only hand events over (``submit`` never
waits), so a slow or dead receiver can neither stall the pipeline nor delay another receiver.

Every request is JSON, signed the way Stripe and GitHub sign theirs::

    X-Facestream-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

``t`` is the time of the attempt, so a receiver can refuse old (replayed) requests; the body
carries a ``delivery`` id that stays the same across retries, so it can also refuse
duplicates. Network errors, timeouts, 408, 429 and 5xx are retried with doubling backoff
(``Retry-After`` is honoured, capped); any other answer outside 2xx is final. When a queue is
full the oldest waiting event is dropped and counted. Every event ends counted exactly once:
delivered, failed (refused, or out of attempts) or dropped (queue full, or still pending at
shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from . import __version__
from .config import WebhookConfig
from .gallery_types import Identity
from .metrics import Metrics
from .presence import Snapshot, VisitEvent
from .privacy import redact_receiver

if TYPE_CHECKING:
    from .cameras import Camera

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Facestream-Signature"
EVENT_HEADER: Final = "X-Facestream-Event"
DELIVERY_HEADER: Final = "X-Facestream-Delivery"
#: Retry backoff: the first wait, doubling up to the last (each with +-20 % jitter, so that
#: receivers coming back are not hit by every sender at the same instant). A Retry-After
#: longer than the last is cut to it. Module constants, so tests can make them short.
RETRY_FIRST_S: Final = 0.5
RETRY_MAX_S: Final = 60.0
#: On shutdown, queued events get this long to go out before the senders are stopped.
FLUSH_TIMEOUT_S: Final = 1.0
#: Statuses worth retrying besides 5xx: the receiver timed out, or asks us to slow down.
_RETRIED: Final = frozenset({408, 429})
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Facestream-Signature value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body,
                   hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def backoff(attempt: int) -> float:
    """How long to wait after failed attempt number ``attempt`` (1, 2, ...)."""
    delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(attempt - 1, 30))
    return min(RETRY_MAX_S, delay * random.uniform(0.8, 1.2))


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) in seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException, timeout_s: float) -> str:
    """An attempt's failure in words that name no URL (aiohttp's messages may hold one)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        return f"cannot connect: {os_error.strerror or type(os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the receiver closed the connection without answering"
    return f"request failed: {type(exc).__name__}"


@dataclass
class _Delivery:
    event: str
    id: str
    body: bytes
    #: Set when the delivery was dropped while being attempted (its queue overflowed).
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class Sender:
    """One receiver: its queue, its counters, and the task that delivers in order."""

    def __init__(self, config: WebhookConfig, metrics: Metrics) -> None:
        self.config = config
        self.url = redact_receiver(config.url)
        self._metrics = metrics
        self._queue: deque[_Delivery] = deque()
        self._current: _Delivery | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failing = False
        self._dropping = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_status: int | None = None
        self.last_error: str | None = None
        self.last_success_at: float | None = None

    @property
    def pending(self) -> int:
        """Events waiting, and the one being attempted: at most ``queue_size``."""
        return len(self._queue) + (self._current is not None)

    def status(self) -> dict[str, Any]:
        """For /healthz: never the secret, and the URL redacted."""
        return {"url": self.url, "events": list(self.config.events),
                "delivered": self.delivered, "failed": self.failed, "dropped": self.dropped,
                "pending": self.pending, "last_status": self.last_status,
                "last_error": self.last_error, "last_success_at": self.last_success_at}

    # -- the producers' side (never waits) -----------------------------------------------

    def submit(self, event: str, body: bytes, delivery: str) -> None:
        if self.pending >= self.config.queue_size:
            # Drop the oldest waiting event; with none waiting (queue_size 1), the one
            # being retried.
            if self._queue:
                self._queue.popleft()
            elif self._current is not None:
                self._current.dropped.set()
                self._current = None
            self._count("dropped")
            if not self._dropping:  # once, until a delivery succeeds again
                log.warning("webhook %s: %d events pending, dropping the oldest",
                            self.url, self.config.queue_size)
            self._dropping = True
        self._queue.append(_Delivery(event, delivery, body))
        self._idle.clear()
        self._wake.set()

    def _count(self, result: str, n: int = 1) -> None:
        setattr(self, result, getattr(self, result) + n)
        self._metrics.webhook_deliveries.labels(result).inc(n)

    # -- delivery ------------------------------------------------------------------------

    async def idle(self) -> None:
        """Returns once nothing is pending."""
        await self._idle.wait()

    def abandon(self) -> int:
        """Shutdown: whatever is still pending is dropped (and counted); how many."""
        left = self.pending
        self._queue.clear()
        self._current = None
        if left:
            self._count("dropped", left)
        return left

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._current = self._queue.popleft()
            try:
                await self._deliver(session, item)
            except Exception:  # a bug: lose this event, not the receiver
                log.exception("webhook %s: delivering %s failed", self.url, item.id)
                self._count("failed")
            # (Cancelled, it stays current: shutdown counts it among the undelivered.)
            if self._current is item:
                self._current = None

    async def _deliver(self, session: aiohttp.ClientSession, item: _Delivery) -> None:
        for attempt in range(1, self.config.max_attempts + 1):
            outcome, wait = await self._attempt(session, item)
            if item.dropped.is_set():
                return  # counted as dropped when its queue overflowed
            if outcome == "delivered":
                self._count("delivered")
                return
            if outcome == "refused" or attempt == self.config.max_attempts:
                break
            delay = min(RETRY_MAX_S, wait) if wait is not None else backoff(attempt)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await item.dropped.wait()
            if item.dropped.is_set():
                return
        self._count("failed")
        log.warning("webhook %s: %s event %s not delivered after %d attempt(s): %s",
                    self.url, item.event, item.id, attempt, self.last_error)

    async def _attempt(self, session: aiohttp.ClientSession, item: _Delivery
                       ) -> tuple[str, float | None]:
        """One POST: ("delivered" | "retry" | "refused", seconds the receiver asked us to
        wait before the next attempt, if it did)."""
        sent_at = int(time.time())
        headers = {"Content-Type": "application/json", EVENT_HEADER: item.event,
                   DELIVERY_HEADER: item.id, SIGNATURE_HEADER: sign(self.config.secret,
                                                                    sent_at, item.body)}
        timeout = self.config.timeout_s
        try:
            async with session.post(self.config.url, data=item.body, headers=headers,
                                    allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status = resp.status
                wait = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # all retried
            self._failed(None, _describe(exc, timeout))
            return "retry", None
        if 200 <= status < 300:
            self.last_status, self.last_error = status, None
            self.last_success_at = time.time()
            if self._failing:
                log.info("webhook %s: delivering again", self.url)
            self._failing = self._dropping = False
            return "delivered", None
        retried = status in _RETRIED or status >= 500
        self._failed(status, f"answered {status}" + (
            "" if retried or not 300 <= status < 400 else " (redirects are not followed)"))
        return ("retry", wait) if retried else ("refused", None)

    def _failed(self, status: int | None, error: str) -> None:
        self.last_status, self.last_error = status, error
        if not self._failing:
            log.warning("webhook %s: %s", self.url, error)
        else:
            log.debug("webhook %s: %s", self.url, error)
        self._failing = True


class Webhooks:
    """Turns visits, changes of who is in view and gallery changes into signed POSTs, one
    sender per configured receiver (see the module). Callbacks run on the event loop."""

    def __init__(self, configs: Iterable[WebhookConfig], metrics: Metrics) -> None:
        self.senders = [Sender(c, metrics) for c in configs]
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def status(self) -> list[dict[str, Any]]:
        return [s.status() for s in self.senders]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": f"facestream/{__version__}"})
        self._tasks = [asyncio.create_task(s.run(self._session), name=f"webhook {s.url}")
                       for s in self.senders]

    async def close(self) -> None:
        """Let queued events go out (briefly), then stop; what is left counts as dropped."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await asyncio.gather(*(s.idle() for s in self.senders))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sender in self.senders:
            if left := sender.abandon():
                log.warning("webhook %s: %d event(s) not delivered before shutdown",
                            sender.url, left)
        if self._session is not None:
            await self._session.close()

    # -- what happened (listeners of Presence and Gallery; they never wait or raise) -----

    def attach(self, camera: Camera) -> None:
        """Send what happens on ``camera``."""
        camera.presence.on_visit(self.visit_event)
        camera.presence.on_snapshot(
            lambda new, old, boxes, name=camera.name: self.snapshot_changed(name, new, old))

    def visit_event(self, event: VisitEvent) -> None:
        v = event.visit
        self._publish(event.kind, event.at, v.camera, {"visit": v.id, "hash": v.person,
                                                       "name": v.name, "known": v.known})

    def snapshot_changed(self, camera: str, new: Snapshot, old: Snapshot) -> None:
        """Like the websocket's "hash" message: only when the primary face changes."""
        old_hash = old.primary.hash if old.primary else None
        if (new.primary.hash if new.primary else None) != old_hash:
            self._publish("hash", time.time(), camera, {**new.to_json(), "previous": old_hash})

    def gallery_changed(self, change: str, identity: Identity | None) -> None:
        self._publish("gallery", time.time(), None, {
            "change": change, "face": identity.to_json() if identity is not None else None})

    def _publish(self, event: str, at: float, camera: str | None,
                 payload: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            for sender in self.senders:
                if event in sender.config.events:
                    delivery = str(uuid.uuid4())
                    body = {"event": event, "delivery": delivery, "at": at,
                            "camera": camera, **payload}
                    sender.submit(event, json.dumps(body, ensure_ascii=False,
                                                    separators=(",", ":")).encode(), delivery)
        except Exception:  # a listener must never break the pipeline or the gallery
            log.exception("webhooks: could not queue a %s event", event)


__all__ = ["Webhooks", "sign"]

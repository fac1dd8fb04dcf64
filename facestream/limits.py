"""Bounded counters of attempts: login guesses and uploads, per caller.

Every table here is keyed by fixed-size digests (never by what a client sent) and holds at
most ``MAX_KEYS`` keys, the least recently used going first, so an anonymous client cannot
grow it beyond a few megabytes whatever names and addresses it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Final

#: Keys each table keeps: a 16-byte digest and a few timestamps each (a few hundred bytes
#: with Python's overhead), so a table stays under about 5 MB.
MAX_KEYS: Final = 10_000


def key(*parts: str) -> bytes:
    """A limiter key: 16 bytes whatever the parts' length (names are never stored)."""
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


class Window:
    """Attempts per key in a sliding window, at most ``limit`` remembered per key and at
    most ``keys`` keys (the least recently used go first): bounded in bytes, not only in
    entries. An attempt is added *before* the slow check it stands for (a reservation), so
    concurrent attempts can never exceed the limit; a success gives its reservation back."""

    def __init__(self, limit: int, window: float, keys: int = MAX_KEYS) -> None:
        self.limit, self.window, self.keys = limit, window, keys
        self._times: OrderedDict[bytes, tuple[float, ...]] = OrderedDict()

    def _recent(self, key: bytes, now: float) -> tuple[float, ...]:
        times = tuple(t for t in self._times.get(key, ()) if now - t < self.window)
        if times:
            self._times[key] = times
        else:
            self._times.pop(key, None)
        return times

    def count(self, key: bytes, now: float) -> int:
        return len(self._recent(key, now))

    def wait(self, key: bytes, now: float) -> float:
        """Seconds until one more attempt is allowed (0: now)."""
        times = self._recent(key, now)
        return times[-self.limit] + self.window - now if len(times) >= self.limit else 0.0

    def add(self, key: bytes, now: float) -> None:
        self._times[key] = (*self._recent(key, now), now)[-self.limit:]
        self._times.move_to_end(key)
        while len(self._times) > self.keys:
            self._times.popitem(last=False)

    def discard(self, key: bytes, when: float) -> None:
        """Give back the attempt added at ``when`` (it succeeded)."""
        times = list(self._times.get(key, ()))
        if when in times:
            times.remove(when)
            if times:
                self._times[key] = tuple(times)
            else:
                del self._times[key]

    def clear(self, key: bytes) -> None:
        self._times.pop(key, None)


class Refused(Exception):
    """Over a limit: ``status`` (429: this caller's; 503: everybody's) and the seconds to
    wait (for Retry-After)."""

    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UploadGate:
    """Who may send an upload now. A viewer (a user or a token) has at most ``AT_ONCE``
    uploads in flight and ``per_minute`` in any minute (429); an admin (an enrollment
    script; everybody, with accounts off) only shares the bound of all: at most ``queue``
    uploads wait for the upload workers at once (503). Asked before the body is read, so a
    refused upload costs nothing."""

    AT_ONCE: Final = 2

    def __init__(self, per_minute: int, queue: int) -> None:
        self.queue = queue
        self._rate = Window(per_minute, 60.0)
        self._in_flight: dict[bytes, int] = {}
        self._total = 0

    @contextlib.asynccontextmanager
    async def slot(self, caller: str, limited: bool) -> AsyncIterator[None]:
        who = key("upload", caller)
        now = asyncio.get_running_loop().time()
        if limited and self._in_flight.get(who, 0) >= self.AT_ONCE:
            raise Refused(429, f"you have {self.AT_ONCE} uploads in progress; send the next "
                               "when one is answered", 1.0)
        if limited and (wait := self._rate.wait(who, now)) > 0:
            raise Refused(429, f"more than {self._rate.limit} uploads in a minute; slow down",
                          wait)
        if self._total >= self.queue:
            raise Refused(503, "the upload workers are busy; retry shortly", 2.0)
        if limited:
            self._rate.add(who, now)
        self._in_flight[who] = self._in_flight.get(who, 0) + 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            self._in_flight[who] -= 1
            if not self._in_flight[who]:
                del self._in_flight[who]

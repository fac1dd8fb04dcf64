"""Small helpers several test modules share: waiting for a condition, reading an MJPEG part
and a metric, unit vectors, and what a gallery's ``on_change`` reported."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from facestream.gallery_types import Identity
from facestream.identity import normalize
from facestream.storage import Gallery

Client = TestClient[Any, Any]


async def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """The first truthy value of ``predicate()`` (awaited if it is awaitable); fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def read_part(resp: ClientResponse) -> bytes:
    """One JPEG from a multipart/x-mixed-replace body."""
    length = None
    while True:
        line = (await resp.content.readline()).strip()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif not line and length is not None:
            break
    data = await resp.content.readexactly(length)
    await resp.content.readexactly(2)
    return data


async def metric(client: Client, name: str) -> float:
    """An unlabelled metric's value from the app's /metrics."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text format as {name with labels: value}."""
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))}


def unit(seed: int, dim: int = 128) -> np.ndarray:
    """A random unit vector, the same for the same seed: an embedding for storage tests."""
    return normalize(np.random.default_rng(seed).normal(size=dim))


class GalleryChanges:
    """What a gallery's ``on_change`` reported, with when; ``wait`` for one."""

    def __init__(self, gallery: Gallery) -> None:
        self.seen: list[tuple[str, str | None, float]] = []
        self._changed = asyncio.Event()
        gallery.on_change(self._on_change)

    def _on_change(self, event: str, ident: Identity | None) -> None:
        self.seen.append((event, ident.hash if ident else None, time.perf_counter()))
        self._changed.set()

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(e, h) for e, h, _ in self.seen]

    async def wait(self, event: str, face: str | None, timeout: float = 1.0) -> float:
        """When ``event`` on ``face`` was seen (perf_counter); fails after ``timeout``."""
        async def seen() -> float:
            while True:
                for e, h, at in self.seen:
                    if (e, h) == (event, face):
                        return at
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(seen(), timeout)


#: What a request without credentials is answered, with 401, when accounts are on.
UNAUTHORIZED = {"error": "log in first (POST /login), or send Authorization: Bearer <token> "
                         "(python -m facestream tokens create)"}

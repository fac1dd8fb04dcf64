"""Small helpers several test modules share: waiting for a condition, reading an MJPEG part
and a metric, unit vectors, what a gallery's ``on_change`` reported, a gallery of version 4
(before its tables took the names the code uses), the 401 a stranger is told, and a
stand-in ONNX face model."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, Final

import numpy as np
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from facestream.gallery_types import Person
from facestream.matching import normalize
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

    def _on_change(self, event: str, person: Person | None, hashes: tuple[str, ...]) -> None:
        self.seen.append((event, person.hash if person else None, time.perf_counter()))
        self._changed.set()

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(e, h) for e, h, _ in self.seen]

    async def wait(self, event: str, person: str | None, timeout: float = 1.0) -> float:
        """When ``event`` on ``person`` was seen (perf_counter); fails after ``timeout``."""
        async def seen() -> float:
            while True:
                for e, h, at in self.seen:
                    if (e, h) == (event, person):
                        return at
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(seen(), timeout)


#: History's tables at version 1 (before visits kept their decisions).
HISTORY_V1: Final = (
    """CREATE TABLE visits (
    id TEXT PRIMARY KEY, person TEXT NOT NULL, known INTEGER NOT NULL, name TEXT,
    camera TEXT NOT NULL, arrived_at REAL NOT NULL, left_at REAL, quality REAL)""",
    "CREATE INDEX visits_time ON visits (arrived_at, id)",
    "CREATE INDEX visits_person ON visits (person, arrived_at)",
    """CREATE TABLE visit_images (
    visit TEXT PRIMARY KEY REFERENCES visits (id) ON DELETE CASCADE, crop BLOB,
    context BLOB, geometry TEXT, snapshot BLOB)""",
    """CREATE TABLE unknowns (
    hash TEXT PRIMARY KEY, model TEXT NOT NULL, dim INTEGER NOT NULL,
    embedding BLOB NOT NULL, count INTEGER NOT NULL, created_at REAL NOT NULL)""",
)
#: A gallery as facestream wrote it up to schema version 4 (SQLite's dialect, ``?``
#: parameters): the people were ``identities``, a sample's person its ``identity``; one
#: person (hash ``h1``, Ada, with an email HMAC), one sample, one visit; history's tables
#: of version 1.
GALLERY_V4: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE identities (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, email_hmac TEXT, created_at REAL NOT NULL,
    updated_at REAL NOT NULL)""",
    "CREATE INDEX identities_email ON identities (email_hmac)",
    """CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL REFERENCES identities (hash) ON DELETE CASCADE,
    model TEXT NOT NULL, dim INTEGER NOT NULL, embedding BLOB NOT NULL, crop BLOB,
    context BLOB, geometry TEXT, source TEXT NOT NULL, created_at REAL NOT NULL)""",
    "CREATE INDEX samples_identity ON samples (identity)",
    *HISTORY_V1,
    "INSERT INTO meta VALUES ('schema_version', '4')",
    "INSERT INTO meta VALUES ('schema_version:history', '1')",
    "INSERT INTO identities VALUES ('h1', 'Ada', 'ada-hmac', 1.0, 1.0)",
    ("INSERT INTO samples (identity, model, dim, embedding, crop, source, created_at) "
     "VALUES ('h1', 'Dlib', 128, ?, ?, 'upload', 1.0)"),
    ("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at, quality) "
     "VALUES ('v1', 'h1', 1, 'Ada', 'door', 10.0, 12.5, 0.9)"),
)
#: The embedding of GALLERY_V4's one sample, and its crop (the parameters of its INSERT).
V4_EMBEDDING: Final = normalize(np.random.default_rng(4).normal(size=128))
V4_SAMPLE: Final = (V4_EMBEDDING.astype("<f4").tobytes(), b"crop")


def write_gallery_v4(path: Path) -> None:
    """A version 4 gallery file at ``path`` (see GALLERY_V4)."""
    with closing(sqlite3.connect(path)) as db, db:
        for statement in GALLERY_V4:
            db.execute(statement, V4_SAMPLE if "?" in statement else ())


#: What a request without credentials is answered, with 401, when accounts are on.
UNAUTHORIZED = {"error": "log in first (POST /login), or send Authorization: Bearer <token> "
                         "(python -m facestream tokens create)"}


def build_standin_onnx(path: Path, size: int = 160, dim: int = 128) -> None:
    """A stand-in ONNX face model at ``path``: a fixed random projection of average-pooled
    pixels, taking ``size`` px faces to ``dim`` numbers, for wiring a model the machine
    has no weights of (not a recogniser)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pooled = 3 * (size // 16) ** 2
    proj = np.random.default_rng(0).normal(size=(pooled, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[16, 16],
                         strides=[16, 16]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", size, size, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", dim])],
        [numpy_helper.from_array(proj, "proj")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))

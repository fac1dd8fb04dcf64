"""The process pools that run detection and embedding off the event loop.

Each worker process loads the model once, in the pool's initializer, and keeps it in a
process-global (child-process state only; the parent never touches it). Worker functions take
and return plain picklable data. The parent bounds the work it hands out: live frames go
through lanes (one frame per lane in flight), uploads through a small semaphore, so nothing
ever queues without limit.

A server keeps two sets of processes: the cameras' (``workers``) and the uploads'
(``upload_workers``, at a lower priority). An upload, however large, never waits in front of
a camera's frame, and a flood of them only gets the CPU the cameras leave.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from . import images, recognition, weights
from .config import Config
from .images import ImageError
from .recognition import Face, FrameResult, RegionImage, StoredFace, TrackHint

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Worker processes run at a lower priority so that camera reading and stream encoding,
#: which viewers feel at once, always get the CPU first.
WORKER_NICENESS: Final = 5
#: The upload workers run lower still: live recognition gets the CPU before them (Linux's
#: scheduler gives a nice-10 process a third of a nice-5 one's share when both want it, and
#: a tenth of a nice-0 one's), yet uploads are not starved by every other busy program.
UPLOAD_NICENESS: Final = 10
#: Uploads waiting for a worker beyond this are answered 503 rather than queued.
MAX_PENDING_IMAGES: Final = 8

_recognizer: recognition.Recognizer | None = None  # per worker process
_max_pixels: int = 0


def _exit_with_parent() -> None:
    """End this worker when the server process dies, even by SIGKILL: an orphaned worker
    would otherwise hold its model in memory forever."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set in a spawned worker
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="facestream-parent-watch", daemon=True).start()


def _init_worker(settings: PoolSettings, niceness: int, threads: int) -> None:
    global _recognizer, _max_pixels
    _exit_with_parent()
    recognition.configure_environment()
    try:
        os.nice(niceness)
    except OSError:  # pragma: no cover - not permitted on some systems
        pass
    import cv2

    cv2.setNumThreads(1)  # one process per core already; threads inside would oversubscribe
    _max_pixels = settings.max_image_pixels
    _recognizer = recognition.Recognizer(
        settings.model, settings.detect_max_side, settings.detect_upsample, settings.detector,
        settings.min_face_score, threads)


def _ready() -> int:
    assert _recognizer is not None
    return os.getpid()


def _analyze_frame(
    frame: NDArray[np.uint8], tracked: Sequence[TrackHint], embed_new: bool,
    regions: Sequence[RegionImage], ratio: float, min_face_px: int,
) -> FrameResult:
    assert _recognizer is not None
    return _recognizer.analyze_frame(frame, tracked, embed_new, regions, ratio, min_face_px)


def _analyze_image(data: bytes) -> list[Face]:
    assert _recognizer is not None
    image = images.decode_image(data, _max_pixels)
    return _recognizer.analyze_image(image)


def _embed_stored(faces: Sequence[StoredFace]) -> list[NDArray[np.float32] | None]:
    assert _recognizer is not None
    return _recognizer.embed_stored(faces)


@dataclass(frozen=True)
class PoolSettings:
    model: str
    workers: int
    detect_max_side: int
    detect_upsample: int
    max_image_pixels: int
    detector: str = "yunet"
    min_face_score: float = 0.7
    #: Processes of their own for uploads (the server's); 0: uploads use ``workers`` (the
    #: commands, which have no camera).
    upload_workers: int = 0
    #: Uploads waiting for a worker, beyond which they are refused (PoolBusy).
    max_pending_images: int = MAX_PENDING_IMAGES

    @classmethod
    def from_config(cls, config: Config, model: str | None = None, server: bool = False
                    ) -> PoolSettings:
        """For the server (``server``: uploads get processes of their own) or a command."""
        r = config.recognition
        return cls(model or r.model, r.workers, r.detect_max_side, r.detect_upsample,
                   config.server.max_image_pixels, r.detector, r.min_face_score,
                   r.upload_workers if server else 0,
                   config.server.upload_queue if server else MAX_PENDING_IMAGES)


class _Processes:
    """A ProcessPoolExecutor of ``count`` workers at ``niceness``, replaced at once when one
    of its processes dies (a crash, an OOM kill)."""

    def __init__(self, settings: PoolSettings, count: int, niceness: int, threads: int,
                 what: str) -> None:
        self.settings, self.count, self.what = settings, count, what
        self._initargs = (settings, niceness, threads)
        self._executor: ProcessPoolExecutor | None = None
        self._restart_lock = asyncio.Lock()
        self.pids: list[int] = []
        self.restarts = 0
        #: True while the processes are being replaced after one died.
        self.restarting = False

    async def start(self) -> None:
        """Start the processes and wait until each has loaded the model."""
        # spawn, not fork: the parent has threads (camera, sqlite) that fork would copy.
        executor = ProcessPoolExecutor(max_workers=self.count,
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=self._initargs)
        loop = asyncio.get_running_loop()
        try:
            pids = await asyncio.gather(
                *(loop.run_in_executor(executor, _ready) for _ in range(self.count)))
        except BrokenProcessPool as exc:
            executor.shutdown(wait=True, cancel_futures=True)
            raise RuntimeError(f"the recognition workers failed to load model "
                               f"{self.settings.model}; see the log above") from exc
        self._executor = executor
        self.pids = sorted(set(pids))

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        if self._restart_lock.locked():  # a restart is under way: wait for it
            async with self._restart_lock:
                pass
        executor = self._executor
        if executor is None:
            raise WorkerCrashed("the recognition workers are not running")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn, *args)
        except BrokenProcessPool:
            await self._restart(executor)
            raise WorkerCrashed("a recognition worker died and was restarted; retry") from None

    async def _restart(self, broken: ProcessPoolExecutor) -> None:
        """Replace processes one of which died with fresh ones, once."""
        async with self._restart_lock:
            if self._executor is not broken:
                return  # another caller already restarted them
            log.error("a recognition worker (%s) died; restarting them", self.what)
            self._executor = None
            self.restarting = True
            try:
                await asyncio.to_thread(broken.shutdown, wait=True, cancel_futures=True)
                await self.start()
            finally:
                self.restarting = False
            self.restarts += 1

    def adopt(self) -> None:
        """A lock for the running event loop (asyncio primitives belong to one loop)."""
        if self._restart_lock.locked():
            raise RuntimeError("the workers are being restarted under another event loop")
        self._restart_lock = asyncio.Lock()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class WorkerPool:
    """Owns the worker processes. Start with ``await start()``, stop with ``close()``."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        cores = os.cpu_count() or 1
        # One worker process per core already: threads inside each would oversubscribe.
        self._frames = _Processes(settings, settings.workers, WORKER_NICENESS,
                                  max(1, cores // settings.workers), "cameras")
        self._uploads = _Processes(settings, settings.upload_workers, UPLOAD_NICENESS, 1,
                                   "uploads") if settings.upload_workers else None
        images = self._uploads or self._frames
        # At most one upload per worker inside the executor; the rest wait here, bounded.
        self._images = asyncio.Semaphore(images.count)
        self._pending_images = 0

    @property
    def size(self) -> int:
        """Workers for the cameras' frames."""
        return self.settings.workers

    @property
    def pids(self) -> list[int]:
        """The cameras' workers."""
        return self._frames.pids

    @property
    def restarting(self) -> bool:
        """True while the cameras' workers are being replaced: nobody is recognised."""
        return self._frames.restarting

    @property
    def restarts(self) -> int:
        return self._frames.restarts + (self._uploads.restarts if self._uploads else 0)

    async def start(self) -> None:
        """Start the workers and wait until each has loaded the model.

        The weights are provisioned and checked here first, in this process, so a missing
        file is a WeightsError naming it, not a worker dying in its initializer."""
        s = self.settings
        weights.provision()
        weights.check(s.model, s.detector)
        parts = [p for p in (self._frames, self._uploads) if p is not None]
        started = await asyncio.gather(*(p.start() for p in parts), return_exceptions=True)
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            self.close()
            raise failed[0]

    async def analyze_frame(
        self,
        frame: NDArray[np.uint8],
        tracked: Sequence[TrackHint] = (),
        embed_new: bool = True,
        regions: Sequence[RegionImage] = (),
        ratio: float = 1.0,
        min_face_px: int = 0,
    ) -> FrameResult:
        """Analyse a camera frame (see Recognizer.analyze_frame): ``frame`` is the stream
        copy; ``regions`` parts of the full-resolution frame, ``ratio`` times larger."""
        return await self._frames.submit(_analyze_frame, frame, list(tracked), embed_new,
                                         list(regions), ratio, min_face_px)

    async def analyze_image(self, data: bytes) -> list[Face]:
        """Decode and analyse an uploaded image (on the upload workers, if there are any).

        Raises ImageError (4xx), PoolBusy or WorkerCrashed (503)."""
        if self._pending_images >= self.settings.max_pending_images:
            raise PoolBusy("too many images are being processed; retry shortly")
        self._pending_images += 1
        try:
            async with self._images:
                return await (self._uploads or self._frames).submit(_analyze_image, data)
        finally:
            self._pending_images -= 1

    async def embed_stored(
        self, faces: Sequence[StoredFace]
    ) -> list[NDArray[np.float32] | None]:
        """Embed stored gallery samples with this pool's model (re-embedding)."""
        return await (self._uploads or self._frames).submit(_embed_stored, list(faces))

    def adopt(self) -> None:
        """Take this pool into the running event loop, from an application that ran before
        on another (the tests' shared pool; an asyncio lock or semaphore belongs to the first
        loop that waits on it). Nothing may be in flight."""
        if self._pending_images:
            raise RuntimeError("images are still being processed under another event loop")
        for part in (self._frames, self._uploads):
            if part is not None:
                part.adopt()
        self._images = asyncio.Semaphore((self._uploads or self._frames).count)

    def close(self) -> None:
        for part in (self._frames, self._uploads):
            if part is not None:
                part.close()


class WorkerCrashed(Exception):
    """A worker process died; the pool has been restarted. The edge answers 503."""


class PoolBusy(Exception):
    """Every upload slot is taken; the edge answers 503."""


__all__ = [
    "Face",
    "FrameResult",
    "ImageError",
    "PoolBusy",
    "PoolSettings",
    "WorkerCrashed",
    "WorkerPool"
]

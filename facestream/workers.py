"""The process pool that runs detection and embedding off the event loop.

Each worker process loads the model once, in the pool's initializer, and keeps it in a
process-global (child-process state only; the parent never touches it). Worker functions take
and return plain picklable data. The parent bounds the work it hands out: live frames go
through lanes (one frame per lane in flight), uploads through a small semaphore, so nothing
ever queues without limit.
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

from . import recognition, weights
from .config import Config
from .recognition import Face, FrameResult, ImageError, StoredFace, TrackHint

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Worker processes run at a lower priority so that camera reading and stream encoding,
#: which viewers feel at once, always get the CPU first.
WORKER_NICENESS: Final = 5
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


def _init_worker(settings: PoolSettings) -> None:
    global _recognizer, _max_pixels
    _exit_with_parent()
    recognition.configure_environment()
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # pragma: no cover - not permitted on some systems
        pass
    import cv2

    cv2.setNumThreads(1)  # one process per core already; threads inside would oversubscribe
    _max_pixels = settings.max_image_pixels
    # One worker process per core already: threads inside each would oversubscribe.
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    _recognizer = recognition.Recognizer(
        settings.model, settings.detect_max_side, settings.detect_upsample, settings.detector,
        settings.min_face_score, threads)


def _ready() -> int:
    assert _recognizer is not None
    return os.getpid()


def _analyze_frame(
    frame: NDArray[np.uint8], tracked: Sequence[TrackHint], embed_new: bool
) -> FrameResult:
    assert _recognizer is not None
    return _recognizer.analyze_frame(frame, tracked, embed_new)


def _analyze_image(data: bytes) -> list[Face]:
    assert _recognizer is not None
    image = recognition.decode_image(data, _max_pixels)
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

    @classmethod
    def from_config(cls, config: Config, model: str | None = None) -> PoolSettings:
        r = config.recognition
        return cls(model or r.model, r.workers, r.detect_max_side, r.detect_upsample,
                   config.server.max_image_pixels, r.detector, r.min_face_score)


class WorkerPool:
    """Owns the ProcessPoolExecutor. Start with ``await start()``, stop with ``close()``."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._executor: ProcessPoolExecutor | None = None
        # At most one upload per worker inside the executor; the rest wait here, bounded.
        self._images = asyncio.Semaphore(settings.workers)
        self._pending_images = 0
        self._restart_lock = asyncio.Lock()
        self.pids: list[int] = []
        self.restarts = 0
        #: True while the pool is being replaced after a worker died: nobody is recognised.
        self.restarting = False

    @property
    def size(self) -> int:
        return self.settings.workers

    async def start(self) -> None:
        """Start the workers and wait until each has loaded the model.

        The weights are provisioned and checked here first, in this process, so a missing
        file is a WeightsError naming it, not a worker dying in its initializer."""
        s = self.settings
        weights.provision()
        weights.check(s.model, s.detector)
        # spawn, not fork: the parent has threads (camera, sqlite) that fork would copy mid-state.
        ctx = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            max_workers=s.workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(s,),
        )
        loop = asyncio.get_running_loop()
        try:
            pids = await asyncio.gather(
                *(loop.run_in_executor(executor, _ready) for _ in range(s.workers))
            )
        except BrokenProcessPool as exc:
            executor.shutdown(wait=True, cancel_futures=True)
            raise RuntimeError(
                f"the recognition workers failed to load model {s.model}; see the log above"
            ) from exc
        self._executor = executor
        self.pids = sorted(set(pids))

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
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
        """Replace a pool whose worker died (crash, OOM kill) with a fresh one, once."""
        async with self._restart_lock:
            if self._executor is not broken:
                return  # another caller already restarted it
            log.error("a recognition worker died; restarting the worker pool")
            self._executor = None
            self.restarting = True
            try:
                await asyncio.to_thread(broken.shutdown, wait=True, cancel_futures=True)
                await self.start()
            finally:
                self.restarting = False
            self.restarts += 1

    async def analyze_frame(
        self,
        frame: NDArray[np.uint8],
        tracked: Sequence[TrackHint] = (),
        embed_new: bool = True,
    ) -> FrameResult:
        return await self._submit(_analyze_frame, frame, list(tracked), embed_new)

    async def analyze_image(self, data: bytes) -> list[Face]:
        """Decode and analyse an uploaded image.

        Raises ImageError (4xx), PoolBusy or WorkerCrashed (503)."""
        if self._pending_images >= MAX_PENDING_IMAGES:
            raise PoolBusy("too many images are being processed; retry shortly")
        self._pending_images += 1
        try:
            async with self._images:
                return await self._submit(_analyze_image, data)
        finally:
            self._pending_images -= 1

    async def embed_stored(
        self, faces: Sequence[StoredFace]
    ) -> list[NDArray[np.float32] | None]:
        """Embed stored gallery samples with this pool's model (re-embedding)."""
        return await self._submit(_embed_stored, list(faces))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


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

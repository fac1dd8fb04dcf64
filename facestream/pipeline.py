"""Live recognition: carries frames from the hub, through the worker pool, to Presence.

``workers`` lanes each take the newest frame no other lane has taken, ask Presence which of
its faces to embed, send it to the pool and hand the result back to Presence: at most one frame
per worker in flight, and frames that arrive meanwhile are skipped (latest frame wins). Every
decision about who is in view is Presence's; this module only moves frames and keeps count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Final

from .hub import FrameHub, Packet
from .metrics import Metrics
from .presence import Presence
from .recognition import FrameResult, RegionImage, TrackHint
from .regions import Sweep, tile_regions, track_regions
from .workers import WorkerCrashed, WorkerPool

log = logging.getLogger(__name__)

#: How often Presence is ticked (departures while the camera is lost).
TICK_INTERVAL_S: Final = 0.25


class FairShare:
    """The pool's workers, shared fairly between cameras.

    At most ``slots`` frames are in the pool at once (one per worker, so a frame never
    waits in the pool's queue behind others). When a worker frees up it goes to the waiting
    camera that was served least recently: a camera full of faces, whose frames take long,
    gets its turn like the others and cannot starve them.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._busy = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._served: dict[str, int] = {}
        self._turns = 0

    @contextlib.asynccontextmanager
    async def turn(self, camera: str) -> AsyncIterator[None]:
        if self._busy < self.slots and not any(self._waiting.values()):
            self._grant(camera)
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(camera, deque()).append(granted)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # granted, then cancelled before it could be used
                else:
                    with contextlib.suppress(KeyError, ValueError):
                        self._waiting[camera].remove(granted)
                raise
        try:
            yield
        finally:
            self._release()

    def _grant(self, camera: str) -> None:
        self._busy += 1
        self._turns += 1
        self._served[camera] = self._turns

    def _release(self) -> None:
        self._busy -= 1
        ready = {c: q for c, q in self._waiting.items() if any(not f.done() for f in q)}
        if not ready:
            return
        camera = min(ready, key=lambda c: self._served.get(c, 0))
        queue = self._waiting[camera]
        while queue:
            granted = queue.popleft()
            if not granted.done():
                self._grant(camera)
                granted.set_result(None)
                return

    def forget(self, camera: str) -> None:
        """A camera removed: its waiters are gone (their lanes were cancelled)."""
        self._waiting.pop(camera, None)
        self._served.pop(camera, None)


class LivePipeline:
    def __init__(self, hub: FrameHub, pool: WorkerPool, presence: Presence,
                 metrics: Metrics, share: FairShare | None = None, camera: str = "camera",
                 min_face_px: int = 24, sweep_mp_per_s: float = 0.0) -> None:
        self.hub = hub
        self.pool = pool
        self.presence = presence
        self.metrics = metrics
        self.share = share or FairShare(pool.size)
        self.camera = camera
        self.min_face_px = min_face_px
        self.sweep_mp_per_s = sweep_mp_per_s
        self._sweep: Sweep | None = None
        self._taken = 0
        #: Frames analysed by the pool for this camera.
        self.analysed = 0

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._lane(i)) for i in range(self.pool.size)]
        tasks.append(asyncio.create_task(self._tick()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _lane(self, lane: int) -> None:
        while True:
            packet = await self.hub.next(self._taken)
            if packet is None:
                return  # hub closed: shutting down
            if packet.seq <= self._taken:
                continue  # another lane woke first and took it
            if not packet.signal or packet.image is None:
                self._taken = packet.seq
                self.metrics.camera_up.labels(self.camera).set(0)
                self.presence.no_signal(packet.captured_at)
                continue
            async with self.share.turn(self.camera):
                newest = self.hub.latest  # frames that came while waiting for a worker
                if newest is not None and newest.seq > packet.seq and newest.signal and \
                        newest.image is not None:
                    packet = newest
                if packet.seq <= self._taken:
                    continue  # another lane of this camera took it meanwhile
                self._taken = packet.seq
                self.metrics.camera_up.labels(self.camera).set(1)
                plan = self.presence.plan(packet.captured_at)
                regions, ratio = self._regions(packet, plan.tracked)
                t0 = time.perf_counter()
                try:
                    result = await self.pool.analyze_frame(
                        packet.image, plan.tracked, plan.embed_new, regions, ratio,
                        self.min_face_px)
                except asyncio.CancelledError:
                    self.presence.abandon(plan)
                    raise
                except WorkerCrashed:
                    self.presence.abandon(plan)
                    continue  # the pool restarted; carry on with the newest frame
                except Exception:
                    self.presence.abandon(plan)
                    log.exception("recognition lane %d: analysis failed; retrying in 1s", lane)
                    await asyncio.sleep(1.0)
                    continue
            self.metrics.stage_seconds.labels("analyze").observe(time.perf_counter() - t0)
            self._count(packet, result)
            if self.presence.observe(plan, packet.seq, packet.captured_at, packet.frame_position,
                                     packet.image, result):
                self.metrics.results_stale.inc()

    def _regions(self, packet: Packet, tracked: Sequence[TrackHint]
                 ) -> tuple[list[RegionImage], float]:
        """The parts of the full-resolution frame to search besides the stream copy (see
        regions.py), and how many times larger than the stream copy that frame is."""
        assert packet.image is not None
        full = packet.full if packet.full is not None else packet.image
        ratio = full.shape[1] / packet.image.shape[1]
        detect_max = self.pool.settings.detect_max_side
        fast_scale = min(1.0, detect_max / max(packet.image.shape[:2])) / ratio
        if self._sweep is None or self._sweep.fast_scale != fast_scale:
            self._sweep = Sweep(self.sweep_mp_per_s, self.min_face_px, fast_scale)
        sweep = self._sweep
        tiles = sweep.take(full.shape[1], full.shape[0], time.monotonic())
        if sweep.last_s is not None:
            self.metrics.sweep_seconds.labels(self.camera).set(sweep.last_s)
        regions = track_regions(full, ratio, tracked, fast_scale)
        regions += tile_regions(full, tiles, sweep.scale)
        return regions, ratio

    @property
    def sweep(self) -> Sweep | None:
        """The sweep of the full-resolution frame (None before the first frame)."""
        return self._sweep

    def _count(self, packet: Packet, result: FrameResult) -> None:
        self.analysed += 1
        m = self.metrics
        m.frames_processed.inc()
        m.stage_seconds.labels("detect").observe(result.detect_s)
        if result.embedded:
            m.stage_seconds.labels("embed").observe(result.embed_s)
            m.faces_embedded.inc(result.embedded)
        m.stage_seconds.labels("latency").observe(time.monotonic() - packet.captured_at)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            self.presence.tick(time.monotonic())

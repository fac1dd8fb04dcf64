"""Live recognition: newest frame -> worker pool -> tracker -> LiveState.

``workers`` lanes each take the newest frame no other lane has taken, send it to the pool and
apply the result: at most one frame per worker in flight, and frames that arrive meanwhile are
skipped (latest frame wins). Results that come back after a newer frame's result was applied
only contribute their embeddings (see ``Tracker.update``). A timer expires tracks of faces that
left even when no frame is processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from .hub import FrameHub, Packet
from .metrics import Metrics
from .recognition import FrameResult
from .state import LiveState
from .storage import Gallery
from .tracking import Track, Tracker
from .workers import WorkerCrashed, WorkerPool

log = logging.getLogger(__name__)

EXPIRE_INTERVAL_S: Final = 0.05


class LivePipeline:
    def __init__(
        self,
        hub: FrameHub,
        pool: WorkerPool,
        gallery: Gallery,
        state: LiveState,
        tracker: Tracker,
        metrics: Metrics,
    ) -> None:
        self.hub = hub
        self.pool = pool
        self.gallery = gallery
        self.state = state
        self.tracker = tracker
        self.metrics = metrics
        self._taken = 0
        self._applied = 0
        self._new_claimed = False
        gallery.on_change(lambda _event, _ident: self.gallery_changed())

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._lane(i)) for i in range(self.pool.size)]
        tasks.append(asyncio.create_task(self._expire_loop()))
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
            self._taken = packet.seq
            if not packet.signal or packet.image is None:
                self._no_signal(packet)
                continue
            tracked = self.tracker.plan(packet.captured_at)
            # Only one lane at a time embeds faces that are not tracked yet.
            embed_new = not self._new_claimed
            self._new_claimed = self._new_claimed or embed_new
            t0 = time.perf_counter()
            try:
                result = await self.pool.analyze_frame(packet.image, tracked, embed_new)
            except asyncio.CancelledError:
                raise
            except WorkerCrashed:
                continue  # the pool restarted; carry on with the newest frame
            except Exception:
                log.exception("recognition lane %d: analysis failed; retrying in 1s", lane)
                await asyncio.sleep(1.0)
                continue
            finally:
                if embed_new:
                    self._new_claimed = False
            self.metrics.stage_seconds.labels("analyze").observe(time.perf_counter() - t0)
            self._apply(packet, result)

    def _apply(self, packet: Packet, result: FrameResult) -> None:
        m = self.metrics
        m.frames_processed.inc()
        m.stage_seconds.labels("detect").observe(result.detect_s)
        if result.embedded:
            m.stage_seconds.labels("embed").observe(result.embed_s)
            m.faces_embedded.inc(result.embedded)
        stale = packet.seq < self._applied
        if stale:
            m.frames_dropped.inc()
        self._applied = max(self._applied, packet.seq)
        self.tracker.update(result.faces, packet.captured_at, self.gallery.index, stale=stale)
        now = time.monotonic()
        self.tracker.expire(now)
        m.stage_seconds.labels("latency").observe(now - packet.captured_at)
        if stale:  # who is in view may have changed (its embeddings); its frame is old news
            self.state.publish(self.tracker.views(), signal=True)
        else:
            self.state.publish(self.tracker.views(), packet.captured_at, packet.position)

    def _no_signal(self, packet: Packet) -> None:
        self.metrics.camera_up.set(0)
        self.tracker.clear(time.monotonic())
        self.state.publish([], packet.captured_at, -1, signal=False)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL_S)
            latest = self.hub.latest
            if latest is not None and latest.signal:
                self.metrics.camera_up.set(1)
            if self.tracker.expire(time.monotonic()):
                self.state.publish(self.tracker.views(), signal=self.state.signal)

    def gallery_changed(self) -> None:
        self.tracker.rematch(self.gallery.index)
        self.state.publish(self.tracker.views(), signal=self.state.signal)

    def enrollable(self, wanted_hash: str | None = None) -> Track | None:
        return self.tracker.enrollable(wanted_hash)

"""Live recognition: carries frames from the hub, through the worker pool, to Presence.

``workers`` lanes each take the newest frame no other lane has taken, ask Presence which of
its faces to embed, send it to the pool and hand the result back to Presence: at most one frame
per worker in flight, and frames that arrive meanwhile are skipped (latest frame wins). Every
decision about who is in view is Presence's; this module only moves frames and keeps count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from .hub import FrameHub, Packet
from .metrics import Metrics
from .presence import Presence
from .recognition import FrameResult
from .workers import WorkerCrashed, WorkerPool

log = logging.getLogger(__name__)

#: How often Presence is ticked (departures while the camera is lost).
TICK_INTERVAL_S: Final = 0.25


class LivePipeline:
    def __init__(self, hub: FrameHub, pool: WorkerPool, presence: Presence,
                 metrics: Metrics) -> None:
        self.hub = hub
        self.pool = pool
        self.presence = presence
        self.metrics = metrics
        self._taken = 0

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
            self._taken = packet.seq
            if not packet.signal or packet.image is None:
                self.metrics.camera_up.set(0)
                self.presence.no_signal(packet.captured_at)
                continue
            self.metrics.camera_up.set(1)
            plan = self.presence.plan(packet.captured_at)
            t0 = time.perf_counter()
            try:
                result = await self.pool.analyze_frame(packet.image, plan.tracked,
                                                       plan.embed_new)
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

    def _count(self, packet: Packet, result: FrameResult) -> None:
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

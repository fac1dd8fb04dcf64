"""The cameras one server serves, each with its own frames, tracks, presence and viewers.

A ``Camera`` bundles what belongs to one source: the capture threads, its newest-frame hub,
its Presence (who is in view, visits), its websocket fan-out and its recognition lanes.
``Cameras`` owns them all, in order (the first answers the single-camera endpoints
``/streaming``, ``/hash`` and ``/ws``), and adds, removes or restarts cameras while the server
runs (API and config reload) without disturbing the others. Every camera's lanes share the
one worker pool through a ``FairShare``; whatever listens to all cameras (history, MQTT,
webhooks) registers once with ``on_camera`` and is attached to each camera as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from .capture import Capture
from .config import CameraConfig, Config
from .events import GalleryChange, Output
from .fanout import Broadcaster
from .hub import FrameHub, Packet
from .matching import GalleryIndex
from .metrics import Metrics
from .pipeline import FairShare, LivePipeline
from .presence import Presence
from .privacy import redact_source
from .video import VideoStream
from .workers import WorkerPool

log = logging.getLogger(__name__)

#: Frames over which a camera's rate is measured.
FPS_WINDOW: Final = 50


class CameraError(ValueError):
    """A camera that cannot be added or removed (the message says why)."""


class Camera:
    def __init__(self, config: CameraConfig, app_config: Config, metrics: Metrics,
                 gallery: Callable[[], GalleryIndex],
                 unknowns: Callable[[], GalleryIndex | None]) -> None:
        r, p = app_config.recognition, app_config.presence
        self.name = config.name
        self.config = config
        self.metrics = metrics
        self.hub = FrameHub()
        self.presence = Presence(
            config.name, r.threshold(), r.reembed_interval_s, r.track_timeout_s,
            p.depart_after_s, p.unknown_grace_s, gallery=gallery, unknowns=unknowns)
        #: Its websocket viewers (Events tells it what happens on this camera).
        self.broadcaster = Broadcaster(metrics, config.name)
        #: Its H.264 viewers: encoded once, while there is one (video.py).
        self.video = VideoStream(self.hub, app_config.video, config.name, metrics)
        #: MJPEG viewers now; the capture encodes its annotated JPEGs only while there are
        #: some, or always with MQTT on (its snapshots are those JPEGs).
        self.mjpeg_viewers = 0
        self._jpeg_always = bool(app_config.mqtt.url)
        self.capture: Capture | None = None
        self.pipeline: LivePipeline | None = None
        self._task: asyncio.Task[None] | None = None
        self._delivered: deque[float] = deque(maxlen=FPS_WINDOW)

    def start(self, pool: WorkerPool, share: FairShare) -> None:
        """Open the source and start recognising (the live part; an app without a camera
        pipeline, as in tests of the REST API, never calls this)."""
        loop = asyncio.get_running_loop()

        def deliver(packet: Packet) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self._publish, packet)

        self.pipeline = LivePipeline(self.hub, pool, self.presence, self.metrics, share,
                                     self.name, self.config.min_face_px, self.config.sweep_mp_per_s)
        self.capture = Capture(self.config, deliver, self.presence, self.metrics,
                               lambda: self._jpeg_always or self.mjpeg_viewers > 0,
                               self.video.inbox(loop))
        self.capture.start()
        self._task = asyncio.create_task(self.pipeline.run(), name=f"camera {self.name}")

    def _publish(self, packet: Packet) -> None:
        self._delivered.append(time.monotonic())
        self.hub.publish(packet)

    @property
    def fps(self) -> float:
        """Frames per second delivered lately (0 when none for a second)."""
        times = self._delivered
        if len(times) < 2 or time.monotonic() - times[-1] > 1.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)

    def status(self) -> dict[str, Any]:
        """For ``GET /cameras``."""
        capture = self.capture.status() if self.capture else None
        snapshot = self.presence.snapshot
        return {"name": self.name, "source": redact_source(self.config.source),
                "signal": capture["signal"] if capture else False,
                "state": capture["state"] if capture else "not started",
                "reconnects": capture["reconnects"] if capture else 0,
                "resolution": capture["resolution"] if capture else None,
                "fps": round(self.fps, 1), "faces_in_view": len(snapshot.faces),
                "analysed": self.pipeline.analysed if self.pipeline else 0,
                "video_passthrough": self.video.feed.source is not None,
                "keyframe_interval_s": self.video.keyframe_interval_s,
                **self._sweep_status()}

    def _sweep_status(self) -> dict[str, float | None]:
        """How long the full-resolution sweep for small faces takes, and should take."""
        sweep = self.pipeline.sweep if self.pipeline else None
        if sweep is None or not sweep.target_s:
            return {"sweep_s": None, "sweep_planned_s": None}
        return {"sweep_s": _rounded(sweep.last_s), "sweep_planned_s": _rounded(sweep.target_s)}

    async def stop(self) -> None:
        """Stop reading and recognising, end every stream and websocket of this camera."""
        self.hub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.capture is not None:
            await asyncio.to_thread(self.capture.stop)
        await self.broadcaster.close_all()
        await self.video.close()
        for gauge in (self.metrics.camera_up, self.metrics.faces_in_view):
            with contextlib.suppress(KeyError):
                gauge.remove(self.name)


class Cameras(Output):
    """Every camera, in order; the one place that adds and removes them. As an output, it
    has every camera re-decide who is in view when the gallery changes."""

    def __init__(self, config: Config, metrics: Metrics, gallery: Callable[[], GalleryIndex],
                 unknowns: Callable[[], GalleryIndex | None]) -> None:
        self._config = config
        self._metrics = metrics
        self._gallery = gallery
        self._unknowns = unknowns
        self._cameras: dict[str, Camera] = {}
        self._attach: list[Callable[[Camera], None]] = []
        self._detach: list[Callable[[Camera], None]] = []
        self._pool: WorkerPool | None = None
        self.share: FairShare | None = None
        self._lock = asyncio.Lock()
        for camera in config.camera_list:
            self._cameras[camera.name] = self._make(camera)

    def _make(self, config: CameraConfig) -> Camera:
        return Camera(config, self._config, self._metrics, self._gallery, self._unknowns)

    # -- reading ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Camera]:
        return iter(list(self._cameras.values()))

    def __len__(self) -> int:
        return len(self._cameras)

    def __contains__(self, name: object) -> bool:
        return name in self._cameras

    @property
    def first(self) -> Camera:
        """The camera of ``/streaming``, ``/hash`` and ``/ws``. (Only while a reload swaps
        the one camera is there none: CameraError.)"""
        for camera in self._cameras.values():
            return camera
        raise CameraError("no camera (the configuration is being reloaded)")

    def get(self, name: str) -> Camera | None:
        return self._cameras.get(name)

    def people(self) -> list[dict[str, Any]]:
        """Who is in view anywhere: each face once, with the cameras that see it."""
        seen: dict[str, dict[str, Any]] = {}
        for camera in self:
            for face in camera.presence.snapshot.faces:
                entry = seen.setdefault(face.hash, {"hash": face.hash, "name": face.name,
                                                    "known": face.known, "cameras": []})
                entry["cameras"].append(camera.name)
        return sorted(seen.values(), key=lambda e: (not e["known"], e["name"] or "", e["hash"]))

    def recent_events(self) -> list[dict[str, Any]]:
        events = [e for camera in self for e in camera.presence.recent_events()]
        return sorted(events, key=lambda e: e["at"], reverse=True)

    # -- listeners ---------------------------------------------------------------------------

    def gallery_changed(self, change: GalleryChange) -> None:
        for camera in self:
            camera.presence.gallery_changed()

    def on_camera(self, attach: Callable[[Camera], None],
                  detach: Callable[[Camera], None] | None = None) -> None:
        """``attach(camera)`` for every camera now and to come; ``detach`` when one goes."""
        self._attach.append(attach)
        if detach is not None:
            self._detach.append(detach)
        for camera in self:
            attach(camera)

    # -- running -----------------------------------------------------------------------------

    def start(self, pool: WorkerPool) -> None:
        self._pool = pool
        self.share = FairShare(pool.size)
        for camera in self:
            camera.start(pool, self.share)

    async def stop(self) -> None:
        await asyncio.gather(*(camera.stop() for camera in self))

    async def add(self, config: CameraConfig) -> Camera:
        async with self._lock:
            if config.name in self._cameras:
                raise CameraError(f"there is already a camera named {config.name!r}")
            camera = self._make(config)
            self._cameras[config.name] = camera
            for attach in self._attach:
                attach(camera)
            if self._pool is not None and self.share is not None:
                camera.start(self._pool, self.share)
            log.info("camera %s added (%s)", config.name, redact_source(config.source))
            return camera

    async def remove(self, name: str) -> None:
        async with self._lock:
            if name in self._cameras and len(self._cameras) == 1:
                raise CameraError("the last camera cannot be removed (a server serves at "
                                  "least one)")
            await self._remove(name)

    async def _remove(self, name: str) -> None:
        camera = self._cameras.pop(name, None)
        if camera is None:
            raise CameraError(f"no camera named {name!r}")
        await camera.stop()
        if self.share is not None:
            self.share.forget(name)
        for detach in self._detach:
            detach(camera)
        log.info("camera %s removed", name)

    async def reload(self, cameras: tuple[CameraConfig, ...]) -> list[str]:
        """Make the running cameras those of a reloaded config: add the new, remove the gone,
        restart the changed; the others go on untouched. Returns what was done."""
        wanted = {c.name: c for c in cameras}
        done = []
        async with self._lock:
            for camera in list(self):
                if wanted.get(camera.name) != camera.config:
                    await self._remove(camera.name)
                    done.append(f"removed {camera.name}")
        for name, config in wanted.items():
            if name not in self._cameras:
                await self.add(config)
                done.append(f"added {name}")
        # The configured order (the first answers /streaming, /hash and /ws).
        self._cameras = {n: self._cameras[n] for n in wanted if n in self._cameras}
        return done


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

"""What happens on the cameras and in the gallery, and everything that wants to know it.

Every output implements one interface, ``Output``: a camera came or went, who is in view
changed, a visit began or ended, the gallery changed. The outputs are the cameras' live
state (a gallery change re-decides names), the history, MQTT, webhooks, and each camera's
websocket fan-out. ``Events`` is the one place that connects them to the sources, in the
order they were connected, and starts and stops them (Frigate's ``frigate/comms``
Communicator plays this part there). Callbacks run on the event loop and never wait: an
output with work to do (a database write, a network send) queues it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .hub import FrameHub
from .presence import Presence, Snapshot, VisitEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GalleryChange:
    """``event`` ("enrolled", "renamed", "deleted", "merged", "reloaded", ...) about
    ``person``, as they are now (None when the change is about many)."""

    event: str
    person: Any | None = None
    #: Every hash the change is about (a merge: the one merged away, then the one kept).
    hashes: tuple[str, ...] = ()

    def face(self) -> dict[str, Any] | None:
        """The person as the API shows them, if the change is about one."""
        return self.person.to_json() if self.person is not None else None


class Output:
    """Where events go. Every method has a default that does nothing: an output overrides
    what it cares about."""

    async def start(self) -> None:
        """Before the first event (connections, writer tasks)."""

    async def close(self) -> None:
        """After the last event: flush what is queued, then let go."""

    def camera_added(self, camera: Camera) -> None:
        """``camera`` is served (at start, or added while running)."""

    def camera_removed(self, camera: Camera) -> None:
        """``camera`` is no longer served."""

    def snapshot_changed(self, camera: Camera, new: Snapshot, old: Snapshot,
                         boxes_due: bool) -> None:
        """Who is in view on ``camera`` changed (``boxes_due``: only their boxes moved,
        at most every BOX_REFRESH_S)."""

    def visit_event(self, camera: Camera, event: VisitEvent) -> None:
        """Someone arrived on ``camera`` or left it."""

    def gallery_changed(self, change: GalleryChange) -> None:
        """The gallery changed (on this node or on another)."""


class Camera(Protocol):
    """What an output may know of a camera."""

    @property
    def name(self) -> str: ...
    @property
    def hub(self) -> FrameHub: ...
    @property
    def presence(self) -> Presence: ...
    @property
    def broadcaster(self) -> Output:
        """The camera's own output: its websocket viewers."""
        ...


class CameraSource(Protocol):
    """The cameras served (their owner): iterated for those served now."""

    def __iter__(self) -> Iterator[Any]: ...
    def on_camera(self, attach: Callable[[Any], None],
                  detach: Callable[[Any], None] | None = None) -> None: ...


class GallerySource(Protocol):
    def on_change(self, listener: Callable[[str, Any], None]) -> None: ...


class Events:
    """Connects outputs to the cameras, as they come and go, and to the gallery. Events
    about a camera go to every connected output, then to that camera's own broadcaster;
    gallery changes go to every output, then to every camera's broadcaster."""

    def __init__(self, cameras: CameraSource) -> None:
        self._outputs: list[Output] = []
        self._cameras = cameras
        cameras.on_camera(self._camera_added, self._camera_removed)

    def follow(self, gallery: GallerySource) -> None:
        """Pass on ``gallery``'s changes (once it is open)."""
        gallery.on_change(lambda event, person, hashes: self.gallery_changed(
            GalleryChange(event, person, hashes)))

    def connect(self, output: Output) -> None:
        """Send ``output`` every event from now on; it is told of the cameras served
        already first."""
        self._outputs.append(output)
        for camera in self._cameras:
            self._call(output, "camera_added", camera)

    async def start(self, output: Output) -> None:
        """Start ``output``, then connect it."""
        await output.start()
        self.connect(output)

    async def stop(self, output: Output) -> None:
        """Disconnect ``output``, then close it (it flushes what it has queued)."""
        if output in self._outputs:
            self._outputs.remove(output)
        await output.close()

    # -- from the sources -------------------------------------------------------------------

    def gallery_changed(self, change: GalleryChange) -> None:
        self._each("gallery_changed", change)
        for camera in self._cameras:
            self._call(camera.broadcaster, "gallery_changed", change)

    def _camera_added(self, camera: Camera) -> None:
        camera.presence.on_snapshot(
            lambda new, old, boxes: self._about(camera, "snapshot_changed", new, old, boxes))
        camera.presence.on_visit(lambda event: self._about(camera, "visit_event", event))
        self._each("camera_added", camera)

    def _camera_removed(self, camera: Camera) -> None:
        self._each("camera_removed", camera)

    def _about(self, camera: Camera, method: str, *args: Any) -> None:
        self._each(method, camera, *args)
        self._call(camera.broadcaster, method, camera, *args)

    def _each(self, method: str, *args: Any) -> None:
        for output in list(self._outputs):
            self._call(output, method, *args)

    @staticmethod
    def _call(output: Output, method: str, *args: Any) -> None:
        """One output's failure is logged; the others are still told."""
        try:
            getattr(output, method)(*args)
        except Exception:
            log.exception("%s.%s failed", type(output).__name__, method)


__all__ = ["Camera", "Events", "GalleryChange", "Output"]

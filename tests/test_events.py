"""Events: every output hears what happens, in the order connected, told of the cameras served
before it connected; one failing output does not silence the others; and the history, as an
output, ends the visits of a camera that is removed."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from facestream.appkeys import CAMERAS, HISTORY
from facestream.cameras import Camera, Cameras
from facestream.config import Config
from facestream.events import Events, GalleryChange, Output
from facestream.matching import GalleryIndex
from facestream.metrics import Metrics
from facestream.presence import VisitEvent, VisitRecord

from .conftest import TALKING_HEAD


class Heard(Output):
    """Writes down what it is told."""

    def __init__(self, name: str, log: list[tuple[str, str, str]]) -> None:
        self.name, self.log = name, log

    def camera_added(self, camera: Any) -> None:
        self.log.append((self.name, "added", camera.name))

    def camera_removed(self, camera: Any) -> None:
        self.log.append((self.name, "removed", camera.name))

    def gallery_changed(self, change: GalleryChange) -> None:
        self.log.append((self.name, "gallery", change.event))


class Broken(Output):
    def gallery_changed(self, change: GalleryChange) -> None:
        raise RuntimeError("broken output")

    def camera_added(self, camera: Any) -> None:
        raise RuntimeError("broken output")


async def test_outputs_hear_in_order_and_a_failing_one_silences_nobody(
        caplog: pytest.LogCaptureFixture) -> None:
    config = Config()
    cameras = Cameras(config, Metrics(), gallery=lambda: GalleryIndex.empty(
        config.recognition.policy(config.recognition.model)), unknowns=lambda: None)
    events = Events(cameras)
    log: list[tuple[str, str, str]] = []
    events.connect(Broken())
    events.connect(Heard("first", log))
    second = dataclasses.replace(config.camera, name="door", source=str(TALKING_HEAD))
    await cameras.add(second)
    events.connect(Heard("late", log))  # told of both cameras served already
    events.gallery_changed(GalleryChange("renamed"))
    await cameras.remove("door")
    assert log == [
        ("first", "added", config.camera.name), ("first", "added", "door"),
        ("late", "added", config.camera.name), ("late", "added", "door"),
        ("first", "gallery", "renamed"), ("late", "gallery", "renamed"),
        ("first", "removed", "door"), ("late", "removed", "door"),
    ]
    assert sum("Broken." in r.getMessage() for r in caplog.records) == 3


async def test_removing_a_camera_ends_its_open_visits(
        app_client: Any, config_factory: Callable[..., Config]) -> None:
    client = await app_client(config_factory(), live=False)
    app = client.server.app
    cfg = app[CAMERAS].first.config
    door: Camera = await app[CAMERAS].add(dataclasses.replace(cfg, name="door"))
    history = app[HISTORY]
    visits = {}
    for camera in (cfg.name, door.name):
        visits[camera] = VisitRecord(uuid.uuid4().hex, "ab" * 32, None, False, camera,
                                     time.time() - 60, None, None)
        history.record(VisitEvent("arrived", visits[camera]))
    await app[CAMERAS].remove("door")
    await asyncio.wait_for(history._queue.join(), 10)

    async def left_at(camera: str) -> Any:
        resp = await client.get(f"/visits/{visits[camera].id}")
        assert resp.status == 200
        return (await resp.json())["left_at"]

    assert await left_at("door") is not None  # ended when its camera went
    assert await left_at(cfg.name) is None  # still under way

"""H.264 RTSP cameras at 1080p and 4K, served by a real RTSP server (GStreamer's, started by
the tests): facestream reads them at their native size, streams them scaled to
``camera.max_side`` (its H.264 video encoded again at ``video.max_side``: too large to pass
through), names the person enrolled from a close-up, and records the visit.

The clips are made at test time from the shared talking head (tests/rtsp_camera.py): her face
is about 110 px wide at 1080p and 200 px at 4K; the enrolled photo is a frame no clip shows.
One server and one app (one camera worker, one upload worker) per resolution, shared by that
resolution's tests: every test waits for what it checks, so any one of them runs alone too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient, TestServer

from facestream import appkeys
from facestream.config import Config
from facestream.server import create_app

from .conftest import make_config, upload
from .rtsp_camera import RtspCamera, enrollment_frame, make_clip, rtsp_camera
from .support import read_part, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAME = "Alexandria Ocasio-Cortez"
#: (width, height, face width in px) of each camera.
CAMERAS = {"1080p": (1920, 1080, 110), "4k": (3840, 2160, 200)}
#: Seconds the camera may take to show up live, and the person to be named once it is.
LIVE_S = 20.0
NAMED_S = 20.0
#: Seconds any request (the stream's included) may take.
REQUEST_S = 20.0


class Records(logging.Handler):
    """The messages logged while an app runs (caplog is per test; the app is per module)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass(frozen=True)
class Served:
    client: TestClient[Any, Any]
    camera: RtspCamera
    config: Config
    enrolled: str
    log: Records


@pytest.fixture(scope="module", params=list(CAMERAS))
def camera(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RtspCamera]:
    width, height, face = CAMERAS[request.param]
    clip = make_clip(tmp_path_factory.mktemp("rtsp") / f"{request.param}.mp4", width, height,
                     face, seconds=5.0)
    with rtsp_camera(clip) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(camera: RtspCamera, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Served]:
    """facestream on ``camera``, with the person enrolled from a close-up (512 px) first."""
    config = make_config(tmp_path_factory.mktemp("facestream"), camera.url)
    log = Records()
    capture_log = logging.getLogger("facestream.capture")
    level = capture_log.level
    capture_log.setLevel(logging.INFO)
    capture_log.addHandler(log)
    try:
        async with TestClient(TestServer(create_app(config)),
                              timeout=ClientTimeout(total=REQUEST_S)) as client:
            photo = cv2.imencode(".jpg", enrollment_frame())[1].tobytes()
            resp = await client.post("/faces", data=upload("image", photo, name=NAME))
            assert resp.status == 201, await resp.text()
            yield Served(client, camera, config, (await resp.json())["hash"], log)
    finally:
        capture_log.removeHandler(log)
        capture_log.setLevel(level)


async def live(served: Served) -> dict[str, Any]:
    """The camera's GET /cameras entry once it delivers frames."""

    async def status() -> Any:
        cams = (await (await served.client.get("/cameras")).json())["cameras"]
        return cams[0] if cams[0]["signal"] else None

    try:
        return await wait_for(status, LIVE_S, 0.2)
    except AssertionError:
        raise AssertionError(f"{served.camera.url} not live within {LIVE_S:.0f}s; the RTSP "
                             f"server's log: {served.camera.log.read_text()!r}") from None


async def test_the_camera_is_read_at_its_native_size(served: Served) -> None:
    status = await live(served)
    assert (status["name"], status["state"], status["source"]) == (
        served.config.camera.name, "live", served.camera.url)
    clip = served.camera.clip
    assert status["resolution"] == f"{clip.width}x{clip.height}"
    assert f"camera {served.camera.url}: opened ({clip.width}x{clip.height})" \
        in served.log.messages


async def test_the_stream_is_scaled_to_max_side(served: Served) -> None:
    await live(served)
    clip, max_side = served.camera.clip, served.config.camera.max_side
    resp = await served.client.get("/streaming")
    assert resp.status == 200
    shapes = set()
    for _ in range(5):
        jpeg = await read_part(resp)
        shapes.add(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape)
    resp.close()
    scale = max_side / max(clip.width, clip.height)
    assert shapes == {(round(clip.height * scale), round(clip.width * scale), 3)}
    assert max(clip.width, clip.height) > max_side  # scaled down, not passed through


async def test_the_video_is_scaled_and_encoded_not_passed_through(served: Served) -> None:
    """Larger than video.max_side (1280): the camera's own H.264 cannot go as it is, so the
    full tier is scaled and encoded (our baseline, not the camera's High profile)."""
    status = await live(served)
    assert status["video_passthrough"] is False
    async with served.client.ws_connect("/video") as ws:
        init = await asyncio.wait_for(ws.receive_json(), REQUEST_S)
        await asyncio.wait_for(ws.receive_bytes(), REQUEST_S)  # the init segment
        await asyncio.wait_for(ws.receive_json(), REQUEST_S)  # a frame's message
        await asyncio.wait_for(ws.receive_bytes(), REQUEST_S)  # and its fragment
    assert (init["passthrough"], init["size"]) == (False, [1280, 720])
    assert init["codec"].startswith("avc1.42")
    assert served.client.server.app[appkeys.CAMERAS].first.video.tiers["full"].frames_encoded > 0


async def test_the_person_enrolled_from_a_close_up_is_named(served: Served) -> None:
    await live(served)

    async def named() -> Any:
        body = await (await served.client.get("/hash")).json()
        return body if body["name"] == NAME else None

    try:
        body = await wait_for(named, NAMED_S, 0.1)
    except AssertionError:
        body = await (await served.client.get("/hash")).json()
        raise AssertionError(f"{NAME} not named within {NAMED_S:.0f}s: {body}") from None
    assert body["hash"] == served.enrolled and body["known"] is True
    # Boxes are in the streamed frame's pixels: the face's width, scaled like the frame.
    clip = served.camera.clip
    expected = clip.face_px * served.config.camera.max_side / max(clip.width, clip.height)
    assert 0.6 * expected < body["faces"][0]["box"][2] < 1.5 * expected, body["faces"]


async def test_the_visit_is_recorded(served: Served) -> None:
    async def visit() -> Any:
        resp = await served.client.get(f"/visits?person={served.enrolled}")
        return (await resp.json())["visits"]

    try:
        visits = await wait_for(visit, LIVE_S + NAMED_S, 0.2)
    except AssertionError:
        raise AssertionError(f"no visit of {NAME} within {LIVE_S + NAMED_S:.0f}s") from None
    assert {(v["hash"], v["name"], v["known"], v["camera"]) for v in visits} == {
        (served.enrolled, NAME, True, served.config.camera.name)}
    assert visits[0]["left_at"] is None  # the newest goes on: she is still in view

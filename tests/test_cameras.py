"""Several cameras in one server: each with its own stream, presence and websocket, one
worker pool shared fairly, cameras added and removed while the others go on. Real clips,
the real model."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from facestream.config import CameraConfig, Config
from facestream.pipeline import FairShare

from .conftest import GROUP, OTHER_HEAD, TALKING_HEAD, write_video
from .servers import Server
from .support import read_part, wait_for

Client = TestClient[Any, Any]


def with_cameras(config: Config, *cameras: tuple[str, Path | str]) -> Config:
    base = config.camera
    return dataclasses.replace(config, cameras=tuple(
        dataclasses.replace(base, name=name, source=str(source)) for name, source in cameras))


async def status(client: Client) -> dict[str, dict[str, Any]]:
    body = await (await client.get("/cameras")).json()
    return {c["name"]: c for c in body["cameras"]}


# -- the fair share of the workers -----------------------------------------------------------


async def test_a_busy_camera_cannot_starve_another() -> None:
    """One worker; camera A always has a frame waiting and holds each turn 4 times longer
    than B. Turns alternate: B gets half of them, not what is left over."""
    share = FairShare(1)
    turns: list[str] = []

    async def lane(camera: str, hold: float) -> None:
        while True:
            async with share.turn(camera):
                turns.append(camera)
                await asyncio.sleep(hold)

    lanes = [asyncio.create_task(lane("crowd", 0.02)), asyncio.create_task(lane("crowd", 0.02)),
             asyncio.create_task(lane("door", 0.005))]
    await asyncio.sleep(1.0)
    for t in lanes:
        t.cancel()
    await asyncio.gather(*lanes, return_exceptions=True)
    assert len(turns) > 20
    assert abs(turns.count("door") - turns.count("crowd")) <= 1
    assert all(a != b for a, b in itertools.pairwise(turns))  # strictly alternating


async def test_slots_bound_what_is_in_flight_and_cancelled_waiters_free_nothing() -> None:
    share = FairShare(2)
    inside = 0
    most = 0

    async def use(camera: str) -> None:
        nonlocal inside, most
        async with share.turn(camera):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    waiters = [asyncio.create_task(use(f"c{i % 3}")) for i in range(9)]
    await asyncio.sleep(0.01)
    waiters[-1].cancel()  # cancelled while waiting
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert most == 2 and sum(isinstance(r, asyncio.CancelledError) for r in results) == 1
    # Nothing leaked: both slots are free again (a leaked one would make this wait forever).
    async with asyncio.timeout(2):
        async with share.turn("a"), share.turn("b"):
            pass


# -- several cameras through the API ---------------------------------------------------------


@pytest.fixture(scope="module")
def crowd_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A still of many faces as a 640x480 video: every frame is expensive to analyse."""
    image = cv2.resize(cv2.imread(str(GROUP)), (640, 480))
    return write_video(tmp_path_factory.mktemp("crowd") / "crowd.mp4", [image] * 50)


async def test_two_cameras_each_with_its_stream_presence_and_websocket(
    app_client: Any, config_factory: Callable[..., Config]
) -> None:
    cfg = with_cameras(config_factory(), ("door", TALKING_HEAD), ("hall", OTHER_HEAD))
    client = await app_client(cfg)

    async def both_see_someone() -> Any:
        cams = await status(client)
        return cams if all(c["signal"] and c["faces_in_view"] == 1 for c in cams.values()) \
            else None

    cams = await wait_for(both_see_someone, 30, 0.2)
    assert list(cams) == ["door", "hall"]
    assert all(c["fps"] > 5 and c["analysed"] > 0 and c["state"] == "live"
               for c in cams.values())
    door = await (await client.get("/cameras/door/hash")).json()
    hall = await (await client.get("/cameras/hall/hash")).json()
    assert door["hash"] and hall["hash"] and door["hash"] != hall["hash"]
    # The single-camera endpoints are the first camera's.
    assert (await (await client.get("/hash")).json())["hash"] == door["hash"]
    people = (await (await client.get("/people")).json())["people"]
    assert sorted((p["hash"], p["cameras"]) for p in people) == sorted(
        [(door["hash"], ["door"]), (hall["hash"], ["hall"])])
    ws = await client.ws_connect("/cameras/hall/ws")
    first = await ws.receive_json(timeout=10)
    assert first["type"] == "snapshot" and first["camera"] == "hall"
    assert first["hash"] == hall["hash"]
    await ws.close()
    resp = await client.get("/cameras/hall/streaming")
    part = await read_part(resp)
    image = cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    resp.close()
    assert (await client.get("/cameras/nope/hash")).status == 404

    async def stranger_visits() -> Any:
        await asyncio.sleep(0)
        visits = (await (await client.get("/visits")).json())["visits"]
        return visits if {v["camera"] for v in visits} == {"door", "hall"} else None

    visits = await wait_for(stranger_visits, 10, 0.2)  # each camera's stranger arrives
    assert {(v["camera"], v["hash"]) for v in visits} == {("door", door["hash"]),
                                                          ("hall", hall["hash"])}


async def test_one_worker_is_shared_fairly_with_a_crowded_camera(
    app_client: Any, config_factory: Callable[..., Config], crowd_video: Path
) -> None:
    """One worker, a camera full of faces beside a camera with one: the door camera keeps
    getting about half the analyses, and its face stays recognised as in view."""
    cfg = with_cameras(config_factory(), ("crowd", crowd_video), ("door", TALKING_HEAD))
    client = await app_client(cfg)
    await wait_for(lambda: _faces(client, "crowd", 5), 60, 0.2)
    before = await status(client)
    await asyncio.sleep(5)
    after = await status(client)
    crowd = after["crowd"]["analysed"] - before["crowd"]["analysed"]
    door = after["door"]["analysed"] - before["door"]["analysed"]
    assert crowd > 0 and door >= 0.4 * (crowd + door), (crowd, door)
    assert after["door"]["faces_in_view"] == 1


async def _faces(client: Client, camera: str, at_least: int) -> bool:
    cams = await status(client)
    return cams[camera]["faces_in_view"] >= at_least


async def test_the_api_adds_only_camera_streams_unless_files_are_allowed(
    app_client: Any, config_factory: Callable[..., Config]
) -> None:
    """An admin on the network must not make the server read its own files (file://, a
    path) or speak other protocols FFmpeg knows (gopher, ftp, tcp ...): those are refused
    from the API unless server.api_camera_files says so; the config file always may."""
    client = await app_client(config_factory(), live=False)
    files = ("source: a file on the server is refused from the API (set "
             "server.api_camera_files = true in the config file to allow it); give a webcam "
             "index or an rtsp://, rtsps://, rtmp://, rtmps://, http://, https:// URL")
    for source, message in (
            ("file:///etc/passwd", files), ("/etc/passwd", files), (str(TALKING_HEAD), files),
            ("gopher://127.0.0.1:9/x", "source: 'gopher' URLs are not camera streams; give a "
             "webcam index or an rtsp://, rtsps://, rtmp://, rtmps://, http://, https:// URL"),
            ("concat:/etc/passwd|/etc/hosts", files)):
        resp = await client.post("/cameras", json={"name": "spy", "source": source})
        assert (resp.status, await resp.json()) == (400, {"error": message}), source
    assert list(await status(client)) == ["camera"]
    for source in ("rtsp://user:pw@127.0.0.1:9/live", "https://127.0.0.1:9/video.mjpg", "3"):
        resp = await client.post("/cameras", json={"name": f"c{len(source)}", "source": source})
        assert resp.status == 201, source
    allowed = dataclasses.replace(config_factory(), server=dataclasses.replace(
        config_factory().server, api_camera_files=True))
    other = await app_client(allowed, live=False)
    resp = await other.post("/cameras", json={"name": "clip", "source": f"file://{OTHER_HEAD}"})
    assert resp.status == 201


async def test_cameras_come_and_go_while_the_others_stream_on(
    app_client: Any, config_factory: Callable[..., Config]
) -> None:
    """POST /cameras adds one, DELETE removes it; a viewer of the first camera sees no gap."""
    cfg = with_cameras(config_factory(), ("door", TALKING_HEAD))
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, api_camera_files=True))
    client = await app_client(cfg)
    stream = await client.get("/cameras/door/streaming")
    gaps: list[float] = []

    async def watch() -> None:
        last = time.monotonic()
        while True:
            await read_part(stream)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    watcher = asyncio.create_task(watch())
    resp = await client.post("/cameras", json={"name": "hall", "source": str(OTHER_HEAD)})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "hall"

    async def hall_live() -> bool:
        return bool((await (await client.get("/cameras/hall/hash")).json())["hash"])

    await wait_for(hall_live, 30, 0.2)
    resp = await client.post("/cameras", json={"name": "hall", "source": "0"})
    assert resp.status == 409
    resp = await client.post("/cameras", json={"name": "bad name", "source": "0"})
    assert resp.status == 400 and "name" in (await resp.json())["error"]
    resp = await client.post("/cameras", json={"name": "x"})
    assert resp.status == 400
    assert (await client.delete("/cameras/hall")).status == 200
    assert (await client.get("/cameras/hall/hash")).status == 404
    assert list(await status(client)) == ["door"]
    resp = await client.delete("/cameras/door")
    assert resp.status == 409 and "last camera" in (await resp.json())["error"]
    assert (await client.delete("/cameras/nope")).status == 404
    await asyncio.sleep(0.5)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    stream.close()
    assert len(gaps) > 10 and max(gaps[1:]) < 1.0  # the door stream never stalled


async def test_a_config_reload_adds_and_removes_cameras(tmp_path: Path) -> None:
    """`python -m facestream` with [[cameras]]; the file changes and SIGHUP applies it."""
    config = tmp_path / "config.toml"
    config.write_text(f'[[cameras]]\nname = "door"\nsource = "{TALKING_HEAD}"\n')
    server = Server(None, tmp_path / "data", tmp_path, workers=1)  # --source: one camera
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)

            async def names() -> list[str]:
                async with session.get(server.url + "/cameras") as resp:
                    return [c["name"] for c in (await resp.json())["cameras"]]

            assert await names() == ["door"]
            config.write_text(f'[[cameras]]\nname = "door"\nsource = "{TALKING_HEAD}"\n'
                              f'[[cameras]]\nname = "hall"\nsource = "{OTHER_HEAD}"\n')
            os.kill(server.proc.pid, signal.SIGHUP)
            await wait_for(lambda: _equal(names, ["door", "hall"]), 10, 0.1)
            config.write_text(f'[[cameras]]\nname = "hall"\nsource = "{OTHER_HEAD}"\n')
            os.kill(server.proc.pid, signal.SIGHUP)
            await wait_for(lambda: _equal(names, ["hall"]), 10, 0.1)
            config.write_text('[[cameras]]\nname = "hall"\n')  # broken: nothing changes
            os.kill(server.proc.pid, signal.SIGHUP)
            await asyncio.sleep(1.0)
            assert await names() == ["hall"]
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "config reload: cameras added hall" in log
    assert "config reload: cameras removed door" in log
    assert "config reload: cameras[0].source: missing" in log


async def _equal(get: Callable[[], Any], expected: Any) -> bool:
    return bool(await get() == expected)


def test_camera_config_defaults_come_from_the_camera_section() -> None:
    from facestream.config import from_mapping

    cfg = from_mapping({"camera": {"jpeg_quality": 60},
                        "cameras": [{"name": "a", "source": 0},
                                    {"name": "b", "source": "b.mp4", "jpeg_quality": 90}]})
    assert [(c.name, c.source, c.jpeg_quality) for c in cfg.camera_list] == [
        ("a", "0", 60), ("b", "b.mp4", 90)]
    assert from_mapping({}).camera_list == (CameraConfig(),)


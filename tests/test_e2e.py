"""End to end: `python -m facestream` as a user runs it, on a real video, over real HTTP."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from .conftest import OBAMA, OBAMA3, TALKING_HEAD, self_signed_cert
from .servers import Server
from .support import metric_values, read_part


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def test_server_end_to_end(
    session: aiohttp.ClientSession, face_then_empty_video: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = Server(face_then_empty_video, data, tmp_path)
    try:
        await server.wait_ready(session)
        url = server.url

        # The page and the stream.
        async with session.get(url + "/") as resp:
            page = await resp.text()
        assert 'id="video"' in page and 'id="stream"' in page and "Add face" in page
        async with session.get(url + "/streaming") as resp:
            for _ in range(50):  # a "no signal" card may come first while the file opens
                jpeg = await read_part(resp)
                shape = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape
                if shape != (360, 640, 3):
                    break
        assert shape == (512, 512, 3)  # the clip's own frames

        # Websocket: a snapshot, then the face in the clip arrives.
        async with session.ws_connect(url + "/ws") as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            while True:
                msg = await ws.receive_json(timeout=20)
                if msg["type"] == "hash" and msg["hash"]:
                    break
            live_hash = msg["hash"]
            async with session.get(url + "/hash") as resp:
                state = await resp.json()
            assert state["hash"] == live_hash and state["faces"][0]["hash"] == live_hash

            # Enroll the face in view by name, from the live view.
            async with session.post(url + "/faces", json={"from_live": True, "name": "Alex",
                                                          "email": "alex@example.org"}) as resp:
                assert resp.status == 201, await resp.text()
                assert (await resp.json())["hash"] == live_hash
            while (await ws.receive_json(timeout=10))["type"] != "gallery":
                pass

        # Enroll from an upload, then recognise another photo of the same person.
        form = aiohttp.FormData()
        form.add_field("image", io.BytesIO(OBAMA.read_bytes()), filename="obama.jpg")
        form.add_field("name", "Barack")
        async with session.post(url + "/faces", data=form) as resp:
            assert resp.status == 201
            barack = (await resp.json())["hash"]
        form = aiohttp.FormData()
        form.add_field("frame", io.BytesIO(OBAMA3.read_bytes()), filename="obama3.jpg")
        async with session.post(url + "/process-frame", data=form) as resp:
            body = await resp.json()
        assert body["hash"] == barack and body["known"] and len(body["coords"]) == 4

        # A bad upload gets a 4xx and the server keeps serving.
        form = aiohttp.FormData()
        form.add_field("frame", io.BytesIO(b"garbage"), filename="x.jpg")
        async with session.post(url + "/process-frame", data=form) as resp:
            assert (resp.status, await resp.json()) == (400, {
                "error": "not an image that can be decoded (JPEG, PNG, WEBP, BMP, TIFF)"})
        async with session.get(url + "/metrics") as resp:
            metrics = metric_values(await resp.text())
        # Exactly the two uploads that reached a worker (the live enrollment used no upload);
        # the camera's frames were analysed and its face embedded.
        assert metrics['facestream_stage_seconds_count{stage="upload"}'] == 2
        assert metrics["facestream_frames_processed_total"] > 0
        assert metrics["facestream_faces_embedded_total"] > 2
        assert metrics["facestream_gallery_identities"] == 2
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()[-2000:]
    log = server.log.read_text()
    assert "alex@example.org" not in log

    # Restart on the same data dir: nothing the API acknowledged was lost.
    server = Server(face_then_empty_video, data, tmp_path)
    try:
        await server.wait_ready(session)
        async with session.get(server.url + "/faces") as resp:
            names = sorted(f["name"] for f in (await resp.json())["faces"])
        assert names == ["Alex", "Barack"]
        # The enrolled live face is recognised by name when it comes back into view.
        deadline = time.monotonic() + 20
        seen: Any = None
        while time.monotonic() < deadline:
            async with session.get(server.url + "/hash") as resp:
                seen = await resp.json()
            if seen["hash"] == live_hash:
                break
            await asyncio.sleep(0.1)
        assert seen["hash"] == live_hash and seen["name"] == "Alex" and seen["known"]
    finally:
        assert server.stop() == 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


async def test_workers_exit_when_the_server_is_killed(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A server killed with SIGKILL (OOM killer, kill -9) must not leave workers behind."""
    server = Server(Path(os.devnull), tmp_path / "data", tmp_path)
    try:
        await server.wait_ready(session)
        # The cameras' two workers, the uploads' one, and multiprocessing's tracker.
        children = _children(server.proc.pid)
        workers = [p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 3
        server.proc.kill()
        server.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            await asyncio.sleep(0.1)
        assert [p for p in children if _alive(p)] == []
    finally:
        server.stop()


async def test_sigterm_closes_websockets_with_going_away_and_ends_streams(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = Server(TALKING_HEAD, tmp_path / "data", tmp_path, workers=1)
    try:
        await server.wait_ready(session)
        async with session.ws_connect(server.url + "/ws") as ws, \
                session.get(server.url + "/streaming") as stream:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            await read_part(stream)
            server.proc.send_signal(signal.SIGTERM)
            while True:
                msg = await ws.receive(timeout=15)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
            await asyncio.wait_for(stream.content.read(), 15)  # the stream ends too
        assert server.proc.wait(15) == 0
    finally:
        server.stop()


async def test_https_with_the_configured_certificate_and_a_secure_cookie(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """server.tls_cert / tls_key: the server speaks only HTTPS, with that certificate, and the
    session cookie it sets is Secure (a browser never sends it over plain HTTP)."""
    cert, key = self_signed_cert(tmp_path)
    (tmp_path / "config.toml").write_text(
        f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    server = Server(TALKING_HEAD, tmp_path / "data", tmp_path, workers=1, auth=True)
    server.url = server.url.replace("http://", "https://")
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as tls:
            await server.wait_ready(tls)
            password = re.search(r"user 'admin', password (\S+)", server.log.read_text())
            assert password is not None
            async with tls.post(server.url + "/login", json={
                    "username": "admin", "password": password.group(1)}) as resp:
                assert resp.status == 200
                cookie = resp.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with pytest.raises(aiohttp.ClientError):  # plain HTTP is not answered
            async with session.get(server.url.replace("https://", "http://") + "/healthz"):
                pass
    finally:
        assert server.stop() == 0

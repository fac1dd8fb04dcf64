"""H.264 live video (issue 20): what the server sends a video viewer, decoded back with PyAV;
encoding only while somebody watches; a viewer joining mid-stream starts at a keyframe at
once; the fragmented MP4 over HTTP for other players; an H.264 camera passed through as it
is, on a real RTSP server (tests/rtsp_camera.py)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import cv2
import numpy as np
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from facestream import video as video_module
from facestream.appkeys import AUTH, CAMERAS
from facestream.capture import SourcePacket
from facestream.config import AuthConfig, Config, VideoConfig
from facestream.hub import FrameHub, Packet
from facestream.mp4 import Encoder, Passthrough, codec_string
from facestream.source import AvReader
from facestream.video import FULL, LOW, MAX_BEHIND_S, VideoStream

from .conftest import OBAMA, TALKING_HEAD
from .rtsp_camera import RtspCamera, make_clip, rtsp_camera
from .support import metric_values, read_part, wait_for

Client = TestClient[Any, Any]


async def watch(client: Client, seconds: float, path: str = "/video",
                paired: list[float] | None = None
                ) -> tuple[list[dict], bytes, list[bytes], float]:
    """Watch for ``seconds``: the JSON messages, the init segment, the fragments, and how
    long after connecting the first fragment came; ``paired`` gets, for each fragment, the
    ``t`` of the frame message just before it."""
    messages: list[dict] = []
    init, fragments, first = b"", [], 0.0
    faces: list[dict] = []
    t0 = time.monotonic()
    async with client.ws_connect(path, compress=15) as ws:  # offered, as browsers do
        while time.monotonic() - t0 < seconds:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type == WSMsgType.TEXT:
                message = msg.json()
                if message["type"] == "init":
                    faces = []
                elif message["type"] == "frame":  # without faces: the frame before's, kept
                    faces = message.setdefault("faces", faces)
                messages.append(message)
            elif msg.type == WSMsgType.BINARY:
                if not init:
                    init = msg.data
                else:
                    fragments.append(msg.data)
                    first = first or time.monotonic() - t0
                    if paired is not None:
                        paired.append(messages[-1].get("t", -1.0) if messages else -1.0)
            else:
                break
    return messages, init, fragments, first


async def jpegs_encoded(client: Client) -> float:
    text = await (await client.get("/metrics")).text()
    return metric_values(text).get('facestream_stage_seconds_count{stage="encode"}', 0.0)


async def mp4_frames(client: Client, size: int) -> int:
    """The frames decoded from the first ``size`` bytes of GET /video.mp4 (a player's
    view: one fragmented MP4 file)."""
    resp = await client.get("/video.mp4")
    assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    data = b""
    while len(data) < size:
        data += await asyncio.wait_for(resp.content.read(65536), 5)
    resp.close()
    with av.open(io.BytesIO(data), format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


def decode(init: bytes, fragments: list[bytes]) -> list[Any]:
    with av.open(io.BytesIO(init + b"".join(fragments)), format="mp4") as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


async def test_a_video_viewer_gets_h264_it_can_decode_with_the_faces_of_each_frame(
        app_client: Any, config_factory: Callable[..., Config]) -> None:
    client = await app_client(config_factory(TALKING_HEAD))
    video = client.server.app[CAMERAS].first.video
    # Nobody watching: nothing is encoded, neither H.264 nor the MJPEG stream's JPEGs.
    await wait_for(lambda: client.server.app[CAMERAS].first.hub.latest is not None, 10)
    await asyncio.sleep(0.5)
    assert not video.running and video.frames_encoded == 0
    assert await jpegs_encoded(client) == 0
    resp = await client.get("/streaming")  # an MJPEG viewer: JPEGs from the next frame on
    assert (await read_part(resp))[:2] == b"\xff\xd8"
    # Each part says when its frame was captured (wall clock), for a latency measure.
    head = (await resp.content.readuntil(b"\r\n\r\n")).decode("ascii")
    stamp = float(head.split("X-Timestamp: ")[1].split()[0])
    assert 0 <= time.time() - stamp < 5, head
    resp.close()
    assert await jpegs_encoded(client) > 0

    paired: list[float] = []
    messages, init, fragments, first = await watch(client, 2.0, paired=paired)
    # MPEG-4 part 2 (the clip's codec) cannot be passed through: encoded.
    assert messages[0] == {"type": "init", "codec": codec_string(init), "camera": "camera",
                           "tier": "full", "size": [512, 512], "passthrough": False,
                           "keyframe_interval_s": 2.0}
    assert messages[0]["codec"].startswith("avc1.42")  # baseline: every browser plays it
    assert first < 2.0  # a viewer starts at a keyframe, asked for on joining
    frames = decode(init, fragments)
    # Each fragment comes right after its own frame's message (its time, its faces).
    with av.open(io.BytesIO(init + b"".join(fragments)), format="mp4") as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert len(times) == len(paired)
    assert all(abs(t - p) < 0.002 for t, p in zip(times, paired)), list(zip(times, paired))[:5]
    # The file plays at 25 fps: about 2 s of it, the first frame a keyframe.
    assert 30 <= len(frames) <= 55, len(frames)
    assert frames[0].shape == (512, 512, 3)
    # Each frame's faces, timed as the frames are: the talking head, boxed.
    timed = [m for m in messages if m["type"] == "frame"]
    assert len(timed) >= len(frames) - 2
    assert all(b["t"] > a["t"] for a, b in zip(timed, timed[1:]))
    boxed = [m for m in timed if m["faces"]]
    assert len(boxed) >= len(timed) * 0.8
    x, y, w, h = boxed[-1]["faces"][0]["box"]
    assert boxed[-1]["size"] == [512, 512] and 100 < w < 400 and 0 <= x < 512 - w

    # The last viewer gone: encoding stops.
    await wait_for(lambda: not video.running, 5)
    encoded = video.frames_encoded
    await asyncio.sleep(0.5)
    assert video.frames_encoded == encoded


async def test_the_frames_messages_are_deflated_and_the_video_is_not(
        app_client: Any, config_factory: Callable[..., Config]) -> None:
    """A browser offers permessage-deflate: the frames' messages (JSON) go deflated, the
    video (H.264, which does not shrink) as it is: deflating it cost the server CPU for each
    viewer. Read as a browser's socket reads them (RSV1 says a message is deflated)."""
    client = await app_client(config_factory(TALKING_HEAD))
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(np.random.default_rng(0).bytes(16)).decode()
    writer.write((f"GET /video HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                  "\r\n").encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b" 101 " in head.split(b"\r\n")[0] and b"permessage-deflate" in head, head
        seen: list[tuple[int, bool]] = []  # (opcode, deflated)
        while len(seen) < 30:
            first, second = await asyncio.wait_for(reader.readexactly(2), 10)
            size = second & 0x7F
            if size >= 126:
                size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
            await reader.readexactly(size)
            seen.append((first & 0x0F, bool(first & 0x40)))
    finally:
        writer.close()
    assert set(seen) == {(1, True), (2, False)}, seen  # text deflated, binary not


async def test_a_second_viewer_joins_mid_stream_and_the_mp4_plays_for_other_players(
        app_client: Any, config_factory: Callable[..., Config]) -> None:
    client = await app_client(config_factory(TALKING_HEAD))
    first_viewer = asyncio.create_task(watch(client, 2.5))
    await asyncio.sleep(1.0)
    _, init, fragments, first = await watch(client, 1.0)
    assert first < 1.0  # joined mid-GOP: a keyframe was made for it
    assert len(decode(init, fragments)) >= 10
    await first_viewer

    assert await mp4_frames(client, 60_000) >= 3


async def test_a_viewer_that_falls_behind_skips_to_a_keyframe_and_odd_sides_are_cropped(
) -> None:
    """A viewer that stops reading keeps at most about a second of video waiting: then what
    it had not sent is dropped and it resumes at a keyframe made for it (the interval here is
    10 s), so a slow link costs frames, never a growing delay. A picture of odd width and
    height (which 4:2:0 cannot hold) loses its last row and column."""
    frame = cv2.resize(cv2.imread(str(OBAMA)), (321, 241))
    hub = FrameHub()
    stream = VideoStream(hub, VideoConfig(keyframe_interval_s=10.0), "cam")
    viewer = stream.join()
    t0 = time.monotonic()
    try:
        for i in range(75):  # 3 s of video at 25 fps, nothing read meanwhile
            hub.publish(Packet(i + 1, t0 + i / 25, frame, b"", True))
            await wait_for(lambda i=i: stream.frames_encoded > i, 5, interval=0.005)
        assert viewer.skips >= 1
        items = []
        while not viewer.queue.empty():
            items.append(await viewer.next())
        fragments = [item for kind, item in items if kind == "fragment"]
        # What waits is under MAX_BEHIND_S of video, from a keyframe on.
        assert fragments and fragments[0].keyframe
        assert fragments[-1].t - fragments[0].t <= MAX_BEHIND_S
        (init,) = [item for kind, item in items if kind == "init"] or [viewer.sent_init]
        frames = decode(init, [f.data for f in fragments])
        assert len(frames) >= len(fragments) - 1 and frames[0].shape == (240, 320, 3)
    finally:
        await stream.close()


async def test_a_page_whose_link_does_not_keep_up_moves_to_the_low_tier_and_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers the server cannot see (a mobile network's, the browser's) hide a slow link,
    so the page acknowledges what it receives. One that stops acknowledging is sent no more
    than its window, then skips and moves to the low tier: a new init segment and a smaller
    picture, which it plays once it acknowledges again. After UPGRADE_AFTER_S there without
    trouble it tries the full tier again. Only the frames sent carry their faces."""
    monkeypatch.setattr(video_module, "UPGRADE_AFTER_S", 2.5)
    frame = cv2.resize(cv2.imread(str(OBAMA)), (640, 480))
    hub = FrameHub()
    stream = VideoStream(hub, VideoConfig(low_max_side=320), "cam")
    viewer = stream.join(acks=True, adaptive=True)
    got: list[tuple[str, Any]] = []
    acking = asyncio.Event()
    acking.set()

    async def page() -> None:
        """Takes what the socket sends at once (the link's buffers take it all, as
        Chromium's emulation does); acknowledges it while ``acking``."""
        while True:
            kind, item = await viewer.next()
            got.append((kind, item))
            if acking.is_set():
                viewer.ack(viewer.sent)

    t0, seq = time.monotonic(), 0

    async def play(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            await asyncio.sleep(max(0.0, t0 + seq / 25 - time.monotonic()))  # as it comes
            before = stream.frames_encoded
            hub.publish(Packet(seq, t0 + seq / 25, frame, b"", True))
            await wait_for(lambda: stream.frames_encoded > before, 5, interval=0.005)

    def inits() -> list[dict[str, Any]]:
        return [m for kind, m in got if kind == "json" and m["type"] == "init"]

    reader = asyncio.create_task(page())
    try:
        await play(25)
        assert [(m["tier"], m["size"]) for m in inits()] == [("full", [640, 480])]
        full = [f for kind, f in got if kind == "fragment"]
        assert len(full) >= 23 and full[0].keyframe

        acking.clear()  # the link stalls: what went out is not acknowledged
        got.clear()
        await play(40)
        on_the_way = viewer.sent - viewer.acked
        assert on_the_way <= viewer.window() + max(len(f.data) for f in full)
        assert viewer.skips >= 1 and viewer.tier == LOW

        acking.set()
        viewer.ack(viewer.sent)
        await play(20)
        assert [(m["tier"], m["size"]) for m in inits()] == [("low", [320, 240])]
        low_init = next(item for kind, item in got if kind == "init")
        low = [f for kind, f in got if kind == "fragment"
               and f.t >= 0 and got.index((kind, f)) > got.index(("init", low_init))]
        assert len(low) >= 12 and low[0].keyframe
        assert decode(low_init, [f.data for f in low])[0].shape == (240, 320, 3)
        frames = [json.loads(m) for kind, m in got if kind == "text"]
        assert abs(len(frames) - sum(kind == "fragment" for kind, _ in got)) <= 1
        # Nobody in view all along: the faces (none) go with the first frame after the init
        # segment, and no other frame says them again.
        after_init = [kind for kind, _ in got].index("init")
        first_frame = next(json.loads(m) for kind, m in got[after_init:] if kind == "text")
        assert first_frame["faces"] == [] and sum("faces" in m for m in frames) == 1

        got.clear()
        await play(45)
        assert viewer.tier == FULL and [m["tier"] for m in inits()] == ["full"]
        # What an operator sees of it (GET /metrics).
        sample = stream.metrics.registry.get_sample_value
        assert sample("facestream_video_skips_total", {"camera": "cam"}) == viewer.skips
        assert [sample("facestream_video_tier_moves_total", {"camera": "cam", "tier": tier})
                for tier in (LOW, FULL)] == [1, 1]
        assert sample("facestream_video_frames_total", {"camera": "cam", "how": LOW}) >= 12
    finally:
        reader.cancel()
        await stream.close()


async def test_players_give_a_token_in_the_url_for_the_video_and_the_mjpeg_stream(
        app_client: Any, config_factory: Callable[..., Config]) -> None:
    """VLC, FFmpeg and Home Assistant's cameras can only put credentials in a URL (HTTP
    Basic): /video.mp4 and /streaming take a token as the password, and challenge a caller
    without credentials; no other route takes it."""
    config = dataclasses.replace(config_factory(TALKING_HEAD), auth=AuthConfig(enabled=True))
    client = await app_client(config)
    _, token = await client.server.app[AUTH].create_token("viewer", "player")
    refused = await client.get("/video.mp4")
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith('Basic realm="facestream"')
    def basic(password: str) -> dict[str, str]:
        pair = base64.b64encode(f"player:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    resp = await client.get("/faces", headers=basic(token))  # only where a route declares it
    assert resp.status == 401 and "WWW-Authenticate" not in resp.headers
    resp = await client.get("/streaming", headers=basic("not-a-token"))
    assert resp.status == 401
    resp = await client.get("/streaming", headers=basic(token))
    assert resp.status == 200 and (await read_part(resp))[:2] == b"\xff\xd8"
    resp.close()

    def decoded() -> int:
        """FFmpeg (inside VLC, and Home Assistant's stream) reading the URL."""
        url = f"http://player:{token}@127.0.0.1:{client.port}/video.mp4"
        with av.open(url, timeout=10) as container:
            for n, _ in enumerate(container.decode(video=0), 1):
                if n == 5:
                    return n
        return 0

    assert await asyncio.to_thread(decoded) == 5


# -- an H.264 camera, passed through ---------------------------------------------------------


@pytest.fixture(scope="module")
def camera_720p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspCamera]:
    """A 1280x720 H.264 RTSP camera (High profile, a keyframe a second, no B-frames), which
    fits video.max_side: 3 s of the talking head, her face about 160 px wide."""
    clip = make_clip(tmp_path_factory.mktemp("rtsp") / "720p.mp4", 1280, 720, 160,
                     seconds=3.0)
    with rtsp_camera(clip) as served:
        yield served


def camera_codec(camera: RtspCamera) -> str:
    """The RFC 6381 codec of the camera's H.264 (from the clip's avcC)."""
    with av.open(str(camera.clip.path)) as container:
        avcc = container.streams.video[0].codec_context.extradata
    return "avc1." + avcc[1:4].hex().upper()


async def test_an_h264_camera_is_passed_through_and_a_joiner_starts_at_once(
        app_client: Any, config_factory: Callable[..., Config], camera_720p: RtspCamera
) -> None:
    """Its own H.264 (High profile, not our baseline), nothing encoded; a viewer joining
    mid-GOP gets the frames since the camera's last keyframe at once, from that keyframe;
    the faces with each frame in the passed-through picture's pixels (the MJPEG stream,
    and so the boxes, are scaled to camera.max_side = 640: twice as small)."""
    config = config_factory(camera_720p.url)
    config = dataclasses.replace(config, camera=dataclasses.replace(config.camera,
                                                                    max_side=640))
    client = await app_client(config)
    video = client.server.app[CAMERAS].first.video

    async def measured() -> Any:
        cams = (await (await client.get("/cameras")).json())["cameras"]
        passed = cams[0]["video_passthrough"] and cams[0]["keyframe_interval_s"]
        return cams[0] if passed else None

    status = await wait_for(measured, 20, 0.2)  # live, passed through, two keyframes seen
    assert 0.8 <= status["keyframe_interval_s"] <= 1.3  # one a second, as the clip has them
    assert not video.running and video.feed.muxer is None  # nobody watches: nothing muxed

    first_viewer = asyncio.create_task(watch(client, 2.0))
    await asyncio.sleep(0.6)  # into the camera's GOP
    messages, init, fragments, first = await watch(client, 1.0)
    assert first < 0.5  # no waiting for the camera's next keyframe
    assert messages[0]["type"] == "init" and messages[0]["passthrough"] is True
    assert messages[0]["codec"] == codec_string(init) == camera_codec(camera_720p)
    assert messages[0]["codec"].startswith("avc1.64")  # High, as the camera sends it
    assert messages[0]["size"] == [1280, 720]
    assert 0.8 <= messages[0]["keyframe_interval_s"] <= 1.3
    assert len(decode(init, fragments[:1])) == 1  # the first fragment decodes on its own
    frames = decode(init, fragments)
    assert len(frames) >= len(fragments) - 1 >= 20 and frames[0].shape == (720, 1280, 3)
    timed = [m for m in messages if m["type"] == "frame"]
    assert all(b["t"] > a["t"] for a, b in zip(timed, timed[1:]))
    # The GOP given at once is marked (the player plays on from its end), then live frames.
    bursts = [m.get("burst", False) for m in timed]
    assert bursts == sorted(bursts, reverse=True) and not bursts[-1]
    boxed = [m for m in timed if m["faces"]]
    assert len(boxed) >= len(timed) * 0.8
    assert {tuple(m["size"]) for m in boxed} == {(1280, 720)}
    # Her face is about 160 px wide in the camera's picture (80 in the MJPEG stream's).
    widths = sorted(max(f["box"][2] for f in m["faces"]) for m in boxed)
    assert 110 < widths[len(widths) // 2] < 260, widths
    assert all(0 <= f["box"][0] < 1280 - f["box"][2] for m in boxed for f in m["faces"])

    first_messages, first_init, first_fragments, _ = await first_viewer
    assert first_init == init  # one muxer, shared
    assert len(decode(first_init, first_fragments)) >= len(first_fragments) - 1 >= 40
    full = video.tiers[FULL]
    assert full.frames_encoded == 0 and video.feed.frames_passed >= len(first_fragments)
    counted = metric_values(await (await client.get("/metrics")).text())
    assert counted['facestream_video_frames_total{camera="camera",how="passthrough"}'] >= \
        len(first_fragments) - 30  # (the GOP a joiner is given is not counted again)
    assert 'facestream_video_frames_total{camera="camera",how="full"}' not in counted
    await wait_for(lambda: not video.running and video.feed.muxer is None, 5)

    assert await mp4_frames(client, 200_000) >= 3  # for other players: the same
    assert full.frames_encoded == 0


def test_each_frame_is_encoded_into_its_own_fragment_at_once() -> None:
    """The encoder hands each frame's fragment back from its own call (zerolatency, and a
    muxer that does not wait for the next frame): nothing sits a frame period behind. The
    fragments, scaled to the encoder's size, play back in order with their own times."""
    photo = cv2.imread(str(OBAMA))
    encoder = Encoder(320, 240, 500, "ultrafast")
    fragments = []
    for i in range(5):
        image = np.roll(photo, 8 * i, axis=1)  # moving, so each frame has something to say
        (fragment,) = encoder.encode(image, 1000 + i * 3600, i == 0)
        assert fragment.t == (1000 + i * 3600) / 90_000 and fragment.keyframe == (i == 0)
        fragments.append(fragment.data)
    assert encoder.init is not None and encoder.codec == codec_string(encoder.init)
    with av.open(io.BytesIO(encoder.init + b"".join(fragments)), format="mp4") as container:
        frames = [(f.width, f.height, round(f.pts)) for f in container.decode(video=0)]
    assert frames == [(320, 240, 1000 + i * 3600) for i in range(5)]


def test_an_h264_file_is_passed_through_bit_exact(camera_720p: RtspCamera) -> None:
    """A file keeps H.264 length-prefixed (avcC): its packets are turned into Annex B with
    SPS and PPS before each keyframe, and muxed as they are: what a viewer decodes is, pixel
    for pixel, what the capture decoded (nothing was encoded again)."""
    reader = AvReader.open(str(camera_720p.clip.path), None)
    assert reader is not None and reader.format is not None
    assert (reader.format.codec, reader.format.b_frames) == ("h264", False)
    reader.keep_packets()
    samples = [reader.read() for _ in range(30)]
    reader.release()
    muxer = Passthrough(1280, 720, reader.format.extradata, reader.fps)
    fragments = []
    for i, sample in enumerate(samples):
        assert sample is not None and sample.data is not None
        muxed = muxer.mux(sample.data, i * 3600, sample.keyframe)
        assert len(muxed) == 1  # each packet's fragment at once: no frame waits for the next
        fragments += muxed
    muxer.close()
    assert muxer.init is not None and muxer.codec == camera_codec(camera_720p)
    assert [f.keyframe for f in fragments] == [s.keyframe for s in samples if s] \
        == [i % 25 == 0 for i in range(30)]
    data = io.BytesIO(muxer.init + b"".join(f.data for f in fragments))
    with av.open(data, format="mp4") as container:  # converted as the reader converts
        frames = [cv2.cvtColor(f.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
                  for f in container.decode(video=0)]
    assert len(frames) == 30
    for frame, sample in zip(frames, samples):
        assert sample is not None and sample.frame is not None
        assert np.array_equal(frame, sample.frame)


async def test_a_camera_whose_pictures_come_out_of_order_is_encoded_instead(
        tmp_path: Any) -> None:
    """Packets are timed as they come, so B-frames (pictures sent out of order) cannot be
    passed through. A stream that does not say it has them (has_b_frames 0) is caught by
    its own timestamps going back, and encoded from then on."""
    path = str(tmp_path / "bframes.mp4")
    head = cv2.resize(cv2.imread(str(OBAMA)), (320, 240))
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"bf": "2", "preset": "fast"}
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.roll(head, 4 * i, axis=1), format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    reader = AvReader.open(path, None)
    assert reader is not None and reader.format is not None and reader.format.b_frames
    said_none = dataclasses.replace(reader.format, b_frames=False)
    reader.keep_packets()
    video = VideoStream(FrameHub(), VideoConfig(), "cam")
    video.feed.source_opened(said_none)
    assert video.feed.source == said_none
    while (sample := reader.read()) is not None:
        if sample.data:
            video.feed.receive(SourcePacket(sample.data, sample.keyframe, time.monotonic(),
                                            said_none, (), 1.0, sample.source_t))
    reader.release()
    assert video.feed.source is None and not video.feed.accepts(said_none)
    await video.close()

"""H.264 live video (video.py): a websocket for the dashboard's player, and fragmented MP4
over HTTP for other players.

    GET /video, /cameras/{camera}/video          websocket: {"type": "init", "codec", "tier",
        "size"}, the init segment (binary), then per frame {"type": "frame", "t", "at",
        "size", "faces"} and its fragment (binary), from a keyframe on; {"type": "signal",
        "signal": false} while the camera sends nothing. Another init may come at any time
        (the other tier, or a new picture size): the player starts over with it.
        ``?ack=1``: the page acknowledges what it receives, ``{"type": "ack", "bytes": <the
        binary bytes received in all>}``, and has at most about half a second of what its
        link delivers on its way (video.WINDOW_S). ``?tier=low``: start on the low tier.
        A frame message without ``faces`` has those of the frame message before it.
    GET /video.mp4, /cameras/{camera}/video.mp4  the full tier as one fragmented MP4 file
        that never ends (VLC, ffplay, Home Assistant's generic camera as a stream source)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, Final

from aiohttp import WSMsgType, web

from ..appkeys import CONFIG, METRICS
from ..video import FULL, SEND_TIMEOUT_S, TIERS, VideoStream, Viewer
from .http import http_error, small_send_buffer
from .live import PREPARE_TIMEOUT_S, camera_of
from .routes import Role, Routes

routes = Routes()

#: The largest message a page may send (its acknowledgements are a few dozen bytes).
MAX_REPORT: Final = 1024
#: Kernel send buffer per video viewer (Linux doubles it): about half a second at 2 Mbit/s.
VIDEO_SNDBUF: Final = 64 * 1024


def _video_of(request: web.Request) -> VideoStream:
    if not request.app[CONFIG].video.enabled:
        raise http_error(404, "H.264 video is off (video.enabled); use the MJPEG stream")
    return camera_of(request).video


async def _feed(viewer: Viewer, send_str: object, send_bytes: object) -> None:
    """Send what ``viewer`` is given until it is closed or the peer stops reading."""
    while True:
        kind, item = await viewer.next()
        if kind == "close":
            return
        async with asyncio.timeout(SEND_TIMEOUT_S):
            if kind == "text":
                await send_str(item)  # type: ignore[operator]
            elif kind == "json":
                await send_str(json.dumps(item))  # type: ignore[operator]
            elif kind == "init":
                await send_bytes(item)  # type: ignore[operator]
            else:
                await send_bytes(item.data)  # type: ignore[operator]


async def send_video(ws: web.WebSocketResponse, data: bytes) -> None:
    """``data`` (H.264) as a binary message, never deflated: it does not shrink, and trying
    costs the server CPU for each viewer (10 viewers: 0.065 cores more at 640x480). RFC 7692
    lets any message of a deflate socket go uncompressed; aiohttp deflates all of them when
    the socket has deflate, deciding by its writer's ``compress``, so that is 0 meanwhile
    (nothing else sends on this socket: the feeder alone does, one message at a time)."""
    writer = getattr(ws, "_writer", None)
    deflating = getattr(writer, "compress", 0)
    if not deflating:
        await ws.send_bytes(data)
        return
    writer.compress = 0  # type: ignore[union-attr]
    try:
        await ws.send_bytes(data)
    finally:
        writer.compress = deflating  # type: ignore[union-attr]


@routes.get("/video", role=Role.VIEWER)
@routes.get("/cameras/{camera}/video", role=Role.VIEWER)
async def video_socket(request: web.Request) -> web.WebSocketResponse:
    video = _video_of(request)
    tier = request.query.get("tier", FULL)
    if tier not in TIERS:
        raise http_error(400, f"tier: expected one of {', '.join(TIERS)}, got {tier[:20]!r}")
    # The page only sends small acknowledgements: a larger message closes the socket.
    # Deflate, where the page offers it, is for the frames' messages (JSON, 5-10 times
    # smaller); the video goes as it is (send_video).
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_REPORT)
    async with asyncio.timeout(PREPARE_TIMEOUT_S):
        await ws.prepare(request)
    acks = request.query.get("ack") == "1"
    async with _watching(request, video, acks=acks, adaptive=True, tier=tier) as viewer:
        feeder = asyncio.create_task(_feed(viewer, ws.send_str, partial(send_video, ws)))
        try:
            # The page's acknowledgements; reading them also notices the close.
            reader = asyncio.create_task(_listen(ws, viewer))
            await asyncio.wait({feeder, reader}, return_when=asyncio.FIRST_COMPLETED)
            reader.cancel()
        except (ConnectionResetError, TimeoutError):
            pass
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError,
                                     TimeoutError):
                await feeder
    await ws.close()
    return ws


@contextlib.asynccontextmanager
async def _watching(request: web.Request, video: VideoStream, **how: Any
                    ) -> AsyncIterator[Viewer]:
    """A viewer of ``video`` for this (prepared) request (``how``: VideoStream.join's
    options), counted while it watches."""
    small_send_buffer(request, VIDEO_SNDBUF)  # a slow link pushes back within a second
    viewer = video.join(**how)
    request.app[METRICS].video_clients.inc()
    try:
        yield viewer
    finally:
        await video.leave(viewer)
        request.app[METRICS].video_clients.dec()


async def _listen(ws: web.WebSocketResponse, viewer: Viewer) -> None:
    """The page's acknowledgements: ``{"type": "ack", "bytes": <binary bytes received>}``."""
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            report = json.loads(msg.data)
            total = report["bytes"] if report.get("type") == "ack" else None
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        if isinstance(total, int) and not isinstance(total, bool):
            viewer.ack(total)


@routes.get("/video.mp4", role=Role.VIEWER, basic_auth=True)
@routes.get("/cameras/{camera}/video.mp4", role=Role.VIEWER, basic_auth=True)
async def video_file(request: web.Request) -> web.StreamResponse:
    video = _video_of(request)
    resp = web.StreamResponse(headers={"Content-Type": "video/mp4",
                                       "Cache-Control": "no-cache, no-store"})
    await resp.prepare(request)

    async def no_text(_: object) -> None:
        return None

    async with _watching(request, video) as viewer:
        try:
            await _feed(viewer, no_text, resp.write)
        except (ConnectionResetError, TimeoutError):
            if request.transport is not None:
                request.transport.abort()
    return resp

"""What the cameras see now: the MJPEG stream, who is in view (GET /hash, the websocket,
GET /people) and the latest arrivals and departures (GET /events). Each reads state the
capture and recognition lanes keep; none does image work."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from ..appkeys import CAMERAS, METRICS, POOL
from ..cameras import Camera, CameraError
from ..hub import wall_clock
from .http import http_error, int_query, shown, small_send_buffer
from .routes import Role, Routes

routes = Routes()


BOUNDARY: Final = "facestreamframe"
STREAM_WRITE_TIMEOUT_S: Final = 10.0
#: Kernel send buffer per stream viewer (Linux doubles it): room for several frames, enough for
#: 25 fps over a 100 ms path, instead of autotuning's 4 MiB that a viewer who stops reading
#: would make the server fill, frame by frame, before its write blocks.
STREAM_SNDBUF: Final = 256 * 1024
#: A websocket handshake that does not complete in this long is dropped.
PREPARE_TIMEOUT_S: Final = 10.0


@routes.get("/streaming", role=Role.VIEWER, basic_auth=True)
@routes.get("/cameras/{camera}/streaming", role=Role.VIEWER, basic_auth=True)
async def streaming(request: web.Request) -> web.StreamResponse:
    """MJPEG: every viewer gets the newest shared JPEG at its own pace, skipping what it missed."""
    camera = camera_of(request)
    hub = camera.hub
    metrics = request.app[METRICS]
    resp = web.StreamResponse(
        headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-cache, no-store, must-revalidate",
            "Pragma": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    small_send_buffer(request, STREAM_SNDBUF)
    metrics.stream_clients.inc()
    camera.mjpeg_viewers += 1  # the capture encodes JPEGs from its next frame on
    seen = 0
    try:
        while True:
            packet = await hub.next(seen)
            if packet is None:
                break
            seen = packet.seq
            if not packet.jpeg:
                continue  # captured before anybody wanted JPEGs
            # X-Timestamp: the frame's wall-clock capture time, for a client to measure its
            # latency (multipart readers pass over headers they do not know).
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(packet.jpeg)}\r\n"
                f"X-Timestamp: {wall_clock(packet.captured_at):.3f}\r\n\r\n"
            ).encode("ascii")
            async with asyncio.timeout(STREAM_WRITE_TIMEOUT_S):  # a viewer that stopped reading
                await resp.write(head + packet.jpeg + b"\r\n")
    except ConnectionResetError:
        pass
    except TimeoutError:
        # Stopped reading: drop it now. A plain close would wait, forever, for the frames
        # already queued for it to be read.
        if request.transport is not None:
            request.transport.abort()
    finally:
        metrics.stream_clients.dec()
        camera.mjpeg_viewers -= 1
    return resp


def recognizer_state(app: web.Application) -> str:
    """"ok", or "restarting" while the worker pool is replaced after a crash (who is in
    view is then not being updated)."""
    pool = app.get(POOL)
    return "restarting" if pool is not None and pool.restarting else "ok"


def camera_of(request: web.Request) -> Camera:
    """The camera a request is about: ``/cameras/{camera}/...``, or the first camera."""
    name = request.match_info.get("camera")
    cameras = request.app[CAMERAS]
    try:
        camera = cameras.first if name is None else cameras.get(name)
    except CameraError as exc:
        raise http_error(503, str(exc)) from None
    if camera is None:
        raise http_error(404, f"no camera named {name!r} (GET /cameras lists them)")
    return camera


@routes.get("/hash", role=Role.VIEWER)
@routes.get("/cameras/{camera}/hash", role=Role.VIEWER)
async def hash_state(request: web.Request) -> web.Response:
    return web.json_response({**camera_of(request).presence.snapshot.to_json(),
                              "recognizer": recognizer_state(request.app)})


@routes.get("/hash/{hash}/crop", role=Role.VIEWER)
@routes.get("/cameras/{camera}/hash/{hash}/crop", role=Role.VIEWER)
async def face_in_view_crop(request: web.Request) -> web.Response:
    """The latest crop of a face in view (JPEG), cut by the worker from the camera's frame,
    not from the stream with boxes and names drawn on it; 404 once it is gone."""
    wanted = request.match_info["hash"]
    live = camera_of(request).presence.live_face(wanted)
    images = None if live is None else (live.latest_images or live.first_images)
    if images is None or images.crop is None:
        raise http_error(404, f"no face {shown(wanted)} in view")
    return web.Response(body=images.crop, content_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})


@routes.get("/ws", role=Role.VIEWER)
@routes.get("/cameras/{camera}/ws", role=Role.VIEWER)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    async with asyncio.timeout(PREPARE_TIMEOUT_S):
        await ws.prepare(request)
    camera = camera_of(request)
    presence = camera.presence
    await camera.broadcaster.serve(ws, lambda: presence.snapshot, request.transport)
    return ws


@routes.get("/people", role=Role.VIEWER)
async def people_in_view(request: web.Request) -> web.Response:
    """Who is in view anywhere: each face once, with the cameras that see it."""
    return web.json_response({"people": request.app[CAMERAS].people()})


@routes.get("/events", role=Role.VIEWER)
async def events(request: web.Request) -> web.Response:
    """Arrivals and departures on every camera, newest first: ``limit`` (at most
    ``MAX_EVENTS``; each camera keeps its latest 200)."""
    limit = max(1, min(int_query(request, "limit", MAX_EVENTS), MAX_EVENTS))
    return web.json_response({"events": request.app[CAMERAS].recent_events()[:limit]})


#: GET /events answers at most this many, whatever the number of cameras.
MAX_EVENTS: Final = 200

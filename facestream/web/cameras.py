"""The cameras: list them, add one while the server runs, remove one."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CAMERAS, CONFIG
from ..cameras import CameraError
from ..capture import api_source_problem
from ..config import ConfigError, check_camera, parse_cameras
from .http import error, json_body
from .routes import Role, Routes

routes = Routes()


@routes.get("/cameras", role=Role.VIEWER)
async def list_cameras(request: web.Request) -> web.Response:
    return web.json_response({"cameras": [c.status() for c in request.app[CAMERAS]]})


@routes.post("/cameras", role=Role.ADMIN)
async def add_camera(request: web.Request) -> web.Response:
    """JSON ``{"name", "source", ...}`` (any [camera] key): start serving another camera.
    It lasts until the server stops; add it to config.toml to keep it."""
    body = await json_body(request, '{"name": ..., "source": ...}')
    try:
        (config,) = parse_cameras([body], request.app[CONFIG].camera)
        check_camera(config)
    except ConfigError as exc:
        return error(400, str(exc).replace("cameras[0].", "").replace("camera.", ""))
    problem = api_source_problem(config.source, request.app[CONFIG].server.api_camera_files)
    if problem is not None:
        return error(400, problem)
    try:
        camera = await request.app[CAMERAS].add(config)
    except CameraError as exc:
        return error(409, str(exc))
    return web.json_response(camera.status(), status=201)


@routes.delete("/cameras/{camera}", role=Role.ADMIN)
async def remove_camera(request: web.Request) -> web.Response:
    name = request.match_info["camera"]
    try:
        await request.app[CAMERAS].remove(name)
    except CameraError as exc:
        return error(404 if name not in request.app[CAMERAS] else 409, str(exc))
    return web.json_response({"removed": name})

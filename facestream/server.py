"""The composition root: ``create_app(config)`` wires the pieces; it handles no request.

Long-lived resources each have one cleanup context (created in order, closed in reverse):
gallery (SQLite writer thread) -> accounts -> worker pool -> live pipeline (capture
threads, recognition lanes). The handlers live in ``facestream/web/``, one module per
resource, each route declaring who may use it; ``setup_routes`` puts them all on the app.
Handlers never run detection, embedding or JPEG work themselves: uploads go to the worker
pool, the stream serves JPEGs the capture encoded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from .accounts import Auth
from .appkeys import (
    AUTH,
    CAMERAS,
    CONFIG,
    EVENTS,
    GALLERY,
    HISTORY,
    METRICS,
    MQTT,
    POOL,
    ROUTE_ACCESS,
    UPLOADS,
    WEBHOOKS,
)
from .cameras import Cameras
from .config import Config
from .events import Events
from .gallery_types import ModelMismatch
from .history import History
from .limits import UploadGate
from .metrics import Metrics
from .storage import Gallery
from .web.access import access_middleware
from .web.accounts import routes as account_routes
from .web.cameras import routes as camera_routes
from .web.faces import routes as face_routes
from .web.history import routes as history_routes
from .web.http import body_deadline, json_errors, security_headers
from .web.live import routes as live_routes
from .web.ops import routes as ops_routes
from .web.pages import revalidate_static
from .web.pages import routes as page_routes
from .web.routes import RouteAccess, Routes
from .web.uploads import limit_words, upload_limit
from .web.uploads import routes as upload_routes
from .web.video import routes as video_routes
from .workers import PoolSettings, WorkerPool

#: How often the gallery file is checked for changes made by other processes.
GALLERY_POLL_S: Final = 1.0
#: Every handler module's route table.
ROUTE_TABLES: Final[tuple[Routes, ...]] = (
    page_routes, account_routes, live_routes, camera_routes, upload_routes, face_routes,
    history_routes, ops_routes, video_routes)


# -- lifecycle ------------------------------------------------------------------------------


async def _gallery_ctx(app: web.Application) -> AsyncIterator[None]:
    gallery = await Gallery.for_config(app[CONFIG])
    app[GALLERY] = gallery
    app[EVENTS].follow(gallery)
    watcher = asyncio.create_task(gallery.watch(GALLERY_POLL_S))
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await gallery.close()


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Accounts live in the gallery database; the first start creates an admin and shows its
    password once, on the console (never in a log)."""
    cfg = app[CONFIG].auth
    auth = Auth(app[GALLERY], cfg.session_days)
    await auth.ensure_schema()
    if cfg.enabled and (password := await auth.first_admin()) is not None:
        print(f"\nfacestream: created the first account: user 'admin', password "
              f"{password}\n  (shown only now; change it with `python -m facestream users "
              f"passwd admin`, add others with `users add`)\n", file=sys.stderr, flush=True)
    app[AUTH] = auth
    yield


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    history = History(app[GALLERY], app[CONFIG].history)
    await app[EVENTS].start(history)
    app[HISTORY] = history
    yield
    await app[EVENTS].stop(history)  # ends the visits under way


async def _mqtt_ctx(app: web.Application) -> AsyncIterator[None]:
    """Publish to the MQTT broker (mqtt.url): presence, visits, people, discovery."""
    from . import __version__
    from .mqtt import MqttBridge

    cfg, gallery = app[CONFIG], app[GALLERY]
    bridge = MqttBridge(cfg.mqtt, __version__, app[METRICS], gallery.list)
    await app[EVENTS].start(bridge)
    app[MQTT] = bridge
    yield
    await app[EVENTS].stop(bridge)


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Signed POSTs of visits, hash changes and gallery changes to each [[webhooks]] URL."""
    from .webhooks import Webhooks

    hooks = Webhooks(app[CONFIG].webhooks, app[METRICS])
    await app[EVENTS].start(hooks)
    app[WEBHOOKS] = hooks
    yield
    await app[EVENTS].stop(hooks)


def _pool_ctx(shared: WorkerPool | None) -> Callable[[web.Application], AsyncIterator[None]]:
    """The worker processes: the app's own, or ``shared`` (started by the caller, which
    closes it: tests run many apps on one pool, since starting one loads the models)."""

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        if shared is not None:
            wanted = PoolSettings.from_config(app[CONFIG], server=True)
            if shared.settings != wanted:
                raise ValueError(f"the shared pool runs {shared.settings}, the config asks "
                                 f"for {wanted}")
            shared.adopt()
            app[POOL] = shared
            yield
            return
        pool = WorkerPool(PoolSettings.from_config(app[CONFIG], server=True))
        await pool.start()
        app[POOL] = pool
        yield
        await asyncio.to_thread(pool.close)

    return pool_ctx


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cameras and their recognition lanes: frames flow capture -> hub -> pool
    (shared fairly) -> Presence, per camera."""
    import cv2

    # Each camera's reader, JPEG and video threads do their own OpenCV calls, each a few
    # milliseconds: OpenCV's thread pool would only add threads spinning beside them.
    cv2.setNumThreads(1)
    cameras = app[CAMERAS]
    cameras.start(app[POOL])
    yield
    await cameras.stop()


async def _on_shutdown(app: web.Application) -> None:
    for camera in app[CAMERAS]:
        camera.hub.close()  # ends every MJPEG response
        await camera.broadcaster.close_all()


async def _routes_declared(app: web.Application) -> None:
    """Refuse to start with a route that says nothing of who may use it, also one added
    after ``create_app`` (which checks its own)."""
    app[ROUTE_ACCESS].check(app)


# -- the application ------------------------------------------------------------------------


def setup_routes(app: web.Application) -> None:
    """Every handler module's routes, each recorded with its declaration of who may use it
    (``app[ROUTE_ACCESS]``, which the access middleware reads)."""
    declared = app[ROUTE_ACCESS] = RouteAccess()
    for table in ROUTE_TABLES:
        table.add_to(app, declared)


def create_app(config: Config, live: bool = True, pool: WorkerPool | None = None
               ) -> web.Application:
    """The application. ``live=False`` leaves the camera and recognition lanes out (the
    REST API, the gallery and history work; nobody is ever in view): for tests and tools.
    ``pool``: started workers to use (and leave running) instead of starting its own.
    Raises ``UndeclaredRoute`` when a route does not say who may use it."""
    # Base64 bodies are 4/3 of the image; the exact limit is checked after decoding.
    max_body = int(upload_limit(config) * 4 / 3) + 64 * 1024
    guard = access_middleware(lambda: app[AUTH], config.server, config.auth)
    app = web.Application(client_max_size=max_body, middlewares=[
        json_errors(limit_words(config)), guard, body_deadline(config.server.request_timeout_s)])
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(revalidate_static)
    metrics_ = Metrics()
    app[CONFIG] = config
    app[METRICS] = metrics_
    app[UPLOADS] = UploadGate(config.server.uploads_per_minute, config.server.upload_queue)
    app[CAMERAS] = Cameras(
        config, metrics_, gallery=lambda: app[GALLERY].index,
        unknowns=lambda: app[HISTORY].unknown_index if HISTORY in app else None)
    # Everything that happens, to every output (the cameras' live state first; the others
    # connect as their contexts start them).
    app[EVENTS] = Events(app[CAMERAS])
    app[EVENTS].connect(app[CAMERAS])
    contexts = [_gallery_ctx, _auth_ctx, _history_ctx, _pool_ctx(pool)]
    if config.mqtt.url:
        contexts.append(_mqtt_ctx)
    if config.webhooks:
        contexts.append(_webhooks_ctx)
    app.cleanup_ctx.extend([*contexts, _live_ctx] if live else contexts)
    app.on_shutdown.append(_on_shutdown)
    setup_routes(app)
    app[ROUTE_ACCESS].check(app)
    app.on_startup.insert(0, _routes_declared)  # before the contexts start anything
    return app


__all__ = ["ModelMismatch", "create_app"]

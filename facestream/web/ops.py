"""For operators: the health check and the Prometheus metrics."""

from __future__ import annotations

import math

from aiohttp import web

from ..appkeys import CAMERAS, CONFIG, GALLERY, METRICS, MQTT, POOL, WEBHOOKS
from ..metrics import CONTENT_TYPE
from .access import PRINCIPAL
from .live import recognizer_state
from .routes import Role, Routes

routes = Routes()


@routes.get("/healthz", role=Role.OPEN, identify=True)
async def healthz(request: web.Request) -> web.Response:
    """Open to all, for health checks; only to a viewer or an admin (or anybody with
    accounts off) does it say more than ok or degraded: sources, counters and receivers
    would tell an anonymous poller what the server sees and when someone arrives."""
    app = request.app
    recognizer = recognizer_state(app)
    storage = app[GALLERY].db.status()
    status = "ok" if recognizer == "ok" and storage["state"] == "ok" else "degraded"
    if PRINCIPAL not in request:
        return web.json_response({"status": status})
    cfg = app[CONFIG]
    first = app[CAMERAS].first.capture if len(app[CAMERAS]) else None
    return web.json_response(
        {
            "status": status,
            "recognizer": recognizer,
            "camera": first.status() if first is not None else None,
            "model": cfg.recognition.model,
            "detector": cfg.recognition.detector,
            "threshold": cfg.recognition.threshold(),
            "identify_threshold": _finite(app[GALLERY].index.policy.identify_threshold(
                app[GALLERY].index.comparisons)),
            "stranger_far": cfg.recognition.stranger_far,
            "workers": app[POOL].size,
            "upload_workers": app[POOL].settings.upload_workers,
            "worker_restarts": app[POOL].restarts,
            "gallery": app[GALLERY].count,
            "storage": storage,
            "webhooks": app[WEBHOOKS].status() if WEBHOOKS in app else [],
            "mqtt": app[MQTT].status() if MQTT in app else {"state": "off"},
        }
    )


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


@routes.get("/metrics", role=Role.VIEWER, open_if=lambda auth: auth.metrics_open)
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    m.gallery_size.set(request.app[GALLERY].count)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})

"""Typed application keys, all in one place."""

from __future__ import annotations

from aiohttp import web

from .accounts import Auth
from .cameras import Cameras
from .config import Config
from .events import Events
from .history import History
from .limits import UploadGate
from .metrics import Metrics
from .mqtt import MqttBridge
from .storage import Gallery
from .web.routes import RouteAccess
from .webhooks import Webhooks
from .workers import WorkerPool

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
GALLERY = web.AppKey("gallery", Gallery)
POOL = web.AppKey("pool", WorkerPool)
HISTORY = web.AppKey("history", History)
AUTH = web.AppKey("auth", Auth)
CAMERAS = web.AppKey("cameras", Cameras)
EVENTS = web.AppKey("events", Events)
MQTT = web.AppKey("mqtt", MqttBridge)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
UPLOADS = web.AppKey("uploads", UploadGate)
#: Who may use each route (each declares it in its route table; see web/routes.py).
ROUTE_ACCESS = web.AppKey("route_access", RouteAccess)

"""Typed application keys, all in one place."""

from __future__ import annotations

from aiohttp import web

from .auth import Auth
from .capture import Capture
from .config import Config
from .fanout import Broadcaster
from .history import History
from .hub import FrameHub
from .metrics import Metrics
from .mqtt import MqttBridge
from .presence import Presence
from .storage import Gallery
from .webhooks import Webhooks
from .workers import WorkerPool

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
GALLERY = web.AppKey("gallery", Gallery)
POOL = web.AppKey("pool", WorkerPool)
HUB = web.AppKey("hub", FrameHub)
PRESENCE = web.AppKey("presence", Presence)
BROADCASTER = web.AppKey("broadcaster", Broadcaster)
HISTORY = web.AppKey("history", History)
CAPTURE = web.AppKey("capture", Capture)
AUTH = web.AppKey("auth", Auth)
MQTT = web.AppKey("mqtt", MqttBridge)
WEBHOOKS = web.AppKey("webhooks", Webhooks)

"""Typed application keys, all in one place."""

from __future__ import annotations

from aiohttp import web

from .capture import Capture
from .config import Config
from .hub import FrameHub
from .metrics import Metrics
from .pipeline import LivePipeline
from .state import LiveState
from .storage import Gallery
from .workers import WorkerPool

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
GALLERY = web.AppKey("gallery", Gallery)
POOL = web.AppKey("pool", WorkerPool)
HUB = web.AppKey("hub", FrameHub)
STATE = web.AppKey("state", LiveState)
PIPELINE = web.AppKey("pipeline", LivePipeline)
CAPTURE = web.AppKey("capture", Capture)

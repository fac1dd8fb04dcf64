"""``facestream [options]``: serve (the command run when no command word is given). The app is
server.py's ``create_app``; this module listens (TLS, connection limits), stops on SIGINT or
SIGTERM, and on SIGHUP applies the config file's cameras to the running server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, Final

from .. import __version__, weights
from ..config import Config, ConfigError
from ..db.disk import DB_FILE
from ..privacy import redact_source
from .common import SHARED, Command, add_shared, exists, load_config, new_gallery_note, prog

log = logging.getLogger("facestream")

USES: Final = SHARED
#: Seconds aiohttp keeps reading the rest of a body it answered early (408, 413) before closing.
LINGER_S: Final = 2.0
#: Connections the kernel queues for accept: a burst beyond aiohttp's 128 would wait for SYN
#: retries (1 s, 3 s, ...) and arrive in waves.
BACKLOG: Final = 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog(),
        description="Live face-recognition streaming server. Other commands: faces "
        "(list|add|enroll-dir|delete|export|import), reembed --model NAME, evaluate PATH, "
        "gallery (check|backup FILE|restore FILE|migrate --to URL), users, tokens, weights, "
        "import-pickle FILE; `COMMAND --help` describes each. --config, --data-dir, --model "
        "and --workers may come before or after a command and its action.",
    )
    p.add_argument("--version", action="version", version=f"facestream {__version__}")
    add_shared(p, USES)
    p.add_argument("--source", help="webcam index, video file, or rtsp/http(s) MJPEG URL")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--no-auth", action="store_true",
                   help="no accounts or tokens (auth.enabled = false; loopback only)")
    return p


def run(args: argparse.Namespace) -> int:
    def configured() -> Config:
        """The config as given: read at start, and again on SIGHUP."""
        config = load_config(
            args,
            camera__source=args.source,
            server__host=args.host,
            server__port=args.port,
            recognition__workers=args.workers,
            auth__enabled=False if args.no_auth else None,
        )
        if args.source is not None and config.cameras:
            # --source serves that one source: the single-camera case.
            config = dataclasses.replace(config, cameras=())
        return config

    return serve(configured(), args.log_level, configured)


def serve(config: Config, log_level: str = "INFO",
          reread: Callable[[], Config] | None = None) -> int:
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The worker pool checks its weights too, but only after the gallery is open: fail in
    # one line here before anything starts (or is created in the data dir).
    weights.provision()
    weights.check(config.recognition.model, config.recognition.detector)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional in spirit
        runner = asyncio.Runner()
    with runner:
        return runner.run(_serve(config, reread))


def _tls_context(cert: str, key: str) -> Any:
    """The server's TLS context, or ConfigError naming the file that cannot be used."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert / server.tls_key: cannot load {cert} with {key} "
                          f"({getattr(exc, 'strerror', None) or exc})") from None
    return context


async def _serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    from aiohttp import web

    from ..server import create_app
    from ..web.netguard import ConnectionLimiter, GuardedSite

    s = config.server
    tls = _tls_context(s.tls_cert, s.tls_key) if s.tls_cert else None
    app = create_app(config)
    # keepalive_timeout also closes connections whose headers never finish (aiohttp arms
    # it when a connection opens). After an answer to an unfinished body (408, 413) aiohttp
    # reads on for lingering_time so the client sees the answer: 2 s, not its default 10.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=s.keepalive_timeout_s,
                           lingering_time=LINGER_S)
    had_gallery = exists(config.data_path / DB_FILE)
    await runner.setup()  # gallery, workers, camera: a failure here is reported in one line
    if had_gallery is False and exists(config.data_path / DB_FILE):
        log.info("%s", new_gallery_note(config))
    host, port = s.host, s.port
    site = GuardedSite(runner, host, port, ConnectionLimiter(s.max_connections_per_client),
                       ssl_context=tls, backlog=BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    if reread is not None:
        def hangup() -> None:
            task = asyncio.create_task(_reload_cameras(app, config, reread))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
    log.info(
        "facestream %s serving %s://%s:%d (source %s, model %s, %d workers)",
        __version__, "https" if tls else "http", host, port, redact_source(config.camera.source),
        config.recognition.model, config.recognition.workers,
    )
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0


async def _reload_cameras(app: Any, running: Config, reread: Callable[[], Config]) -> None:
    """SIGHUP: apply the config file's [[cameras]] (or [camera]) to the running server."""
    from ..appkeys import CAMERAS

    try:
        config = reread()
    except ConfigError as exc:
        log.error("config reload: %s (nothing changed)", exc)
        return
    done = await app[CAMERAS].reload(config.camera_list)
    log.info("config reload: cameras %s", ", ".join(done) or "unchanged")
    if dataclasses.replace(config, camera=running.camera, cameras=()) != \
            dataclasses.replace(running, cameras=()):
        log.warning("config reload: only the cameras change while running; restart for the "
                    "other changes")


COMMAND: Final = Command("serve", USES, build_parser, run)

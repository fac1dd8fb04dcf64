"""What every HTTP handler shares: JSON errors (one middleware maps gallery refusals to their
statuses), request-body and parameter checks."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from .storage import AlreadyEnrolled, GalleryError, LastSample, NotFound

log = logging.getLogger("facestream.server")

HASH_RE: Final = re.compile(r"^[0-9a-f]{64}$")


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def http_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An exception that answers ``{"error": message, ...}`` with ``status``."""
    exc = web.HTTPException(text=None)
    exc.set_status(status)
    exc.text = error(status, message, **extra).text
    exc.content_type = "application/json"
    return exc


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error answers JSON ``{"error": ...}``: gallery refusals map to their statuses
    here, in one place; unexpected errors are logged, not leaked."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's own limit (on the raw body, which base64 makes 4/3 larger) names a size
        # nobody configured; say which setting it is.
        return error(413, f"the request is larger than {upload_limit(request)}")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return error(exc.status, exc.text or exc.reason or "error")
    except AlreadyEnrolled as exc:  # also BelongsToOther: the face is somebody else
        return error(409, str(exc), hash=exc.hash, name=exc.name)
    except NotFound as exc:
        return error(404, str(exc))
    except LastSample as exc:
        return error(409, str(exc))
    except GalleryError as exc:
        return error(400, str(exc))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error(500, "internal error; see the server log")


def upload_limit(request: web.Request) -> str:
    """The upload limit, as users configure it: ``server.max_upload_mb (N MiB)``."""
    from .appkeys import CONFIG

    return f"server.max_upload_mb ({request.app[CONFIG].server.max_upload_mb:g} MiB)"


async def json_body(request: web.Request, hint: str) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise http_error(400, f"request body is not valid JSON; send {hint}") from None
    if not isinstance(body, dict):
        raise http_error(400, f"send {hint}")
    return body


def hash_field(value: Any, what: str = "hash") -> str | None:
    """An optional 64-hex-digit face hash from a request, or HTTP 400."""
    if value is not None and not (isinstance(value, str) and HASH_RE.match(value)):
        raise http_error(400, f"{what} must be a 64-character hex string")
    return value

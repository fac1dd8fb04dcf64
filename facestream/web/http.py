"""What every HTTP handler shares: JSON errors (one middleware maps gallery refusals to their
statuses), request-body, form and parameter checks, the deadline on request bodies, and the
security headers of every response.

Nothing here knows the configuration: a limit or its wording is passed in by the caller."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError, InvalidHeader

from ..db.base import StorageError, StorageFull
from ..gallery_types import AlreadyEnrolled, GalleryError, LastSample, NameTaken, NotFound
from ..limits import Refused

log = logging.getLogger(__name__)

# \Z, not $: "$" also matches before a trailing newline, which would let "<hash>\n" through.
HASH_RE: Final = re.compile(r"\A[0-9a-f]{64}\Z")
#: Request bodies are flat objects; deeper JSON is refused (and the C parser's RecursionError
#: on absurd nesting is answered the same way).
MAX_JSON_DEPTH: Final = 32
#: Largest JSON request body: every JSON endpoint takes a few short fields (a login, a name,
#: a camera), so a body this size is already absurd; it is refused before it is read.
MAX_JSON_BODY: Final = 64 * 1024
#: Paging numbers above this are refused: SQLite integers are 64-bit.
MAX_QUERY_INT: Final = 2**63 - 1


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def retry_later(status: int, message: str, seconds: float) -> web.Response:
    """A 429 or 503 with Retry-After (whole seconds, at least 1)."""
    wait = max(1, math.ceil(seconds))
    refused = error(status, message, retry_after=wait)
    refused.headers["Retry-After"] = str(wait)
    return refused


def http_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An exception that answers ``{"error": message, ...}`` with ``status``."""
    exc = web.HTTPException(text=None)
    exc.set_status(status)
    exc.text = error(status, message, **extra).text
    exc.content_type = "application/json"
    return exc


Middleware = Callable[..., Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_errors(body_limit: str) -> Middleware:
    """Every error answers JSON ``{"error": ...}``: gallery refusals map to their statuses
    here, in one place; unexpected errors are logged, not leaked. ``body_limit`` names the
    request size limit as users configure it, for the 413 that aiohttp's own check raises."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            # aiohttp's own limit (on the raw body, which base64 makes 4/3 larger) names a
            # size nobody configured; say which setting it is.
            return refuse_unread(request, error(413, f"the request is larger than "
                                               f"{body_limit}"))
        except Refused as exc:  # an upload over its caller's or everybody's limit
            return refuse_unread(request, retry_later(exc.status, str(exc), exc.retry_after))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.content_type != "application/json":  # aiohttp's own, in plain text
                return refuse_unread(request, error(exc.status,
                                                    exc.text or exc.reason or "error"))
            return refuse_unread(request, web.Response(status=exc.status, text=exc.text,
                                                       content_type="application/json"))
        except AlreadyEnrolled as exc:  # also BelongsToOther: the face is somebody else
            return error(409, str(exc), hash=exc.hash, name=exc.name)
        except NameTaken as exc:  # whether it is the same person is the caller's to say
            first = exc.people[0]
            return error(409, str(exc), reason="name", hash=first.hash, name=first.name,
                         people=[{"hash": p.hash, "name": p.name, "created_at": p.created_at,
                                  "samples": len(p.samples), "thumbnail": p.to_json()[
                                      "thumbnail"]} for p in exc.people])
        except NotFound as exc:
            return error(404, str(exc))
        except LastSample as exc:
            return error(409, str(exc))
        except StorageError as exc:  # the disk, not the request: nothing was written
            log.error("%s %s: %s", request.method, request.path, exc)
            return error(507 if isinstance(exc, StorageFull) else 503, str(exc))
        except GalleryError as exc:
            return error(400, str(exc))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error(500, "internal error; see the server log")

    return errors


def refuse_unread(request: web.Request, response: web.Response) -> web.Response:
    """A refusal answered before the body was read: the connection is closed after it, so
    the rest of the body is neither read nor kept."""
    if request.body_exists and not request.content.is_eof():
        response.force_close()
    return response


async def json_body(request: web.Request, hint: str) -> dict[str, Any]:
    # Only a JSON content type: a page on another site can send text/plain or form bodies
    # without asking (no CORS preflight), never application/json.
    if request.content_type != "application/json":
        raise http_error(415, f"send Content-Type: application/json with {hint}")
    data = await _limited_body(request, MAX_JSON_BODY)
    try:
        body = json.loads(data.decode(request.charset or "utf-8"))
    except RecursionError:
        raise http_error(400, f"JSON nested too deep (more than {MAX_JSON_DEPTH} levels)") \
            from None
    except UnicodeDecodeError:
        raise http_error(400, f"request body is not {request.charset or 'utf-8'} text; "
                              f"send UTF-8 JSON: {hint}") from None
    except LookupError:  # charset=<not a text encoding Python knows>
        raise http_error(400, f"unknown charset {request.charset!r}; send UTF-8 JSON: "
                              f"{hint}") from None
    except ValueError:
        raise http_error(400, f"request body is not valid JSON; send {hint}") from None
    if not isinstance(body, dict):
        raise http_error(400, f"send {hint}")
    if (problem := _json_problem(body)) is not None:
        raise http_error(400, problem)
    return body


async def _limited_body(request: web.Request, limit: int) -> bytes:
    """The request body, or HTTP 413 as soon as it is known to exceed ``limit`` bytes: from
    Content-Length before anything is read, else while it arrives (chunked)."""
    too_large = http_error(413, f"the request body is larger than {limit // 1024} KiB, the "
                                "most a JSON request may send")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _json_problem(body: dict[str, Any]) -> str | None:
    """What makes a parsed body unusable although it is JSON: nesting deeper than
    ``MAX_JSON_DEPTH``, or a string with an unpaired surrogate (``"\\ud800"`` is valid JSON
    but not Unicode text: SQLite, UTF-8 and the HMAC of an email all fail on it).
    Walked with a stack, not recursion, so the walk itself cannot overflow."""
    stack: list[tuple[str, Any, int]] = [("a key", k, 1) for k in body]
    stack += [(f"field {shown(k)}", v, 1) for k, v in body.items()]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"JSON nested too deep (more than {MAX_JSON_DEPTH} levels)"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (f"{where} contains an unpaired surrogate "
                        f"(U+{ord(value[exc.start]):04X}); send valid Unicode text")
        elif isinstance(value, dict):
            stack += [(where, k, depth + 1) for k in value]
            stack += [(where, v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(where, v, depth + 1) for v in value]
    return None


def small_send_buffer(request: web.Request, size: int) -> None:
    """Give this connection a kernel send buffer of ``size`` bytes (Linux doubles it)
    instead of autotuning's megabytes: a client that reads slower than it is sent to pushes
    back at once, where the server can skip what it missed, not after the buffer filled."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def shown(raw: str, limit: int = 40) -> str:
    """A request value quoted in an error message: ``repr``-escaped, long ones cut."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "…")


def int_query(request: web.Request, key: str, default: int) -> int:
    """A whole number from 0 to ``MAX_QUERY_INT`` in the query string, or HTTP 400 naming
    ``key``. ASCII digits only: ``int()`` would also take ``1_000``, `` 5`` or ``٥``."""
    raw = request.query.get(key)
    if raw is None:
        return default
    negative = raw.startswith("-")
    digits = raw[1:] if negative else raw
    if not (digits.isascii() and digits.isdigit()):
        raise http_error(400, f"{key} must be a whole number, got {shown(raw)}")
    # Leading zeros off and the length compared first: int() refuses over 4300 digits.
    digits = digits.lstrip("0") or "0"
    if negative and digits != "0":
        raise http_error(400, f"{key} must not be negative, got {shown(raw)}")
    if len(digits) > len(str(MAX_QUERY_INT)) or int(digits) > MAX_QUERY_INT:
        raise http_error(400, f"{key} is too large (at most {MAX_QUERY_INT})")
    return int(digits)


def hash_field(value: Any, what: str = "hash") -> str | None:
    """An optional 64-hex-digit face hash from a request, or HTTP 400."""
    if value is not None and not (isinstance(value, str) and HASH_RE.match(value)):
        raise http_error(400, f"{what} must be a 64-character hex string")
    return value


#: Methods whose requests carry a body that must arrive in time.
_WITH_BODY: Final = {"POST", "PUT", "PATCH", "DELETE"}


def body_deadline(timeout_s: float) -> Middleware:
    """Requests with a body must be read and answered within ``timeout_s`` (a body shorter
    than its Content-Length would otherwise hold the connection for minutes)."""

    @web.middleware
    async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in _WITH_BODY:
            return await handler(request)
        try:
            async with asyncio.timeout(timeout_s):
                return await handler(request)
        except TimeoutError:
            late = web.json_response(
                {"error": f"the request did not arrive (and was not answered) within "
                          f"{timeout_s:g} s"}, status=408)
            late.force_close()  # the rest of that body is not worth waiting for
            return late

    return deadline


#: On every response. The pages load only their own scripts, styles and images (no inline
#: script can run, whatever a name holds), talk only to this server, and no other page may
#: frame them (clickjacking) or embed their images and streams.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
        "connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``SECURITY_HEADERS`` on a response, unless it sets its own (``on_response_prepare``)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# -- forms ----------------------------------------------------------------------------------


_NAMELESS_PART: Final = ("a part of the multipart form has no name (Content-Disposition: "
                         "form-data; name=...), or the body is truncated")
#: aiohttp's words for a broken multipart body (the start of its message), and ours.
_FORM_ERRORS: Final = (
    ("Reading after EOF", ("the multipart form is truncated: the body ends inside a part, "
                           "before the closing boundary")),
    ("Could not find starting boundary", ("the body does not start with the boundary that "
                                          "its Content-Type names")),
)
#: Our forms have two or three fields (the image, name, email); more parts are refused.
MAX_FORM_PARTS: Final = 16


async def multipart_form(request: web.Request, field: str) -> tuple[dict[str, str], bytes | None]:
    """A multipart form's text fields, and ``field`` as bytes when it came as a file or any
    part with a non-text type (a part with a text type is base64, left among the texts).

    Read part by part into memory (``client_max_size`` bounds the body), not with
    ``request.post()``: on a truncated body that leaves its temporary file open, and its
    errors cannot say which field is wrong. Text is decoded strictly, in the part's charset
    (UTF-8 unless it names another); every malformed body answers 400 saying what is wrong."""
    if not parse_mimetype(request.headers.get("Content-Type", "")).parameters.get("boundary"):
        raise http_error(400, "multipart/form-data without a boundary: send Content-Type: "
                              "multipart/form-data; boundary=...")
    texts: dict[str, str] = {}
    image: bytes | None = None
    seen: set[str] = set()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise http_error(400, "a part of the form is itself multipart; send plain fields")
            name = part.name
            if not name:
                raise http_error(400, _NAMELESS_PART)
            if name in seen:
                raise http_error(400, f"form field {shown(name)} is sent twice")
            if len(seen) == MAX_FORM_PARTS:
                raise http_error(400, f"the form has more than {MAX_FORM_PARTS} fields")
            seen.add(name)
            data = bytes(await part.read(decode=True))
            if request.content.total_bytes > request.client_max_size:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=request.client_max_size, actual_size=request.content.total_bytes)
            ctype = part.headers.get("Content-Type")
            textual = part.filename is None and (
                ctype is None or ctype.lower().startswith("text/"))
            if name == field and not textual:
                image = data
                continue
            if part.filename is not None:  # a file the form does not ask for
                continue
            charset = part.get_charset("utf-8") if textual else "utf-8"
            try:
                texts[name] = data.decode(charset)
            except UnicodeDecodeError:
                raise http_error(400, f"form field {shown(name)} is not valid {charset} text") \
                    from None
            except LookupError as exc:  # charset=<no text encoding: bogus, zlib, ...>
                raise http_error(400, f"form field {shown(name)} names an unusable charset "
                                      f"({exc})") from None
    except InvalidHeader:
        raise http_error(400, "a part of the multipart form has a malformed header line "
                              "(each must be 'Name: value')") from None
    except (ValueError, HttpProcessingError, RuntimeError) as exc:
        # aiohttp's multipart reader says what broke in ValueErrors (RuntimeError: an unknown
        # Content-Transfer-Encoding); the common ones in words, the rest as aiohttp puts it.
        text = str(exc)
        for start, message in _FORM_ERRORS:
            if text.startswith(start):
                raise http_error(400, message) from None
        raise http_error(400, f"the multipart form cannot be parsed: {text}") from None
    return texts, image

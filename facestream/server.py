"""The aiohttp application: ``create_app(config)`` wires the pieces; handlers read and format.

Long-lived resources each have one cleanup context (created in order, closed in reverse):
gallery (SQLite writer thread) -> worker pool -> live pipeline (capture threads, recognition
lanes). Handlers never run detection, embedding or JPEG work themselves: uploads go to the
worker pool, the stream serves JPEGs the capture encoded once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any, Final

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError, InvalidHeader

from . import auth as access
from . import history_views
from .appkeys import (
    AUTH,
    CAMERAS,
    CONFIG,
    GALLERY,
    HISTORY,
    METRICS,
    MQTT,
    POOL,
    UPLOADS,
    WEBHOOKS,
)
from .cameras import Camera, CameraError, Cameras
from .capture import api_source_problem
from .config import Config, ConfigError, check_camera, parse_cameras
from .gallery_types import GalleryError, Identity, LastSample, ModelMismatch, StoredImages
from .history import History
from .identity import face_hash
from .limits import Refused, UploadGate
from .metrics import CONTENT_TYPE, Metrics
from .netguard import body_deadline
from .presence import LiveFace
from .recognition import Face, ImageError, ambiguous
from .storage import Gallery
from .tracking import FaceView
from .webutil import (
    HASH_RE,
    MAX_QUERY_INT,
    error,
    hash_field,
    http_error,
    int_query,
    json_body,
    json_errors,
    retry_later,
    shown,
    upload_limit,
)
from .workers import PoolBusy, PoolSettings, WorkerCrashed, WorkerPool

log = logging.getLogger(__name__)

BOUNDARY: Final = "facestreamframe"
STREAM_WRITE_TIMEOUT_S: Final = 10.0
#: Kernel send buffer per stream viewer (Linux doubles it): room for several frames, enough for
#: 25 fps over a 100 ms path, instead of autotuning's 4 MiB that a viewer who stops reading
#: would make the server fill, frame by frame, before its write blocks.
STREAM_SNDBUF: Final = 256 * 1024
#: A websocket handshake that does not complete in this long is dropped.
PREPARE_TIMEOUT_S: Final = 10.0
#: How often the gallery file is checked for changes made by other processes.
GALLERY_POLL_S: Final = 1.0
_DATA_URL_RE: Final = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


# -- pages and live state -------------------------------------------------------------------

#: On every response. The pages load only their own scripts, styles and images (no inline
#: script can run, whatever a name holds), talk only to this server, and no other page may
#: frame them (clickjacking) or embed their images and streams.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _page(request: web.Request, page: str, assets: tuple[str, ...]) -> web.Response:
    """A static page whose stylesheet and script are linked with a hash of their content
    (``?v=...``), so a browser never runs a cached script against a newer server."""
    html = resources.files("facestream").joinpath(f"static/{page}").read_text("utf-8")
    static = request.app.router["static"]
    for name in assets:
        versioned = static.url_for(filename=name, append_version=True)
        html = html.replace(f'"/static/{name}"', f'"{versioned}"')
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.Response:
    """The dashboard."""
    return _page(request, "index.html", ("style.css", "app.js"))


# -- accounts -------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    return _page(request, "login.html", ("style.css", "login.js"))


async def login(request: web.Request) -> web.Response:
    """``{"username", "password"}`` -> a session cookie (HttpOnly, SameSite=Strict, Secure
    over TLS) and ``{"user", "role"}``; 401 wrong, 429 too many failures (Retry-After)."""
    body = await json_body(request, '{"username": ..., "password": ...}')
    name, password = body.get("username"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return error(400, 'send {"username": ..., "password": ...}')
    if not request.app[CONFIG].auth.enabled:
        return error(400, "authentication is off (auth.enabled = false): nothing to log in to")
    client = request.remote or "?"
    try:
        session, who = await request.app[AUTH].login(name, password, client)
    except access.LoginRefused as exc:
        if exc.retry_after > 0:
            return retry_later(503 if exc.busy else 429, str(exc), exc.retry_after)
        return error(401, str(exc))
    resp = web.json_response({"user": who.name, "role": who.role})
    resp.set_cookie(access.COOKIE, session, httponly=True, samesite="Strict",
                    secure=request.secure, path="/",
                    max_age=int(request.app[CONFIG].auth.session_days * 86400))
    await request.app[AUTH].audit(who.label, "login", 200)
    return resp


async def logout(request: web.Request) -> web.Response:
    session = request.cookies.get(access.COOKIE)
    if session:
        await request.app[AUTH].logout(session)
    resp = web.json_response({"logged_out": True})
    resp.del_cookie(access.COOKIE, path="/")
    return resp


async def me(request: web.Request) -> web.Response:
    who = request[access.PRINCIPAL]
    return web.json_response({"user": who.name, "kind": who.kind, "role": who.role,
                              "auth": request.app[CONFIG].auth.enabled})


async def audit_log(request: web.Request) -> web.Response:
    """The latest changes made through the API (or by logins), newest first."""
    return web.json_response({"audit": await request.app[AUTH].audit_log()})


async def streaming(request: web.Request) -> web.StreamResponse:
    """MJPEG: every viewer gets the newest shared JPEG at its own pace, skipping what it missed."""
    hub = _camera(request).hub
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
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
    metrics.stream_clients.inc()
    seen = 0
    try:
        while True:
            packet = await hub.next(seen)
            if packet is None:
                break
            seen = packet.seq
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(packet.jpeg)}\r\n\r\n"
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
    return resp


def _recognizer(app: web.Application) -> str:
    """"ok", or "restarting" while the worker pool is replaced after a crash (who is in
    view is then not being updated)."""
    pool = app.get(POOL)
    return "restarting" if pool is not None and pool.restarting else "ok"


def _camera(request: web.Request) -> Camera:
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


async def hash_state(request: web.Request) -> web.Response:
    return web.json_response({**_camera(request).presence.snapshot.to_json(),
                              "recognizer": _recognizer(request.app)})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    async with asyncio.timeout(PREPARE_TIMEOUT_S):
        await ws.prepare(request)
    camera = _camera(request)
    presence = camera.presence
    await camera.broadcaster.serve(ws, lambda: presence.snapshot, request.transport)
    return ws


async def healthz(request: web.Request) -> web.Response:
    """Open to all, for health checks; only to a viewer or an admin (or anybody with
    accounts off) does it say more than ok or degraded: sources, counters and receivers
    would tell an anonymous poller what the server sees and when someone arrives."""
    app = request.app
    recognizer = _recognizer(app)
    storage = app[GALLERY].db.status()
    status = "ok" if recognizer == "ok" and storage["state"] == "ok" else "degraded"
    if access.PRINCIPAL not in request:
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


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    m.gallery_size.set(request.app[GALLERY].count)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})


# -- uploads --------------------------------------------------------------------------------


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


async def _multipart_form(request: web.Request, field: str) -> tuple[dict[str, str], bytes | None]:
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


async def _image_field(request: web.Request, field: str) -> tuple[bytes | None, dict[str, str]]:
    """Read ``field`` from a multipart or urlencoded form as image bytes (a file, a part's raw
    bytes, or base64) plus the form's other text fields. Raises HTTP 400/413 as JSON on bad
    input: a form aiohttp cannot parse is the client's error, answered with what is wrong."""
    ctype = request.content_type
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise http_error(400, f"send a multipart/form-data or urlencoded form with a {field!r} field")
    if ctype == "multipart/form-data":
        texts, image = await _multipart_form(request, field)
    else:
        try:
            form = await request.post()
        except UnicodeDecodeError:
            raise http_error(400, f"the form is not {request.charset or 'utf-8'} text") \
                from None
        except LookupError:  # charset=<no text encoding Python knows>
            raise http_error(400, f"unknown charset {request.charset!r}; send UTF-8") from None
        texts, image = {k: v for k, v in form.items() if isinstance(v, str)}, None
    if image is not None:
        data = image
    elif field in texts:
        data = _from_base64(texts[field], field)
    else:
        return None, texts
    limit = _upload_limit(request.app[CONFIG])
    if len(data) > limit:
        raise http_error(413, f"{field} is larger than {upload_limit(request)}")
    return data, texts


def _from_base64(text: str, field: str) -> bytes:
    text = _DATA_URL_RE.sub("", text.strip(), count=1)
    text = "".join(text.split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise http_error(400, f"{field} is neither an image file nor a base64 image") from None


def _upload_limit(config: Config) -> int:
    return int(config.server.max_upload_mb * 1024 * 1024)


async def _analyze(request: web.Request, data: bytes) -> list[Face]:
    pool = request.app[POOL]
    metrics = request.app[METRICS]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        faces = await pool.analyze_image(data)
    except ImageError as exc:
        raise http_error(exc.status, exc.message) from None
    except (PoolBusy, WorkerCrashed) as exc:
        raise Refused(503, str(exc), 2.0) from None
    metrics.stage_seconds.labels("upload").observe(loop.time() - t0)
    metrics.faces_embedded.inc(len(faces))
    return faces


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _view(app: web.Application, face: Face) -> FaceView:
    assert face.embedding is not None
    match = app[GALLERY].index.identify(face.embedding)
    return FaceView(
        hash=match.hash if match else face_hash(face.embedding),
        name=match.name if match else None,
        known=match is not None,
        similarity=match.similarity if match else None,
        box=face.box,
    )


def _upload_slot(request: web.Request) -> contextlib.AbstractAsyncContextManager[None]:
    """Room for one upload of this caller's, taken before its body is read (limits.Refused,
    answered 429/503 with Retry-After, when there is none)."""
    who = request[access.PRINCIPAL]
    caller = who.label if who.kind != "anonymous" else f"address {request.remote}"
    return request.app[UPLOADS].slot(caller, limited=not who.admin)


async def process_frame(request: web.Request) -> web.Response:
    async with _upload_slot(request):
        data, _ = await _image_field(request, "frame")
        if data is None:
            return error(400, "missing form field 'frame' (an image file or a base64 string)")
        faces = await _analyze(request, data)
    if not faces:
        return error(422, "no face found in the image")
    views = [_view(request.app, f) for f in faces]
    primary = views[0]
    assert faces[0].embedding is not None
    return web.json_response(
        {
            "hash": primary.hash,
            "name": primary.name,
            "known": primary.known,
            "similarity": primary.to_json()["similarity"],
            "coords": list(primary.box),
            # float32 values exactly: np.float32(embedding) re-hashes to `hash`.
            "embedding": [float(v) for v in faces[0].embedding],
            "score": round(faces[0].score, 4),
            # Each face with the detector's confidence that it is a face.
            "faces": [{**v.to_json(), "score": round(f.score, 4)} for v, f in zip(views, faces)],
        }
    )


# -- gallery --------------------------------------------------------------------------------


def _face_param(request: web.Request) -> str:
    face = request.match_info["hash"]
    if not HASH_RE.match(face) and request.app[GALLERY].get(face) is None:
        raise http_error(404, f"no enrolled face with hash {face}")
    return face


async def _uploaded_face(request: web.Request, data: bytes) -> Face:
    """The one face of an uploaded photo (the largest, unless several are of similar size)."""
    faces = await _analyze(request, data)
    if not faces:
        raise http_error(422, "no face found in the image")
    if ambiguous(faces):
        raise http_error(422, f"{len(faces)} faces of similar size found; send a photo of one person")
    return faces[0]


def _check_email(email: Any) -> str | None:
    if email is None or email == "":
        return None
    if not isinstance(email, str):
        raise http_error(400, "email must be a string")
    # No spaces, control or format characters, or unpaired surrogates inside an address
    # (isprintable is False for all but the space); its HMAC needs UTF-8 text.
    trimmed = email.strip()
    if "@" not in trimmed or len(email) > 320 or not trimmed.isprintable() or " " in trimmed:
        raise http_error(400, "email is not a valid address")
    return email


def _identity(app: web.Application, ident: Identity) -> dict[str, Any]:
    """An identity as the API shows it: with when it was last seen (from its visits)."""
    return {**ident.to_json(), "last_seen": app[HISTORY].last_seen(ident.hash)}


async def list_faces(request: web.Request) -> web.Response:
    """A page of the people enrolled, oldest first: ``limit`` (at most ``MAX_FACES_PAGE``)
    from ``offset``, or the page holding ``page_of`` (a hash); only names containing ``q``
    (any case); or whoever was enrolled with ``email``. A 200,000-identity gallery answered
    whole was 78 MB and blocked the event loop for seconds, so no answer is larger."""
    gallery = request.app[GALLERY]
    email = request.query.get("email")
    text = request.query.get("q", "").strip().casefold()
    wanted = hash_field(request.query.get("page_of"), "page_of")
    limit = max(1, min(int_query(request, "limit", FACES_PAGE), MAX_FACES_PAGE))
    offset = int_query(request, "offset", 0)
    if email is None and not text and wanted is None:  # a page, not a copy of everybody
        page, total = gallery.page(offset, limit), gallery.count
    else:
        faces = gallery.list() if email is None else await gallery.find_by_email(email)
        if text or wanted:
            # A scan of every name (tens of milliseconds at 200,000): off the event loop.
            faces, where = await asyncio.to_thread(_search, faces, text, wanted)
            if wanted is not None:
                if where is None:
                    return error(404, f"no enrolled face with hash {wanted}"
                                      + (" among the names searched" if text else ""))
                offset = where // limit * limit
        page, total = faces[offset:offset + limit], len(faces)
    return web.json_response({"faces": [_identity(request.app, i) for i in page],
                              "total": total, "offset": offset, "limit": limit})


#: GET /faces: identities per page by default, and at most.
FACES_PAGE: Final = 50
MAX_FACES_PAGE: Final = 200


def _search(faces: list[Identity], text: str, wanted: str | None
            ) -> tuple[list[Identity], int | None]:
    """``faces`` whose name contains ``text`` (casefolded), and where ``wanted`` is in them."""
    if text:
        faces = [f for f in faces if text in f.name.casefold()]
    where = next((i for i, f in enumerate(faces) if f.hash == wanted), None) \
        if wanted is not None else None
    return faces, where


async def get_face(request: web.Request) -> web.Response:
    ident = request.app[GALLERY].get(_face_param(request))
    if ident is None:
        return error(404, f"no enrolled face with hash {request.match_info['hash']}")
    return web.json_response(_identity(request.app, ident))


async def _jpeg(crop: bytes | None, missing: str) -> web.Response:
    if crop is None:
        return error(404, missing)
    return web.Response(body=crop, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60"})


async def thumbnail(request: web.Request) -> web.Response:
    face = _face_param(request)
    return await _jpeg(await request.app[GALLERY].crop(face), f"no face crop stored for {face}")


def _sample_param(request: web.Request) -> int:
    """A sample id from the path: ASCII digits, at most SQLite's largest integer (no sample
    has a larger id, and SQLite cannot even be asked about one), else 404."""
    raw = request.match_info["sample"]
    if not (raw.isascii() and raw.isdigit()):
        raise http_error(404, f"sample ids are whole numbers, got {shown(raw)}")
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(MAX_QUERY_INT)) or int(digits) > MAX_QUERY_INT:
        cut = raw if len(raw) <= 30 else raw[:30] + "…"
        raise http_error(404, f"no sample {cut} of face {request.match_info['hash']}")
    return int(digits)


async def sample_crop(request: web.Request) -> web.Response:
    face, sample_id = _face_param(request), _sample_param(request)
    crop = await request.app[GALLERY].crop(face, sample_id)
    return await _jpeg(crop, f"no crop stored for sample {sample_id} of {face}")


async def enroll(request: web.Request) -> web.Response:
    """Enroll: an uploaded photo, the face in the live view, or a stranger from history."""
    gallery = request.app[GALLERY]
    if request.content_type == "application/json":
        body = await json_body(request, '{"from_live": true, "name": ...}')
        name, email = body.get("name"), _check_email(body.get("email"))
        if body.get("from_visit") is not None or body.get("from_unknown") is not None:
            return await history_views.enroll_from_history(request, body, name, email)
        if body.get("from_live") is not True:
            return error(400, 'JSON enrollment needs {"from_live": true, "name": ...} (or '
                              '"from_visit": <visit id> or "from_unknown": <hash>); to enroll '
                              "an image, send multipart with 'image' and 'name'")
        wanted = hash_field(body.get("hash"))
        live = _live_face(request, body, wanted, unknown_only=wanted is None)
        if live is None:
            what = f"face {wanted}" if wanted else "unknown face"
            return error(422, f"no {what} in the live view to enroll")
        if live.match is not None:
            return error(409, f"the face in view is already enrolled as {live.match.name!r}",
                         hash=live.match.hash, name=live.match.name)
        # The first embedding, so the identity keeps the hash the face already had in view
        # (a stranger seen before keeps their group's hash, and their visits).
        embedding, images, source = live.first_embedding, live.first_images, "live"
        face_hash_: str | None = live.view.hash
    else:
        async with _upload_slot(request):
            data, fields = await _image_field(request, "image")
            if data is None:
                return error(400, "missing form field 'image'")
            name, email = fields.get("name"), _check_email(fields.get("email"))
            if not isinstance(name, str) or not name.strip():
                return error(400, "missing form field 'name'")
            face = await _uploaded_face(request, data)
        embedding, images, source, face_hash_ = face.embedding, face.images, "upload", None
    assert embedding is not None
    ident = await gallery.add(name, embedding, email=email, images=StoredImages.of(images),
                              source=source, face=face_hash_)
    return web.json_response({"hash": ident.hash, "name": ident.name}, status=201)


async def add_sample(request: web.Request) -> web.Response:
    """Another photo of an enrolled person: an upload, or the face in the live view."""
    face = _face_param(request)
    gallery = request.app[GALLERY]
    if gallery.get(face) is None:
        return error(404, f"no enrolled face with hash {face}")
    if request.content_type == "application/json":
        body = await json_body(request, '{"from_live": true, "hash": <face in view>}')
        if body.get("from_visit") is not None:
            return await history_views.sample_from_visit(request, face, body["from_visit"])
        if body.get("from_live") is not True:
            return error(400, 'send {"from_live": true}, {"from_visit": <visit id>} or a '
                              'multipart "image"')
        wanted = hash_field(body.get("hash"))
        live = _live_face(request, body, wanted)
        if live is None:
            return error(422, "no such face in the live view")
        embedding, images = live.latest_embedding, live.latest_images
        source = "live"
    else:
        async with _upload_slot(request):
            data, _ = await _image_field(request, "image")
            if data is None:
                return error(400, "missing form field 'image'")
            uploaded = await _uploaded_face(request, data)
        embedding, images, source = uploaded.embedding, uploaded.images, "upload"
    assert embedding is not None
    sample = await gallery.add_sample(face, embedding, images=StoredImages.of(images),
                                      source=source)
    return web.json_response({"hash": face, "id": sample.id}, status=201)


async def delete_sample(request: web.Request) -> web.Response:
    face, sample_id = _face_param(request), _sample_param(request)
    await request.app[GALLERY].delete_sample(face, sample_id)
    return web.json_response({"deleted": sample_id, "hash": face})


async def merge_faces(request: web.Request) -> web.Response:
    """"These are the same person": the identity in the path absorbs ``from``."""
    target = _face_param(request)
    body = await json_body(request, '{"from": <hash of the identity to merge in>}')
    source = body.get("from")
    if not isinstance(source, str) or not source:
        return error(400, 'send {"from": <hash of the identity to merge in>}')
    merged = await request.app[GALLERY].merge(target, source)
    return web.json_response(_identity(request.app, merged))


async def not_this_person(request: web.Request) -> web.Response:
    """"This is not X", from the live view: remove X's sample that made the wrong match."""
    body = await json_body(request, '{"hash": <hash of a known face in view>}')
    wanted = hash_field(body.get("hash"))
    if wanted is None:
        return error(400, 'send {"hash": <hash of a known face in view>}')
    gallery = request.app[GALLERY]
    live = _live_face(request, body, wanted)
    if live is None or live.match is None:
        return error(422, f"no recognised face {wanted} in the live view")
    ident = gallery.get(live.match.hash)
    if ident is None:
        return error(422, "that identity was deleted meanwhile")
    samples = gallery.sample_embeddings(ident.hash)
    culprit = max(samples, key=lambda sid: float(samples[sid] @ live.mean))
    try:
        await gallery.delete_sample(ident.hash, culprit)
    except LastSample:
        return error(409, f"{ident.name!r} has only this one sample, so every match comes "
                           "from it: delete the identity or enroll better photos",
                      hash=ident.hash)
    return web.json_response({"identity": ident.hash, "name": ident.name,
                              "removed_sample": culprit})


async def rename_face(request: web.Request) -> web.Response:
    face = _face_param(request)
    body = await json_body(request, '{"name": "..."}')
    if "name" not in body:
        return error(400, 'send JSON {"name": "..."}')
    ident = await request.app[GALLERY].rename(face, body["name"])
    return web.json_response(_identity(request.app, ident))


async def delete_face(request: web.Request) -> web.Response:
    ident = await request.app[GALLERY].delete(_face_param(request))
    return web.json_response({"deleted": ident.hash, "name": ident.name})


async def events(request: web.Request) -> web.Response:
    """Arrivals and departures on every camera, newest first: ``limit`` (at most
    ``MAX_EVENTS``; each camera keeps its latest 200)."""
    limit = max(1, min(int_query(request, "limit", MAX_EVENTS), MAX_EVENTS))
    return web.json_response({"events": request.app[CAMERAS].recent_events()[:limit]})


#: GET /events answers at most this many, whatever the number of cameras.
MAX_EVENTS: Final = 200


def _live_face(request: web.Request, body: dict[str, Any], wanted: str | None,
               unknown_only: bool = False) -> LiveFace | None:
    """The face in view with hash ``wanted`` on ``body["camera"]``, or on any camera (the
    first one first); without ``wanted``, the largest (unknown) face of that camera."""
    name = body.get("camera")
    cameras = request.app[CAMERAS]
    if name is not None:
        camera = cameras.get(name) if isinstance(name, str) else None
        if camera is None:
            raise http_error(404, f"no camera named {name!r} (GET /cameras lists them)")
        return camera.presence.live_face(wanted, unknown_only)
    for camera in cameras:
        live = camera.presence.live_face(wanted, unknown_only)
        if live is not None or wanted is None:
            return live
    return None


# -- cameras --------------------------------------------------------------------------------


async def list_cameras(request: web.Request) -> web.Response:
    return web.json_response({"cameras": [c.status() for c in request.app[CAMERAS]]})


async def people_in_view(request: web.Request) -> web.Response:
    """Who is in view anywhere: each face once, with the cameras that see it."""
    return web.json_response({"people": request.app[CAMERAS].people()})


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


async def remove_camera(request: web.Request) -> web.Response:
    name = request.match_info["camera"]
    try:
        await request.app[CAMERAS].remove(name)
    except CameraError as exc:
        return error(404 if name not in request.app[CAMERAS] else 409, str(exc))
    return web.json_response({"removed": name})


# -- lifecycle ------------------------------------------------------------------------------


async def _gallery_ctx(app: web.Application) -> AsyncIterator[None]:
    gallery = await Gallery.for_config(app[CONFIG])
    app[GALLERY] = gallery
    watcher = asyncio.create_task(_watch_gallery(gallery))
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await gallery.close()


async def _watch_gallery(gallery: Gallery) -> None:
    """Pick up changes other processes (``python -m facestream faces ...``) commit. A failure
    is logged when it starts or changes, not on every poll, and its end is logged too."""
    failing: str | None = None
    while True:
        await asyncio.sleep(GALLERY_POLL_S)
        try:
            await gallery.reload_if_changed()
        except GalleryError as exc:
            if str(exc) != failing:
                log.error("gallery changed on disk but cannot be loaded: %s", exc)
            failing = str(exc)
        except Exception as exc:
            if repr(exc) != failing:
                log.exception("checking the gallery for outside changes failed")
            failing = repr(exc)
        else:
            if failing is not None:
                log.info("the gallery on disk can be read again")
            failing = None


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Accounts live in the gallery database; the first start creates an admin and shows its
    password once, on the console (never in a log)."""
    cfg = app[CONFIG].auth
    auth = access.Auth(app[GALLERY], cfg.session_days)
    await auth.ensure_schema()
    if cfg.enabled and (password := await auth.first_admin()) is not None:
        print(f"\nfacestream: created the first account: user 'admin', password "
              f"{password}\n  (shown only now; change it with `python -m facestream users "
              f"passwd admin`, add others with `users add`)\n", file=sys.stderr, flush=True)
    app[AUTH] = auth
    yield


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    history = History(app[GALLERY], app[CONFIG].history)
    await history.start()
    app[HISTORY] = history
    app[GALLERY].on_change(history.gallery_changed)
    app[CAMERAS].on_camera(lambda camera: camera.presence.on_visit(history.visit_event))
    yield
    await history.close([v for c in app[CAMERAS] for v in c.presence.open_visits()])


async def _mqtt_ctx(app: web.Application) -> AsyncIterator[None]:
    """Publish to the MQTT broker (mqtt.url): presence, visits, people, discovery."""
    from . import __version__
    from .mqtt import MqttBridge

    cfg, gallery = app[CONFIG], app[GALLERY]
    bridge = MqttBridge(cfg.mqtt, __version__, app[METRICS], gallery.list)
    gallery.on_change(bridge.gallery_changed)
    app[CAMERAS].on_camera(bridge.attach, bridge.detach)
    bridge.start()
    app[MQTT] = bridge
    yield
    await bridge.close()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Signed POSTs of visits, hash changes and gallery changes to each [[webhooks]] URL."""
    from .webhooks import Webhooks

    hooks = Webhooks(app[CONFIG].webhooks, app[METRICS])
    await hooks.start()
    app[CAMERAS].on_camera(hooks.attach)
    app[GALLERY].on_change(hooks.gallery_changed)
    app[WEBHOOKS] = hooks
    yield
    await hooks.close()


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
    cameras = app[CAMERAS]
    cameras.start(app[POOL])
    yield
    await cameras.stop()


def _wire_gallery(app: web.Application) -> None:
    """Gallery changes reach every live view and every websocket (called once it is open)."""
    cameras = app[CAMERAS]

    def changed(event: str, ident: Any) -> None:
        face = ident.to_json() if ident else None
        for camera in cameras:
            camera.presence.gallery_changed()
            camera.broadcaster.gallery_changed(event, face)

    app[GALLERY].on_change(changed)


async def _wiring_ctx(app: web.Application) -> AsyncIterator[None]:
    _wire_gallery(app)
    yield


async def _on_shutdown(app: web.Application) -> None:
    for camera in app[CAMERAS]:
        camera.hub.close()  # ends every MJPEG response
        await camera.broadcaster.close_all()


def create_app(config: Config, live: bool = True, pool: WorkerPool | None = None
               ) -> web.Application:
    """The application. ``live=False`` leaves the camera and recognition lanes out (the
    REST API, the gallery and history work; nobody is ever in view): for tests and tools.
    ``pool``: started workers to use (and leave running) instead of starting its own."""
    # Base64 bodies are 4/3 of the image; the exact limit is checked after decoding.
    max_body = int(_upload_limit(config) * 4 / 3) + 64 * 1024
    guard = access.access_middleware(lambda: app[AUTH], config.server, config.auth)
    app = web.Application(client_max_size=max_body, middlewares=[
        json_errors, guard, body_deadline(config.server.request_timeout_s)])
    app.on_response_prepare.append(_security_headers)
    metrics_ = Metrics()
    app[CONFIG] = config
    app[METRICS] = metrics_
    app[UPLOADS] = UploadGate(config.server.uploads_per_minute, config.server.upload_queue)
    app[CAMERAS] = Cameras(
        config, metrics_, gallery=lambda: app[GALLERY].index,
        unknowns=lambda: app[HISTORY].unknown_index if HISTORY in app else None)
    contexts = [_gallery_ctx, _auth_ctx, _wiring_ctx, _history_ctx, _pool_ctx(pool)]
    if config.mqtt.url:
        contexts.append(_mqtt_ctx)
    if config.webhooks:
        contexts.append(_webhooks_ctx)
    app.cleanup_ctx.extend([*contexts, _live_ctx] if live else contexts)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/me", me)
    app.router.add_get("/audit", audit_log)
    # The dashboard's stylesheet and script (index.html links them).
    app.router.add_static("/static/", str(resources.files("facestream").joinpath("static")),
                          name="static")
    app.router.add_get("/streaming", streaming)
    app.router.add_get("/hash", hash_state)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/cameras", list_cameras)
    app.router.add_post("/cameras", add_camera)
    app.router.add_delete("/cameras/{camera}", remove_camera)
    app.router.add_get("/cameras/{camera}/streaming", streaming)
    app.router.add_get("/cameras/{camera}/hash", hash_state)
    app.router.add_get("/cameras/{camera}/ws", websocket)
    app.router.add_get("/people", people_in_view)
    app.router.add_post("/process-frame", process_frame)
    app.router.add_post("/process-frame/", process_frame)
    app.router.add_get("/faces", list_faces)
    app.router.add_post("/faces", enroll)
    app.router.add_get("/faces/{hash}", get_face)
    app.router.add_patch("/faces/{hash}", rename_face)
    app.router.add_delete("/faces/{hash}", delete_face)
    app.router.add_get("/faces/{hash}/thumbnail", thumbnail)
    app.router.add_post("/faces/{hash}/samples", add_sample)
    app.router.add_get("/faces/{hash}/samples/{sample}/crop", sample_crop)
    app.router.add_delete("/faces/{hash}/samples/{sample}", delete_sample)
    app.router.add_post("/faces/{hash}/merge", merge_faces)
    app.router.add_post("/live/not", not_this_person)
    app.router.add_get("/events", events)
    history_views.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


__all__ = ["ModelMismatch", "create_app"]

"""Photos sent to be recognised (POST /process-frame), and the reading of uploaded images
that enrollment shares: a slot per caller, the image field, the worker pool's analysis."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from typing import Any, Final

from aiohttp import web

from ..appkeys import CONFIG, GALLERY, HISTORY, METRICS, POOL, UPLOADS
from ..config import Config
from ..enrollment import Candidate, Enrollment, NotEnrollable, from_face, photo_face
from ..images import ImageError
from ..limits import Refused
from ..matching import face_hash
from ..recognition import Face
from ..tracking import FaceView
from ..workers import PoolBusy, WorkerCrashed
from .access import PRINCIPAL
from .http import error, http_error, multipart_form
from .routes import Role, Routes

routes = Routes()


_DATA_URL_RE: Final = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


# Asking who is in a photo changes nothing: a viewer may, and it is not audited (an
# audit entry per recognition query would be a database write each).
@routes.post("/process-frame", role=Role.VIEWER, audited=False)
@routes.post("/process-frame/", role=Role.VIEWER, audited=False)
async def process_frame(request: web.Request) -> web.Response:
    async with upload_slot(request):
        data, _ = await image_field(request, "frame")
        if data is None:
            return error(400, "missing form field 'frame' (an image file or a base64 string)")
        faces = await analyze(request, data)
    if not faces:
        return error(422, "no face found in the image")
    views = [_view(request.app, f) for f in faces]
    groups = [await _seen_before(request.app, v, f) for v, f in zip(views, faces)]
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
            "unknown": groups[0],
            # Each face with the detector's confidence that it is a face, and, for one not
            # enrolled, the stranger's group it was seen as before.
            "faces": [{**v.to_json(), "score": round(f.score, 4), "unknown": g}
                      for v, f, g in zip(views, faces, groups)],
        }
    )


def upload_slot(request: web.Request) -> contextlib.AbstractAsyncContextManager[None]:
    """Room for one upload of this caller's, taken before its body is read (limits.Refused,
    answered 429/503 with Retry-After, when there is none)."""
    who = request[PRINCIPAL]
    caller = who.label if who.kind != "anonymous" else f"address {request.remote}"
    return request.app[UPLOADS].slot(caller, limited=not who.admin)


async def image_field(request: web.Request, field: str) -> tuple[bytes | None, dict[str, str]]:
    """Read ``field`` from a multipart or urlencoded form as image bytes (a file, a part's raw
    bytes, or base64) plus the form's other text fields. Raises HTTP 400/413 as JSON on bad
    input: a form aiohttp cannot parse is the client's error, answered with what is wrong."""
    ctype = request.content_type
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise http_error(400, f"send a multipart/form-data or urlencoded form with a {field!r} "
                              "field")
    if ctype == "multipart/form-data":
        texts, image = await multipart_form(request, field)
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
    limit = upload_limit(request.app[CONFIG])
    if len(data) > limit:
        raise http_error(413, f"{field} is larger than {limit_words(request.app[CONFIG])}")
    return data, texts


def _from_base64(text: str, field: str) -> bytes:
    text = _DATA_URL_RE.sub("", text.strip(), count=1)
    text = "".join(text.split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise http_error(400, f"{field} is neither an image file nor a base64 image") from None


def upload_limit(config: Config) -> int:
    return int(config.server.max_upload_mb * 1024 * 1024)


def limit_words(config: Config) -> str:
    """The upload limit, as users configure it: ``server.max_upload_mb (N MiB)``."""
    return f"server.max_upload_mb ({config.server.max_upload_mb:g} MiB)"


async def analyze(request: web.Request, data: bytes) -> list[Face]:
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


async def uploaded(request: web.Request, data: bytes) -> Candidate:
    """The one face of an uploaded photo, to enroll (the largest, unless several are of
    similar size: 422)."""
    try:
        return from_face(photo_face(await analyze(request, data)))
    except NotEnrollable as exc:
        raise http_error(exc.status, exc.message) from None


def enrollment(app: web.Application) -> Enrollment:
    """Enrolling in this app's gallery, with its workers (and history, once it runs)."""
    return Enrollment(app[GALLERY], app[POOL], app.get(HISTORY))


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


async def _seen_before(app: web.Application, view: FaceView, face: Face
                       ) -> dict[str, Any] | None:
    """For a face nobody enrolled is: the stranger's group it is (as GET /unknowns shows
    one, with the similarity), if the history has seen them; else None."""
    history = app.get(HISTORY)
    if view.known or history is None:
        return None
    assert face.embedding is not None
    return await history.seen_before(face.embedding)

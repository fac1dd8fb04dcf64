"""The gallery: the people enrolled, their samples and crops, enrolling (from a photo, the
live view or the history), merging two people, and "this is not X" from the live view.
Reading is a viewer's; every change, and looking someone up by email, an admin's."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from ..appkeys import CAMERAS, GALLERY, HISTORY
from ..corrections import not_person
from ..enrollment import from_live
from ..gallery_types import Person
from ..presence import LiveFace
from . import history
from .http import (
    HASH_RE,
    MAX_QUERY_INT,
    error,
    hash_field,
    http_error,
    int_query,
    json_body,
    shown,
)
from .routes import Role, Routes
from .uploads import enrollment, image_field, upload_slot, uploaded

routes = Routes()


def _person_param(request: web.Request) -> str:
    """The person's hash in the path (``/faces/{hash}``), or 404."""
    person = request.match_info["hash"]
    if not HASH_RE.match(person) and request.app[GALLERY].get(person) is None:
        raise http_error(404, f"no enrolled person with hash {person}")
    return person


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


def _shown(app: web.Application, person: Person) -> dict[str, Any]:
    """A person as the API shows them: with whether they are in view (on any camera) and
    when they were last seen (now, while they are)."""
    history = app[HISTORY]
    return {**person.to_json(), "last_seen": history.last_seen(person.hash),
            "in_view": history.in_view(person.hash)}


# Who was enrolled with an email address is an admin's question.
@routes.get("/faces", role=Role.VIEWER, admin_query=("email",))
async def list_people(request: web.Request) -> web.Response:
    """A page of the people enrolled, oldest first: ``limit`` (at most ``MAX_FACES_PAGE``)
    from ``offset``, or the page holding ``page_of`` (a hash); only names containing ``q``
    (any case); or whoever was enrolled with ``email``. A 200,000-person gallery answered
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
                    return error(404, f"no enrolled person with hash {wanted}"
                                      + (" among the names searched" if text else ""))
                offset = where // limit * limit
        page, total = faces[offset:offset + limit], len(faces)
    return web.json_response({"faces": [_shown(request.app, i) for i in page],
                              "total": total, "offset": offset, "limit": limit})


#: GET /faces: people per page by default, and at most.
FACES_PAGE: Final = 50
MAX_FACES_PAGE: Final = 200


def _search(faces: list[Person], text: str, wanted: str | None
            ) -> tuple[list[Person], int | None]:
    """``faces`` whose name contains ``text`` (casefolded), and where ``wanted`` is in them."""
    if text:
        faces = [f for f in faces if text in f.name.casefold()]
    where = next((i for i, f in enumerate(faces) if f.hash == wanted), None) \
        if wanted is not None else None
    return faces, where


@routes.post("/faces", role=Role.ADMIN)
async def enroll(request: web.Request) -> web.Response:
    """Enroll: an uploaded photo, the face in the live view, or a stranger from history.
    With the name of somebody enrolled, ``same_name`` says whether it is them (their hash:
    the face becomes their sample) or another person ("new"); without it, 409."""
    enroll_ = enrollment(request.app)
    if request.content_type == "application/json":
        body = await json_body(request, '{"from_live": true, "name": ...}')
        name, email = body.get("name"), _check_email(body.get("email"))
        same_name = body.get("same_name")
        if body.get("from_visit") is not None or body.get("from_unknown") is not None:
            return await history.enroll_from_history(request, body, name, email)
        if body.get("from_live") is not True:
            return error(400, 'JSON enrollment needs {"from_live": true, "name": ...} (or '
                              '"from_visit": <visit id> or "from_unknown": <hash>); to enroll '
                              "an image, send multipart with 'image' and 'name'")
        enroll_.same_person(name, same_name)  # before any work: asked first if taken
        wanted = hash_field(body.get("hash"))
        live = _live_face(request, body, wanted, unknown_only=wanted is None)
        if live is None:
            what = f"face {wanted}" if wanted else "unknown face"
            return error(422, f"no {what} in the live view to enroll")
        if live.match is not None:
            return error(409, f"the face in view is already enrolled as {live.match.name!r}",
                         hash=live.match.hash, name=live.match.name)
        candidate = from_live(live, first=True)
    else:
        async with upload_slot(request):
            data, fields = await image_field(request, "image")
            if data is None:
                return error(400, "missing form field 'image'")
            name, email = fields.get("name"), _check_email(fields.get("email"))
            same_name = fields.get("same_name")
            if not isinstance(name, str) or not name.strip():
                return error(400, "missing form field 'name'")
            enroll_.same_person(name, same_name)
            candidate = await uploaded(request, data)
    person = await enroll_.enroll(name, [candidate], email, same_name)
    return web.json_response({"hash": person.hash, "name": person.name,
                              "samples": len(person.samples)}, status=201)


@routes.get("/faces/{hash}", role=Role.VIEWER)
async def get_person(request: web.Request) -> web.Response:
    person = request.app[GALLERY].get(_person_param(request))
    if person is None:
        return error(404, f"no enrolled person with hash {request.match_info['hash']}")
    return web.json_response(_shown(request.app, person))


@routes.patch("/faces/{hash}", role=Role.ADMIN)
async def rename_person(request: web.Request) -> web.Response:
    """A new name. Somebody else's name asks whether it is them (``same_name``: their hash,
    and the two are merged into them) or another person ("new"); without it, 409."""
    person = _person_param(request)
    body = await json_body(request, '{"name": "..."}')
    if "name" not in body:
        return error(400, 'send JSON {"name": "..."}')
    gallery = request.app[GALLERY]
    same = enrollment(request.app).same_person(body["name"], body.get("same_name"),
                                               renaming=person)
    if same is not None:
        merged = await gallery.merge(same.hash, person)
        return web.json_response(_shown(request.app, merged))
    renamed = await gallery.rename(person, body["name"])
    return web.json_response(_shown(request.app, renamed))


@routes.delete("/faces/{hash}", role=Role.ADMIN)
async def delete_person(request: web.Request) -> web.Response:
    deleted = await request.app[GALLERY].delete(_person_param(request))
    return web.json_response({"deleted": deleted.hash, "name": deleted.name})


async def _jpeg(crop: bytes | None, missing: str) -> web.Response:
    if crop is None:
        return error(404, missing)
    return web.Response(body=crop, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60"})


@routes.get("/faces/{hash}/thumbnail", role=Role.VIEWER)
async def thumbnail(request: web.Request) -> web.Response:
    person = _person_param(request)
    return await _jpeg(await request.app[GALLERY].crop(person),
                       f"no face crop stored for {person}")


def _sample_param(request: web.Request) -> int:
    """A sample id from the path: ASCII digits, at most SQLite's largest integer (no sample
    has a larger id, and SQLite cannot even be asked about one), else 404."""
    raw = request.match_info["sample"]
    if not (raw.isascii() and raw.isdigit()):
        raise http_error(404, f"sample ids are whole numbers, got {shown(raw)}")
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(MAX_QUERY_INT)) or int(digits) > MAX_QUERY_INT:
        cut = raw if len(raw) <= 30 else raw[:30] + "…"
        raise http_error(404, f"no sample {cut} of person {request.match_info['hash']}")
    return int(digits)


@routes.post("/faces/{hash}/samples", role=Role.ADMIN)
async def add_sample(request: web.Request) -> web.Response:
    """Another photo of an enrolled person: an upload, or the face in the live view."""
    person = _person_param(request)
    if request.app[GALLERY].get(person) is None:
        return error(404, f"no enrolled person with hash {person}")
    if request.content_type == "application/json":
        body = await json_body(request, '{"from_live": true, "hash": <face in view>}')
        if body.get("from_visit") is not None:
            return await history.sample_from_visit(request, person, body["from_visit"])
        if body.get("from_live") is not True:
            return error(400, 'send {"from_live": true}, {"from_visit": <visit id>} or a '
                              'multipart "image"')
        live = _live_face(request, body, hash_field(body.get("hash")))
        if live is None:
            return error(422, "no such face in the live view")
        candidate = from_live(live, first=False)
    else:
        async with upload_slot(request):
            data, _ = await image_field(request, "image")
            if data is None:
                return error(400, "missing form field 'image'")
            candidate = await uploaded(request, data)
    sample = await enrollment(request.app).add_sample(person, candidate)
    return web.json_response({"hash": person, "id": sample.id}, status=201)


@routes.get("/faces/{hash}/samples/{sample}/crop", role=Role.VIEWER)
async def sample_crop(request: web.Request) -> web.Response:
    person, sample_id = _person_param(request), _sample_param(request)
    crop = await request.app[GALLERY].crop(person, sample_id)
    return await _jpeg(crop, f"no crop stored for sample {sample_id} of {person}")


@routes.delete("/faces/{hash}/samples/{sample}", role=Role.ADMIN)
async def delete_sample(request: web.Request) -> web.Response:
    person, sample_id = _person_param(request), _sample_param(request)
    await request.app[GALLERY].delete_sample(person, sample_id)
    return web.json_response({"deleted": sample_id, "hash": person})


@routes.post("/faces/{hash}/merge", role=Role.ADMIN)
async def merge_people(request: web.Request) -> web.Response:
    """"These are the same person": the person in the path absorbs ``from``."""
    target = _person_param(request)
    body = await json_body(request, '{"from": <hash of the person to merge in>}')
    source = body.get("from")
    if not isinstance(source, str) or not source:
        return error(400, 'send {"from": <hash of the person to merge in>}')
    merged = await request.app[GALLERY].merge(target, source)
    return web.json_response(_shown(request.app, merged))


@routes.post("/live/not", role=Role.ADMIN)
async def not_this_person(request: web.Request) -> web.Response:
    """"This is not X", of a face in view (by the hash it shows): kept as X's negative, so
    that it is not named X again; ``remove_sample`` also removes that sample of X (the
    answer's ``culprit``, which ``dry_run`` shows without changing anything)."""
    body = await json_body(request, '{"hash": <hash of a known face in view>}')
    wanted = hash_field(body.get("hash"))
    if wanted is None:
        return error(400, 'send {"hash": <hash of a known face in view>}')
    live = _live_face(request, body, wanted)
    if live is None or live.match is None:
        return error(422, f"no recognised face {wanted} in the live view")
    images = live.latest_images or live.first_images
    done = await not_person(request.app[GALLERY], live.match.hash, live.mean,
                            images.crop if images is not None else None, "live",
                            body.get("remove_sample"), body.get("dry_run") is True)
    return web.json_response(done.to_json())


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

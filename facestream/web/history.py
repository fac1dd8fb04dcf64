"""HTTP handlers of the visit history: list and filter visits, their images, strangers seen
more than once, naming a stranger from history, and forgetting.

    GET    /visits?person=&known=&camera=&low_margin=&reviewed=&since=&until=&cursor=&limit=
                                         newest first, keyset-paged, with their decisions
    POST   /visits/review {"action", "visits", ...}   the review page's corrections
    GET    /visits/{id}                  one visit
    GET    /visits/{id}/crop, /snapshot  its best face crop, its frame snapshot (JPEG)
    DELETE /visits/{id}                  forget one visit (images included)
    POST   /visits/{id}/not              "this is not X": the visit is a stranger's from now
    GET    /unknowns?limit=&offset=      strangers seen, most recent first, with visit counts
    GET    /unknowns/{hash}/crop         a stranger's best face crop
    DELETE /people/{hash}/visits         forget a person's (or a stranger's) whole history
    POST   /faces {"from_unknown" | "from_visit", "name", "visits"?}      (see faces.enroll)
    POST   /faces/{hash}/samples {"from_visit": id}            (see faces.add_sample)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from ..appkeys import GALLERY, HISTORY
from ..corrections import not_person
from ..matching import face_hash
from ..review import MAX_VISITS, Reviewer
from ..workers import PoolBusy, WorkerCrashed
from .http import error, hash_field, http_error, int_query, json_body, shown
from .routes import Role, Routes
from .uploads import enrollment

routes = Routes()

#: A cursor as ``History.visits`` makes one: ``repr(arrived_at)``, "_", the visit's id.
_CURSOR_RE: Final = re.compile(r"[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?_[0-9A-Za-z-]{1,64}")


def _cursor_query(request: web.Request) -> str | None:
    """The ``cursor`` a previous page answered as ``next``, or HTTP 400."""
    raw = request.query.get("cursor") or None
    if raw is not None and not (_CURSOR_RE.fullmatch(raw)
                                and math.isfinite(float(raw.partition("_")[0]))):
        raise http_error(400, f"not a visits cursor: {shown(raw)}; send the \"next\" of "
                              "the previous page")
    return raw


def _float_query(request: web.Request, key: str) -> float | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise http_error(400, f"{key} must be a time in seconds since 1970, got {raw!r}") \
            from None
    if not math.isfinite(value):
        raise http_error(400, f"{key} must be a finite number")
    return value


def _bool_query(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key)
    if raw in (None, ""):
        return None
    if raw not in ("true", "false"):
        raise http_error(400, f"{key} must be true or false")
    return raw == "true"


@routes.get("/visits", role=Role.VIEWER)
async def list_visits(request: web.Request) -> web.Response:
    q = request.query
    limit = int_query(request, "limit", 50)  # History caps it at its page maximum
    person = hash_field(q.get("person") or None, "person")
    camera = q.get("camera") or None
    if camera is not None and len(camera) > 64:
        return error(400, "camera must be a camera's name")
    visits, cursor = await request.app[HISTORY].visits(
        person, _bool_query(request, "known"), _float_query(request, "since"),
        _float_query(request, "until"), _cursor_query(request), limit, camera,
        _bool_query(request, "low_margin") is True, _bool_query(request, "reviewed"))
    names = _names(request)
    return web.json_response({"visits": [v.to_json(names) for v in visits], "next": cursor})


def _names(request: web.Request) -> Callable[[str], str | None]:
    gallery = request.app[GALLERY]

    def name(person: str) -> str | None:
        enrolled = gallery.get(person)
        return enrolled.name if enrolled is not None else None
    return name


@routes.get("/visits/{id}", role=Role.VIEWER)
async def get_visit(request: web.Request) -> web.Response:
    visit = await request.app[HISTORY].visit(request.match_info["id"])
    return web.json_response(visit.to_json(_names(request)))


@routes.post("/visits/review", role=Role.ADMIN)
async def review_visits(request: web.Request) -> web.Response:
    """One correction for each of the visits given (see review.Reviewer): ``action`` "is"
    (with ``hash``), "not", "new" (with ``name``, and ``same_name`` for a name somebody
    has), "ignore" or "split". Answers what happened to each visit."""
    body = await json_body(request, '{"action": "is" | "not" | "new" | "ignore" | "split", '
                                    '"visits": [<visit id>, ...], ...}')
    visits = body.get("visits")
    if (not isinstance(visits, list) or not visits or len(visits) > MAX_VISITS
            or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in visits)):
        return error(400, f"visits must be a list of 1 to {MAX_VISITS} visit ids")
    reviewer = Reviewer(request.app[HISTORY], enrollment(request.app))
    try:
        outcomes = await reviewer.act(str(body.get("action")), list(dict.fromkeys(visits)),
                                      body)
    except (PoolBusy, WorkerCrashed) as exc:
        return error(503, str(exc))
    return web.json_response({"results": [o.to_json() for o in outcomes],
                              "done": sum(o.error is None for o in outcomes),
                              "failed": sum(o.error is not None for o in outcomes)})


@routes.get("/visits/{id}/{which:crop|snapshot}", role=Role.VIEWER)
async def visit_image(request: web.Request) -> web.Response:
    vid, which = request.match_info["id"], request.match_info["which"]
    data = await request.app[HISTORY].image(vid, which)
    if data is None:
        await request.app[HISTORY].visit(vid)  # 404 for an unknown visit
        return error(404, f"no {which} stored for visit {vid}")
    return web.Response(body=data, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})


@routes.delete("/visits/{id}", role=Role.ADMIN)
async def delete_visit(request: web.Request) -> web.Response:
    visit = await request.app[HISTORY].delete_visit(request.match_info["id"])
    return web.json_response({"deleted": visit.id})


@routes.post("/visits/{id}/not", role=Role.ADMIN)
async def visit_is_not(request: web.Request) -> web.Response:
    """"This visitor is not X" (the person the visit was named as): the visit's face is kept
    as X's negative and the visit becomes a stranger's (the hash of that face);
    ``remove_sample`` and ``dry_run`` as for ``POST /live/not``."""
    history = request.app[HISTORY]
    visit = await history.visit(request.match_info["id"])
    body = await json_body(request, "{} (or {\"remove_sample\": <id>, \"dry_run\": true})")
    if not visit.known or request.app[GALLERY].get(visit.person) is None:
        return error(409, f"visit {visit.id} is not named as anybody enrolled")
    if visit.left_at is None:
        return error(409, f"visit {visit.id} is under way: say \"not "
                          f"{visit.name}\" of the face in the live view (POST /live/not)")
    faces = await history.stored_faces(visit=visit.id)
    try:
        (candidate,) = await enrollment(request.app).embedded(faces[:1]) if faces else (None,)
    except (PoolBusy, WorkerCrashed) as exc:
        return error(503, str(exc))
    if candidate is None:
        return error(422, f"no face of visit {visit.id} is stored that can be embedded")
    dry_run = body.get("dry_run") is True
    done = await not_person(request.app[GALLERY], visit.person, candidate.embedding,
                            faces[0].crop, "history", body.get("remove_sample"), dry_run)
    if not dry_run:
        await history.unname(visit.id, face_hash(candidate.embedding))
    return web.json_response(done.to_json())


@routes.get("/unknowns", role=Role.VIEWER)
async def list_unknowns(request: web.Request) -> web.Response:
    limit, offset = int_query(request, "limit", 50), int_query(request, "offset", 0)
    groups, total = await request.app[HISTORY].unknown_groups(limit, offset)
    return web.json_response({"unknowns": groups, "total": total})


@routes.get("/unknowns/{hash}/crop", role=Role.VIEWER)
async def unknown_crop(request: web.Request) -> web.Response:
    person = hash_field(request.match_info["hash"])
    assert person is not None
    data = await request.app[HISTORY].best_crop(person)
    if data is None:
        return error(404, f"no stored face of {person}")
    return web.Response(body=data, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60"})


@routes.delete("/unknowns/{hash}", role=Role.ADMIN)
@routes.delete("/people/{hash}/visits", role=Role.ADMIN)
async def forget_person(request: web.Request) -> web.Response:
    person = hash_field(request.match_info["hash"])
    assert person is not None
    deleted = await request.app[HISTORY].forget(person)
    return web.json_response({"hash": person, "deleted_visits": deleted})


async def enroll_from_history(request: web.Request, body: dict[str, Any], name: Any,
                              email: str | None) -> web.Response:
    """``POST /faces`` with ``from_unknown`` (a stranger's hash: their best visits' faces)
    or ``from_visit`` (one visit's face): the person keeps the stranger's hash."""
    history = request.app[HISTORY]
    visit_id = body.get("from_visit")
    if visit_id is not None:
        if not isinstance(visit_id, str):
            return error(400, "from_visit must be a visit id")
        visit = await history.visit(visit_id)
        if visit.known:
            enrolled = request.app[GALLERY].get(visit.person)
            return error(409, f"that visit is of {visit.name!r}, already enrolled",
                         hash=visit.person, name=enrolled.name if enrolled else visit.name)
        person = visit.person
    else:
        person = hash_field(body.get("from_unknown"), "from_unknown")  # type: ignore[assignment]
        assert person is not None
    if (enrolled := request.app[GALLERY].get(person)) is not None:
        return error(409, f"{person} is already enrolled as {enrolled.name!r}",
                     hash=person, name=enrolled.name)
    if not isinstance(name, str) or not name.strip():
        return error(400, "name is required")
    kept = body.get("visits")
    if kept is not None and (
            visit_id is not None or not isinstance(kept, list) or not kept
            or len(kept) > MAX_VISITS or not all(isinstance(v, str) for v in kept)):
        return error(400, f"visits (with from_unknown) must be a list of 1 to {MAX_VISITS} of "
                          "the stranger's visit ids: the ones that are them")
    try:
        if kept is not None:
            enrollment(request.app).same_person(name, body.get("same_name"))  # before changes
            await Reviewer(history, enrollment(request.app)).keep_only(person, kept)
        enrolled = await enrollment(request.app).stranger(
            person, name, email, visit=visit_id, same_name=body.get("same_name"))
    except (PoolBusy, WorkerCrashed) as exc:
        return error(503, str(exc))
    return web.json_response({"hash": enrolled.hash, "name": enrolled.name,
                              "samples": len(enrolled.samples)}, status=201)


async def sample_from_visit(request: web.Request, person: str, visit_id: Any) -> web.Response:
    """``POST /faces/{hash}/samples`` with ``from_visit``: that visit's face as a sample,
    and the visit theirs ("this is X": a stranger's visit, or one named as somebody else)."""
    if not isinstance(visit_id, str):
        return error(400, "from_visit must be a visit id")
    history = request.app[HISTORY]
    visit = await history.visit(visit_id)
    faces = await history.stored_faces(visit=visit_id)
    if not faces:
        return error(422, f"no face stored for visit {visit_id}")
    enroll = enrollment(request.app)
    try:
        (candidate,) = await enroll.embedded(faces[:1])
    except (PoolBusy, WorkerCrashed) as exc:
        return error(503, str(exc))
    if candidate is None:
        return error(422, f"the face stored for visit {visit_id} cannot be embedded")
    sample = await enroll.add_sample(person, candidate)
    enrolled = request.app[GALLERY].get(person)
    if enrolled is not None and (visit.person != person or not visit.known):
        await history.assign(visit.id, person, enrolled.name)
    return web.json_response({"hash": person, "id": sample.id, "visit": visit.id},
                             status=201)

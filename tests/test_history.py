"""Visit history through the API: stored visits with their faces, strangers grouped across
visits and restarts, naming a stranger from history, paging, filters and forgetting.

The live test runs the real camera pipeline on a real clip; the others store visits through
the path visit events take (History.record) on an app without a camera.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from facestream.appkeys import GALLERY, HISTORY
from facestream.config import Config
from facestream.history import GROUP_FAR, GROUP_QUALITY
from facestream.images import decode_image
from facestream.matching import face_hash
from facestream.presence import VisitEvent, VisitRecord
from facestream.recognition import Recognizer
from facestream.tracking import BestView

from .conftest import BIDEN, BIDEN2, OBAMA, OBAMA2, upload
from .support import wait_for

Client = TestClient[Any, Any]


def jpeg_ok(data: bytes) -> tuple[int, ...]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return tuple(image.shape)


async def test_live_visits_are_stored_and_a_stranger_named_from_history(
    app_client: Any, config_factory: Callable[..., Config], face_then_empty_video: Path
) -> None:
    """The clip shows a stranger 3 s, nobody 3 s, and loops: two visits of one stranger,
    each with a face crop and a snapshot, grouped under one hash; after a restart the same
    stranger still has that hash; naming them from history keeps it."""
    cfg = config_factory(face_then_empty_video, presence={"depart_after_s": 1.0})
    client = await app_client(cfg)
    ws = await client.ws_connect("/ws")
    events: list[dict[str, Any]] = []

    async def finished_visits() -> list[dict[str, Any]]:
        while (msg := await _next_message(ws)) is not None:
            if msg["type"] == "event":
                events.append(msg)
        body = await (await client.get("/visits")).json()
        return [v for v in body["visits"] if v["left_at"] is not None]

    visits = await wait_for(lambda: _at_least(finished_visits, 2), 25, 0.5)
    # The events a script received are the stored visits: same ids, same times.
    stored = {v["id"]: v for v in (await (await client.get("/visits")).json())["visits"]}
    for event in events:
        visit = stored[event["visit"]]
        assert event["hash"] == visit["hash"]
        assert event["at"] == pytest.approx(
            visit["arrived_at"] if event["event"] == "arrived" else visit["left_at"])
    ended = [e["visit"] for e in events if e["event"] == "left"]
    assert ended and all([e["event"] for e in events if e["visit"] == v] == ["arrived", "left"]
                         for v in ended)
    await ws.close()
    stranger = visits[0]["hash"]
    assert {v["hash"] for v in visits} == {stranger}
    assert all(not v["known"] and v["name"] is None for v in visits)
    assert len({v["id"] for v in visits}) == len(visits)
    for v in visits[:2]:
        assert v["left_at"] > v["arrived_at"]
        assert jpeg_ok(await (await client.get(v["crop"])).read())[:2] == (160, 160)
        h, w, _ = jpeg_ok(await (await client.get(v["snapshot"])).read())
        assert max(h, w) <= 640
    unknowns = (await (await client.get("/unknowns")).json())["unknowns"]
    assert [(u["hash"], u["visits"] >= 2) for u in unknowns] == [(stranger, True)]
    await client.close()

    # Restarted: the history is there, and the stranger is recognised as seen before.
    client = await app_client(cfg)

    async def live_hash() -> str | None:
        return (await (await client.get("/hash")).json())["hash"]

    assert await wait_for(live_hash, 15) == stranger

    async def in_view() -> dict[str, Any] | None:
        """The stranger's group while a visit of theirs is under way."""
        groups = (await (await client.get("/unknowns")).json())["unknowns"]
        return next((u for u in groups if u["hash"] == stranger and u["in_view"]), None)

    # Seen now, not when the visit under way began (issue 19: "last seen 12 minutes ago"
    # while on screen).
    group = await wait_for(in_view, 10)

    async def stored_under_way() -> dict[str, Any] | None:  # its arrival, once written
        visits = (await (await client.get(f"/visits?person={stranger}")).json())["visits"]
        return next((v for v in visits if v["left_at"] is None), None)

    under_way = await wait_for(stored_under_way, 10)
    assert group["last_seen"] >= max(time.time() - 1, under_way["arrived_at"] + 0.5)
    # Somebody of that name is enrolled already (issue 19, defect 4): asked, the user says
    # the stranger is them (from a photo of somebody else: who is who is the user's to
    # say), so the stranger's faces and visits join that person's, and the visit under way
    # does not make them a stranger's group again when it ends.
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Alexandria"))
    assert resp.status == 201, await resp.text()
    namesake = (await resp.json())["hash"]
    resp = await client.post("/faces", json={"from_unknown": stranger, "name": "alexandria"})
    assert ((await resp.json())["reason"], resp.status) == ("name", 409)
    before = len((await (await client.get(f"/visits?person={stranger}")).json())["visits"])
    resp = await client.post("/faces", json={"from_unknown": stranger, "name": "alexandria",
                                             "same_name": namesake})
    assert resp.status == 201, await resp.text()
    enrolled = await resp.json()
    assert enrolled["hash"] == namesake and enrolled["samples"] >= 3
    assert (await (await client.get(f"/visits?person={stranger}")).json())["visits"] == []
    body = await (await client.get(f"/visits?person={namesake}")).json()
    assert len(body["visits"]) >= before and all(
        v["known"] and v["name"] == "Alexandria" for v in body["visits"])
    assert (await (await client.get("/unknowns")).json())["unknowns"] == []
    assert [f["hash"] for f in (await (await client.get("/faces")).json())["faces"]] == [
        namesake]

    async def named() -> bool:
        return (await (await client.get("/hash")).json())["name"] == "Alexandria"

    await wait_for(named, 10)

    async def seen_now() -> dict[str, Any] | None:  # from the frame after the naming
        face = await (await client.get(f"/faces/{namesake}")).json()
        return face if face["in_view"] else None

    face = await wait_for(seen_now, 2)
    assert time.time() - 1 <= face["last_seen"] <= time.time() + 1

    async def ended() -> bool:  # the stranger's visit, which was under way, once stored
        visit = await (await client.get(f"/visits/{under_way['id']}")).json()
        return visit["left_at"] is not None

    await wait_for(ended, 15)
    assert (await (await client.get("/unknowns")).json())["unknowns"] == []
    # ... nor among the groups a new face is matched against.
    assert len(client.server.app[HISTORY].unknown_index) == 0


async def _next_message(ws: Any) -> dict[str, Any] | None:
    try:
        return await ws.receive_json(timeout=0.01)
    except TimeoutError:
        return None


async def _at_least(get: Callable[[], Any], n: int) -> Any:
    items = await get()
    return items if len(items) >= n else None


# -- stored visits without a camera ------------------------------------------------------


@pytest.fixture(scope="module")
def views(recognizer: Recognizer) -> dict[str, BestView]:
    out = {}
    for key, path in {"obama": OBAMA, "obama2": OBAMA2, "biden": BIDEN}.items():
        image = decode_image(path.read_bytes(), 10**8)
        (face,) = recognizer.analyze_image(image)[:1]
        out[key] = BestView(0.9, face.embedding, face.images, 0.0, image, face.box)
    return out


@pytest.fixture
async def api(app_client: Any, config_factory: Callable[..., Config],
              storage_url: str) -> Client:
    """The server without a camera, its history in SQLite or in PostgreSQL."""
    return await app_client(config_factory(storage_url=storage_url), live=False)


async def store(client: Client, person: str, best: BestView | None, arrived: float,
                left: float, known: bool = False, name: str | None = None,
                camera: str = "cam") -> str:
    """A visit as Presence reports it (arrived, then left), stored by the app's History."""
    history = client.server.app[HISTORY]
    vid = uuid.uuid4().hex
    record = VisitRecord(vid, person, name, known, camera, arrived, None, best)
    history.record(VisitEvent("arrived", record))
    history.record(VisitEvent("left", replace(record, left_at=left)))
    await asyncio.wait_for(history._queue.join(), 10)
    return vid


async def test_visits_page_newest_first_with_filters(api: Client, views: dict) -> None:
    a, b = face_hash(views["obama"].embedding), face_hash(views["biden"].embedding)
    # Within the retention: visits older than it may be pruned while the test runs.
    t0 = float(int(time.time() - 10 * 86400))
    ids = [await store(api, a if i % 3 else b, None, t0 + 60 * i, t0 + 60 * i + 30)
           for i in range(120)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/visits?limit=50" + (f"&cursor={cursor}" if cursor else "")
        body = await (await api.get(url)).json()
        seen += [v["id"] for v in body["visits"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3 and seen == ids[::-1]
    only_b = (await (await api.get(f"/visits?person={b}&limit=200")).json())["visits"]
    assert [v["id"] for v in only_b] == ids[::3][::-1]
    window = (await (await api.get(
        f"/visits?since={t0 + 60 * 10}&until={t0 + 60 * 20}")).json())["visits"]
    assert [v["id"] for v in window] == ids[19:9:-1]
    for query, message in (("known=maybe", "known must be true or false"),
                           ("since=yesterday", "since must be a time"),
                           ("person=nope", "person must be a 64-character hex string"),
                           ("cursor=zzz", "not a visits cursor")):
        resp = await api.get(f"/visits?{query}")
        assert resp.status == 400 and message in (await resp.json())["error"]


async def test_forgetting_deletes_visits_and_their_images(
    api: Client, views: dict, tmp_path: Path, storage_url: str
) -> None:
    stranger = "ab" * 32
    now = time.time()
    keep = await store(api, stranger, views["biden"], now - 100, now - 90)
    drop = await store(api, stranger, views["biden"], now - 50, now - 40)
    snapshot = await (await api.get(f"/visits/{drop}/snapshot")).read()
    data_dir = tmp_path / "data"

    async def on_disk() -> bytes:
        """SQLite: the gallery's files, byte for byte. PostgreSQL: every stored image (its
        table files keep deleted rows until autovacuum reuses the space; see README)."""
        if not storage_url:
            return b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
        conn = await asyncpg.connect(storage_url)
        try:
            rows = await conn.fetch("SELECT crop, context, snapshot FROM visit_images")
        finally:
            await conn.close()
        return b"".join(b for r in rows for b in r if b)

    assert snapshot[100:164] in await on_disk()
    resp = await api.delete(f"/visits/{drop}")
    assert resp.status == 200 and await resp.json() == {"deleted": drop}
    assert (await api.get(f"/visits/{drop}")).status == 404
    assert (await api.get(f"/visits/{keep}")).status == 200
    resp = await api.delete(f"/people/{stranger}/visits")
    assert await resp.json() == {"hash": stranger, "deleted_visits": 1}
    assert (await (await api.get("/visits")).json())["visits"] == []
    assert snapshot[100:164] not in await on_disk()


async def test_a_person_deleted_takes_their_history_and_old_visits_expire(
    api: Client, views: dict
) -> None:
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    obama = (await resp.json())["hash"]
    now = time.time()
    await store(api, obama, views["obama2"], now - 10, now - 5, True, "Barack")
    old = await store(api, "cd" * 32, views["biden"], now - 40 * 86400,
                      now - 40 * 86400 + 5)
    face = await (await api.get(f"/faces/{obama}")).json()
    assert face["last_seen"] == pytest.approx(now - 5)
    history = api.server.app[HISTORY]
    assert await history.prune() == 1  # 40 days old; the retention is 30
    assert (await api.get(f"/visits/{old}")).status == 404
    assert (await api.delete(f"/faces/{obama}")).status == 200
    assert (await (await api.get("/visits")).json())["visits"] == []


async def test_a_visit_face_becomes_a_sample_or_a_new_person(
    api: Client, views: dict
) -> None:
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    obama = (await resp.json())["hash"]
    stranger = "ef" * 32
    vid = await store(api, stranger, views["obama2"], time.time() - 20, time.time())
    resp = await api.post(f"/faces/{obama}/samples", json={"from_visit": vid})
    assert resp.status == 201, await resp.text()
    face = await (await api.get(f"/faces/{obama}")).json()
    assert [s["source"] for s in face["samples"]] == ["upload", "history"]
    # "This is Barack": the stranger's visit is his now (issue 19: "Add to..." on a
    # stranger's visit gave no visible result).
    visit = await (await api.get(f"/visits/{vid}")).json()
    assert (visit["hash"], visit["known"], visit["name"]) == (obama, True, "Barack")
    other = await store(api, "12" * 32, views["biden"], time.time() - 9, time.time())
    resp = await api.post("/faces", json={"from_visit": other, "name": "Joe"})
    assert resp.status == 201 and (await resp.json())["hash"] == "12" * 32
    resp = await api.post("/faces", json={"from_visit": other, "name": "Joe again"})
    assert resp.status == 409
    resp = await api.post("/faces", json={"from_visit": "nope", "name": "x"})
    assert resp.status == 404


async def test_naming_a_stranger_is_not_undone_by_a_late_departure(
    api: Client, views: dict
) -> None:
    """The stranger's visit ends (its "left" waits in the writer's queue) while they are
    named from history: they stay known and do not come back as a stranger."""
    stranger = "9a" * 32
    history = api.server.app[HISTORY]
    now = time.time()
    vid = await store(api, stranger, views["biden"], now - 60, now - 50)
    late = uuid.uuid4().hex
    record = VisitRecord(late, stranger, None, False, "cam", now - 20, None, views["biden"])
    history.record(VisitEvent("arrived", record))
    await asyncio.wait_for(history._queue.join(), 10)
    resp = await api.post("/faces", json={"from_visit": vid, "name": "Joe"})
    assert resp.status == 201
    history.record(VisitEvent("left", replace(record, left_at=now - 10)))
    await asyncio.wait_for(history._queue.join(), 10)
    visits = (await (await api.get(f"/visits?person={stranger}")).json())["visits"]
    assert [(v["id"], v["known"], v["name"]) for v in visits] == [
        (late, True, "Joe"), (vid, True, "Joe")]
    assert (await (await api.get("/unknowns")).json())["unknowns"] == []


async def test_a_visit_deleted_while_still_open_stays_deleted(
    api: Client, views: dict
) -> None:
    """A person deleted, a stranger's history forgotten, or one visit deleted while the
    visit is still open (its arrival stored, or still waiting in the writer's queue): the
    departure that follows does not bring the visit back, with its name and no images."""
    history = api.server.app[HISTORY]
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    obama = (await resp.json())["hash"]
    stranger, other = "5e" * 32, "6f" * 32
    now = time.time()

    async def arrive(person: str, known: bool = False, name: str | None = None,
                     wait: bool = True) -> VisitRecord:
        record = VisitRecord(uuid.uuid4().hex, person, name, known, "cam", now - 30, None,
                             views["obama2"] if known else views["biden"])
        history.record(VisitEvent("arrived", record))
        if wait:
            await asyncio.wait_for(history._queue.join(), 10)
            assert (await api.get(f"/visits/{record.id}")).status == 200
        return record

    async def leave(*records: VisitRecord) -> None:
        for record in records:
            history.record(VisitEvent("left", replace(record, left_at=now)))
        await asyncio.wait_for(history._queue.join(), 10)

    barack, seen, alone, kept = (await arrive(obama, True, "Barack"), await arrive(stranger),
                                 await arrive(other), await arrive(other))
    assert (await api.delete(f"/faces/{obama}")).status == 200
    assert (await api.delete(f"/people/{stranger}/visits")).status == 200
    assert (await api.delete(f"/visits/{alone.id}")).status == 200
    await leave(barack, seen, alone, kept)
    visits = (await (await api.get("/visits")).json())["visits"]
    assert [(v["id"], v["left_at"]) for v in visits] == [(kept.id, now)]
    assert (await api.get(f"/visits/{kept.id}/snapshot")).status == 200

    # Deleted while the arrival still waits in the queue: neither event is stored.
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    obama = (await resp.json())["hash"]
    queued = await arrive(obama, True, "Barack", wait=False)
    assert (await api.delete(f"/faces/{obama}")).status == 200
    await leave(queued)
    assert [v["id"] for v in (await (await api.get("/visits")).json())["visits"]] \
        == [kept.id]


async def test_not_x_on_a_past_visit_makes_it_a_stranger_s_and_lasts(
        api: Client, views: dict) -> None:
    """Issue 19, defect 1, from the history: a week-old visit of Biden named Barack (a photo
    of Biden was Barack's sample). "Not Barack" on that visit shows the sample behind it,
    keeps the face as Barack's negative, and makes the visit a stranger's; Biden's photos
    are not named Barack again though the sample stays, and Barack's own still are."""
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    barack = (await resp.json())["hash"]
    resp = await api.post(f"/faces/{barack}/samples", data=upload("image", BIDEN2))
    wrong = (await resp.json())["id"]
    week_ago = time.time() - 7 * 86400
    vid = await store(api, barack, views["biden"], week_ago, week_ago + 20, known=True,
                      name="Barack")

    resp = await api.post(f"/visits/{vid}/not", json={"dry_run": True})
    assert (resp.status, (await resp.json())["culprit"]["id"]) == (200, wrong)
    assert (await (await api.get(f"/visits/{vid}")).json())["known"]  # a dry run
    resp = await api.post(f"/visits/{vid}/not", json={})
    assert resp.status == 200, await resp.text()
    visit = await (await api.get(f"/visits/{vid}")).json()
    # A stranger's: the hash of the visit's face (as embedded again from the stored crop).
    assert (visit["known"], visit["name"]) == (False, None) and visit["hash"] != barack
    samples = [s["id"] for s in (await (await api.get(f"/faces/{barack}")).json())["samples"]]
    assert wrong in samples  # kept: only removed when asked by its id
    for photo, name in ((BIDEN, None), (BIDEN2, None), (OBAMA2, "Barack")):
        form = upload("frame", photo)
        faces = (await (await api.post("/process-frame", data=form)).json())["faces"]
        assert [f["name"] for f in faces] == [name], photo.name
    resp = await api.post(f"/visits/{vid}/not", json={})
    assert resp.status == 409  # not named as anybody any more


async def test_strangers_are_grouped_only_on_looks_good_enough_to_judge(
        api: Client, views: dict) -> None:
    """Issue 19, defect 2: a group held three people, one of them a face behind a hand. A
    stranger's visit whose best look is poor (small, blurred, turned: recognition.
    look_quality) stays that visit's alone; a good one starts a group, which a new face
    joins only at the strict rate (GROUP_FAR)."""
    history = api.server.app[HISTORY]
    now = time.time()
    biden = face_hash(views["biden"].embedding)
    poor = replace(views["biden"], quality=GROUP_QUALITY / 2)
    await store(api, biden, poor, now - 60, now - 50)
    assert len(history.unknown_index) == 0
    await store(api, biden, views["biden"], now - 40, now - 30)
    assert len(history.unknown_index) == 1
    assert history.unknown_index.policy.stranger_far == GROUP_FAR
    match = history.unknown_index.identify(views["biden"].embedding)
    assert match is not None and match.hash == biden
    assert history.unknown_index.identify(views["obama"].embedding) is None


# -- reviewing visits (issue 19, defect 6) ----------------------------------------------


async def review(api: Client, action: str, visits: list[str], **body: Any) -> dict:
    resp = await api.post("/visits/review", json={"action": action, "visits": visits, **body})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_visit_keeps_its_decision_and_the_review_filters_find_it(
        api: Client, views: dict) -> None:
    """Each visit keeps why it got its name: the score of the person named, the runner-up
    and the threshold then; the review list filters on camera, low margin and reviewed."""
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    barack = (await resp.json())["hash"]
    resp = await api.post("/faces", data=upload("image", BIDEN2, name="Joe"))
    joe = (await resp.json())["hash"]
    now = time.time()
    named = await store(api, barack, views["obama2"], now - 90, now - 80, True, "Barack",
                        camera="door")
    stranger = await store(api, "ab" * 32, views["obama2"], now - 60, now - 50)
    visits = {v["id"]: v for v in (await (await api.get("/visits")).json())["visits"]}
    # Where the face is in the snapshot, for the viewer to draw: fractions of the frame.
    frame, (x, y, w, h) = views["obama2"].frame, views["obama2"].box
    assert visits[named]["box"] == pytest.approx(
        [x / frame.shape[1], y / frame.shape[0], w / frame.shape[1], h / frame.shape[0]],
        abs=1e-4)
    d = visits[named]["decision"]
    assert d["score"] > d["threshold"] and d["runner"]["hash"] == joe
    assert d["runner"]["name"] == "Joe" and d["runner"]["score"] < d["score"]
    assert d["margin"] == pytest.approx(
        min(d["score"] - d["threshold"], d["score"] - d["runner"]["score"]), abs=1e-3)
    # The same face left a stranger: the nearest person and how far below the threshold.
    s = visits[stranger]["decision"]
    assert s["score"] is None and s["runner"]["hash"] == barack
    assert s["margin"] == pytest.approx(s["threshold"] - s["runner"]["score"], abs=1e-3)
    assert s["margin"] < 0  # Obama's face, not named: far below zero is a wrong decision

    async def ids(query: str) -> list[str]:
        return [v["id"] for v in (await (await api.get(f"/visits?{query}")).json())["visits"]]
    assert await ids("camera=door") == [named]
    assert await ids("low_margin=true") == [stranger]
    assert await ids("reviewed=false") == [stranger, named]
    assert (await review(api, "ignore", [named]))["done"] == 1
    assert await ids("reviewed=false") == [stranger]
    assert await ids("reviewed=true") == [named]
    resp = await api.get("/visits?low_margin=yes")
    assert resp.status == 400 and "low_margin must be true or false" in await resp.text()


async def test_a_week_old_wrong_name_is_corrected_in_one_request(
        api: Client, views: dict) -> None:
    """"This is Joe" on a week-old visit of Biden named Barack (a photo of Biden was one of
    Barack's samples): the visit is Joe's, its face Joe's sample and Barack's negative, so
    that matching does not name it Barack again even if Joe is deleted."""
    gallery = api.server.app[GALLERY]
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    barack = (await resp.json())["hash"]
    await api.post(f"/faces/{barack}/samples", data=upload("image", BIDEN2))  # the mistake
    joe = (await gallery.add("Joe", views["obama2"].embedding[::-1].copy())).hash
    week_ago = time.time() - 7 * 86400
    vid = await store(api, barack, views["biden"], week_ago, week_ago + 20, True, "Barack")
    assert gallery.index.identify(views["biden"].embedding).name == "Barack"
    body = await review(api, "is", [vid], hash=joe)
    assert body["results"] == [{"visit": vid, "done": "sample added", "hash": joe}]
    visit = await (await api.get(f"/visits/{vid}")).json()
    assert (visit["hash"], visit["name"]) == (joe, "Joe") and visit["reviewed_at"]
    samples = (await (await api.get(f"/faces/{joe}")).json())["samples"]
    assert [s["source"] for s in samples] == ["upload", "history"]
    assert len(gallery.negatives(barack)) == 1
    assert gallery.index.identify(views["biden"].embedding).name == "Joe"
    assert (await api.delete(f"/faces/{joe}")).status == 200
    assert gallery.index.identify(views["biden"].embedding) is None  # not Barack again
    assert gallery.index.identify(views["obama2"].embedding).name == "Barack"
    # A visit already right is only confirmed.
    vid = await store(api, barack, views["obama2"], week_ago, week_ago + 5, True, "Barack")
    assert (await review(api, "is", [vid], hash=barack))["results"][0]["done"] == "confirmed"


async def test_a_new_person_or_a_split_takes_only_the_visits_chosen(
        api: Client, views: dict) -> None:
    """A stranger's group holds Obama's visit and Biden's (the mix of defect 2). "A new
    person" on Biden's visit enrolls only that visit; "split" on Obama's visit of another
    group gives it a group of its own. The group's other visits stay the stranger's."""
    history = api.server.app[HISTORY]
    now = time.time()
    group = face_hash(views["obama"].embedding)
    obama = await store(api, group, views["obama"], now - 90, now - 80)
    obama2 = await store(api, group, views["obama2"], now - 70, now - 60)
    biden = await store(api, group, views["biden"], now - 50, now - 40)
    assert len(history.unknown_index) == 1
    body = await review(api, "new", [biden], name="Joe")
    (result,) = body["results"]
    assert result["done"] == "enrolled as Joe" and result["hash"] != group
    visits = {v["id"]: v for v in (await (await api.get("/visits")).json())["visits"]}
    assert (visits[biden]["name"], visits[biden]["hash"]) == ("Joe", result["hash"])
    assert {visits[v]["hash"] for v in (obama, obama2)} == {group}
    assert not visits[obama]["known"]
    body = await review(api, "split", [obama2])
    new = body["results"][0]["hash"]
    visits = {v["id"]: v for v in (await (await api.get("/visits")).json())["visits"]}
    assert visits[obama]["hash"] == group and visits[obama2]["hash"] == new != group
    match = history.unknown_index.identify(views["obama2"].embedding)
    assert match is not None and match.hash in (group, new)
    resp = await api.post("/visits/review", json={"action": "split", "visits": [biden]})
    assert resp.status == 400 and "only a stranger's visits" in await resp.text()
    resp = await api.post("/visits/review", json={"action": "new", "visits": [obama],
                                                  "name": "joe "})
    assert resp.status == 409 and (await resp.json())["reason"] == "name"
    resp = await api.post("/visits/review", json={"action": "fix", "visits": [obama]})
    assert resp.status == 400 and "action must be one of" in await resp.text()


async def test_naming_a_group_takes_only_the_visits_kept(api: Client, views: dict) -> None:
    """Naming a stranger's group that holds Biden's visit among Obama's, with only Obama's
    visits kept: Barack's samples are Obama's faces, and Biden's visit stays a stranger's,
    in a group of its own (defect 2: naming a mixed group put the others into the person)."""
    history = api.server.app[HISTORY]
    now = time.time()
    group = face_hash(views["obama"].embedding)
    kept = [await store(api, group, views[k], now - 90 + 10 * i, now - 85 + 10 * i)
            for i, k in enumerate(("obama", "obama2"))]
    biden = await store(api, group, views["biden"], now - 40, now - 30)
    resp = await api.post("/faces", json={"from_unknown": group, "name": "Barack",
                                          "visits": kept})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["samples"] == 2
    visits = {v["id"]: v for v in (await (await api.get("/visits")).json())["visits"]}
    assert [visits[v]["name"] for v in kept] == ["Barack", "Barack"]
    assert not visits[biden]["known"] and visits[biden]["hash"] != group
    match = history.unknown_index.identify(views["biden"].embedding)
    assert match is not None and match.hash == visits[biden]["hash"]
    resp = await api.post("/faces", json={"from_unknown": visits[biden]["hash"],
                                          "name": "Joe", "visits": kept})
    assert resp.status == 400 and "visits of unknown" in await resp.text()


async def test_a_photo_of_a_stranger_seen_before_says_which_stranger(
        api: Client, views: dict) -> None:
    """Search by photo (issue 19): POST /process-frame answers, for a face nobody enrolled
    is, the stranger's group it was seen as (by the grouping's own rule), with that group's
    visits as GET /unknowns counts them; a face never seen, and an enrolled one, have none."""
    now = time.time()
    biden = face_hash(views["biden"].embedding)
    await store(api, biden, views["biden"], now - 60, now - 50)
    await store(api, biden, views["biden"], now - 40, now - 30)
    resp = await api.post("/process-frame", data=upload("frame", BIDEN2))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    group = body["unknown"]
    assert (body["known"], body["name"], group["hash"]) == (False, None, biden)
    assert body["hash"] != biden  # the photo's own hash, as before
    similarity = group.pop("similarity")
    assert 0.5 < similarity <= 1
    assert group == {"hash": biden, "visits": 2, "first_seen": now - 60, "last_seen": now - 30,
                     "in_view": False, "crop": f"/unknowns/{biden}/crop"}
    assert body["faces"][0]["unknown"] == {**group, "similarity": similarity}
    assert (await api.get(group["crop"])).status == 200
    body = await (await api.post("/process-frame", data=upload("frame", OBAMA2))).json()
    assert (body["known"], body["unknown"]) == (False, None)  # somebody else, never seen

    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    assert resp.status == 201
    for photo, name in ((OBAMA2, "Barack"), (BIDEN2, None)):
        body = await (await api.post("/process-frame", data=upload("frame", photo))).json()
        face = body["faces"][0]
        assert (face["name"], face["unknown"] is None) == (name, name is not None), photo.name
    await api.delete(f"/people/{biden}/visits")  # forgotten: not seen before any more
    body = await (await api.post("/process-frame", data=upload("frame", BIDEN2))).json()
    assert (body["unknown"], body["faces"][0]["unknown"]) == (None, None)


async def test_a_visit_split_off_while_under_way_stays_in_its_new_group(
        api: Client, views: dict) -> None:
    """Biden's visit, still under way, is split off the group it joined: when it ends, its
    face goes to its new group, not back into the one it was split from."""
    history = api.server.app[HISTORY]
    now = time.time()
    group = face_hash(views["obama"].embedding)
    await store(api, group, views["obama"], now - 90, now - 80)
    record = VisitRecord(uuid.uuid4().hex, group, None, False, "cam", now - 5, None,
                         views["biden"])
    history.record(VisitEvent("arrived", record))
    await asyncio.wait_for(history._queue.join(), 10)
    (result,) = (await review(api, "split", [record.id]))["results"]
    history.record(VisitEvent("left", replace(record, left_at=now)))
    await asyncio.wait_for(history._queue.join(), 10)
    assert (await (await api.get(f"/visits/{record.id}")).json())["hash"] == result["hash"]
    assert history._unknowns[group][1] == 1  # Obama's face only
    assert history._unknowns[result["hash"]][1] == 1  # its own face, at its end


async def test_a_stranger_who_joined_a_deleted_person_is_a_stranger_again(
        api: Client, views: dict) -> None:
    """A stranger named as Barack (the same person) joins him; Barack is deleted. The
    stranger's next visit is theirs again, not a visit under the deleted person's hash
    (which a new enrollment of that photo would take over as "last seen just now")."""
    resp = await api.post("/faces", data=upload("image", OBAMA, name="Barack"))
    barack = (await resp.json())["hash"]
    now = time.time()
    stranger = face_hash(views["biden"].embedding)
    await store(api, stranger, views["biden"], now - 60, now - 50)
    resp = await api.post("/faces", json={"from_unknown": stranger, "name": "Barack",
                                          "same_name": barack})
    assert resp.status == 201, await resp.text()
    assert (await api.delete(f"/faces/{barack}")).status == 200
    later = await store(api, stranger, views["biden"], now - 20, now - 10)
    assert (await (await api.get(f"/visits/{later}")).json())["hash"] == stranger
    assert (await (await api.get(f"/visits?person={barack}")).json())["visits"] == []

"""HTTP API on the real app (real worker pool, real model, real SQLite), via app_client.

The REST API needs no camera: these tests build the app with ``live=False`` (gallery, history
and workers, no capture thread or recognition lanes), so nothing competes with the uploads
for the workers and nobody is ever in view."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from facestream.appkeys import CONFIG, GALLERY
from facestream.config import Config, ServerConfig
from facestream.db.disk import DB_FILE
from facestream.privacy import email_digest, load_or_create_secret

from .conftest import BIDEN, GROUP, OBAMA, OBAMA2, OBAMA3, RGBA_PNG, WEBP_AS_JPG, upload
from .support import metric

Client = TestClient[Any, Any]


@pytest.fixture
async def client(app_client: Any, config_factory: Callable[..., Config]) -> Client:
    cfg = config_factory()
    cfg = dataclasses.replace(cfg, server=ServerConfig(max_upload_mb=2.0))
    return await app_client(cfg, live=False)


#: Where YuNet finds the faces (x, y, w, h), measured once; a few pixels of slack.
OBAMA_BOX = [374, 95, 231, 321]
GROUP_FACES = 6
UPLOAD_LIMIT = 2 * 1024 * 1024
NOT_AN_IMAGE = "not an image that can be decoded (JPEG, PNG, WEBP, BMP, TIFF)"


def huge_canvas_png() -> bytes:
    """An 80 KB PNG whose canvas is 81 megapixels: refused before it is decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG")
    return buf.getvalue()


async def test_process_frame_returns_hash_coords_and_embedding(client: Client) -> None:
    resp = await client.post("/process-frame", data=upload("frame", OBAMA.read_bytes()))
    assert resp.status == 200
    body = await resp.json()
    emb = np.array(body["embedding"], dtype=np.float32)
    assert emb.shape == (128,)
    # The hash is the SHA-256 of the returned float32 embedding: clients can check it.
    assert body["hash"] == hashlib.sha256(emb.astype("<f4").tobytes()).hexdigest()
    assert body["coords"] == pytest.approx(OBAMA_BOX, abs=4)
    assert (body["name"], body["known"], body["similarity"]) == (None, False, None)
    # Nobody enrolled, and no stranger seen before (tests/test_history.py has one that was).
    assert body["unknown"] is None
    assert body["faces"] == [{"hash": body["hash"], "name": None, "known": False,
                              "similarity": None, "box": body["coords"],
                              "score": body["score"], "unknown": None}]


async def test_process_frame_answers_each_face_detection_score(client: Client) -> None:
    body = await (await client.post("/process-frame",
                                    data=upload("frame", GROUP.read_bytes()))).json()
    scores = [f["score"] for f in body["faces"]]
    assert len(scores) == GROUP_FACES and all(0.7 <= s <= 1.0 for s in scores)
    # Largest face first; the top-level fields describe that one.
    areas = [f["box"][2] * f["box"][3] for f in body["faces"]]
    assert areas == sorted(areas, reverse=True)
    assert (body["score"], body["coords"]) == (scores[0], body["faces"][0]["box"])


async def test_process_frame_accepts_base64_bare_and_data_url(client: Client) -> None:
    raw = OBAMA.read_bytes()
    first = await (await client.post("/process-frame", data=upload("frame", raw))).json()
    b64 = base64.b64encode(raw).decode()
    for value, path in ((b64, "/process-frame"), (f"data:image/jpeg;base64,{b64}", "/process-frame/")):
        resp = await client.post(path, data={"frame": value})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["hash"] == first["hash"]


async def test_process_frame_handles_odd_real_images(client: Client) -> None:
    for path in (WEBP_AS_JPG, RGBA_PNG):  # a WEBP named .jpg, a 32-bit PNG with alpha
        resp = await client.post("/process-frame", data=upload("frame", path.read_bytes()))
        assert resp.status == 200, (path.name, await resp.text())
        assert len((await resp.json())["faces"]) == 1, path.name


async def test_bad_uploads_get_clear_errors_and_the_server_keeps_serving(
    client: Client, no_face_png: bytes
) -> None:
    cases: list[tuple[str, Any, int, str]] = [
        ("pdf", upload("frame", b"%PDF-1.4 not an image"), 400, NOT_AN_IMAGE),
        ("cut jpeg", upload("frame", OBAMA.read_bytes()[:-4000]), 400,
         "the image data is corrupt or truncated and cannot be decoded"),
        # 200 bytes hold the JPEG markers but not even the frame header: nothing to decode.
        ("jpeg head", upload("frame", OBAMA.read_bytes()[:200]), 400, NOT_AN_IMAGE),
        ("no face", upload("frame", no_face_png, "empty.png"), 422,
         "no face found in the image"),
        ("wrong field", upload("image", OBAMA.read_bytes()), 400,
         "missing form field 'frame' (an image file or a base64 string)"),
        ("bad base64", {"frame": "!!!not base64!!!"}, 400,
         "frame is neither an image file nor a base64 image"),
        ("2.5 MB", upload("frame", b"\xff" * (UPLOAD_LIMIT + UPLOAD_LIMIT // 4)), 413,
         "frame is larger than server.max_upload_mb (2 MiB)"),
        ("81 Mpx", upload("frame", huge_canvas_png()), 413,
         "image is 9000x9000 pixels; the limit is 40000000 pixels"),
        ("json", None, 400, "send a multipart/form-data or urlencoded form with a 'frame' field"),
    ]
    for label, data, status, message in cases:
        if data is None:
            resp = await client.post("/process-frame", json={"frame": "x"})
        else:
            resp = await client.post("/process-frame", data=data)
        assert (resp.status, await resp.json()) == (status, {"error": message}), label
    # A body past the request size limit is refused before the handler runs, naming the
    # same setting.
    resp = await client.post("/process-frame",
                             data=upload("frame", b"\xff" * (3 * UPLOAD_LIMIT // 2)))
    assert (resp.status, await resp.json()) == (
        413, {"error": "the request is larger than server.max_upload_mb (2 MiB)"})
    resp = await client.post("/process-frame", data=upload("frame", OBAMA.read_bytes()))
    assert resp.status == 200


async def test_enroll_list_rename_delete(client: Client) -> None:
    seen = await (await client.post("/process-frame", data=upload("frame", OBAMA.read_bytes()))
                  ).json()
    resp = await client.post("/faces", data=upload("image", OBAMA.read_bytes(), name="Barack",
                                                   email="barack@example.org"))
    enrolled = await resp.json()
    # The person keeps the hash its face had before it was enrolled.
    assert (resp.status, enrolled) == (201, {"hash": seen["hash"], "name": "Barack",
                                        "samples": 1})

    # Another photo of the same person is recognised by hash and name.
    body = await (await client.post("/process-frame",
                                    data=upload("frame", OBAMA3.read_bytes()))).json()
    assert body["hash"] == enrolled["hash"] and body["known"] and body["name"] == "Barack"
    assert body["similarity"] >= Config().recognition.policy().identify_threshold(1)
    # ...and a different person is not.
    body = await (await client.post("/process-frame",
                                    data=upload("frame", BIDEN.read_bytes()))).json()
    assert (body["known"], body["name"], body["similarity"]) == (False, None, None)
    assert body["hash"] != enrolled["hash"]

    # Enrolling the same person again: 409 with the existing hash.
    resp = await client.post("/faces", data=upload("image", OBAMA2.read_bytes(), name="Obama"))
    assert (resp.status, await resp.json()) == (409, {
        "error": "this face is already enrolled as 'Barack'", "hash": enrolled["hash"],
        "name": "Barack"})

    listing = await (await client.get("/faces")).json()
    assert [(f["hash"], f["name"], f["has_email"]) for f in listing["faces"]] == [
        (enrolled["hash"], "Barack", True)
    ]
    resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": "Barack Obama"})
    assert resp.status == 200 and (await resp.json())["name"] == "Barack Obama"
    stored = await (await client.get(f"/faces/{enrolled['hash']}")).json()
    assert stored["name"] == "Barack Obama"
    resp = await client.delete(f"/faces/{enrolled['hash']}")
    assert (resp.status, await resp.json()) == (
        200, {"deleted": enrolled["hash"], "name": "Barack Obama"})
    assert await (await client.get("/faces")).json() == {"faces": [], "total": 0, "offset": 0,
                                                         "limit": 50}
    gone = {"error": f"no enrolled person with hash {enrolled['hash']}"}
    resp = await client.delete(f"/faces/{enrolled['hash']}")
    assert (resp.status, await resp.json()) == (404, gone)
    resp = await client.patch(f"/faces/{'0' * 64}", json={"name": "x"})
    assert (resp.status, await resp.json()) == (
        404, {"error": f"no enrolled person with hash {'0' * 64}"})


async def test_enroll_errors(client: Client, no_face_png: bytes) -> None:
    cases = [
        ("no name", upload("image", OBAMA.read_bytes()), 400, "missing form field 'name'"),
        ("no image", upload("picture", OBAMA.read_bytes(), name="x"), 400,
         "missing form field 'image'"),
        ("no face", upload("image", no_face_png, name="x"), 422, "no face found in the image"),
        ("not an image", upload("image", b"GIF89a....", name="x"), 400, NOT_AN_IMAGE),
        ("bad email", upload("image", OBAMA.read_bytes(), name="x", email="not-an-email"), 400,
         "email is not a valid address"),
    ]
    for label, data, status, message in cases:
        resp = await client.post("/faces", data=data)
        assert (resp.status, await resp.json()) == (status, {"error": message}), label
    resp = await client.post("/faces", data=b"{not json", headers={"Content-Type": "application/json"})
    assert (resp.status, await resp.json()) == (400, {
        "error": 'request body is not valid JSON; send {"from_live": true, "name": ...}'})
    resp = await client.post("/faces", json={"name": "x"})
    assert (resp.status, await resp.json()) == (400, {
        "error": 'JSON enrollment needs {"from_live": true, "name": ...} (or "from_visit": '
                 '<visit id> or "from_unknown": <hash>); to enroll an image, send multipart '
                 "with 'image' and 'name'"})
    resp = await client.patch(f"/faces/{'0' * 64}", json={"nom": "x"})
    assert (resp.status, await resp.json()) == (400, {"error": 'send JSON {"name": "..."}'})
    # Nothing was enrolled by any of them.
    assert await (await client.get("/faces")).json() == {"faces": [], "total": 0, "offset": 0,
                                                         "limit": 50}


async def test_enrolling_from_the_live_view_without_a_camera_finds_nobody(client: Client) -> None:
    resp = await client.post("/faces", json={"from_live": True, "name": "x"})
    assert (resp.status, await resp.json()) == (
        422, {"error": "no unknown face in the live view to enroll"})


async def test_email_never_reaches_disk_or_log_in_plain_text(
    client: Client, config_factory: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every record the server process writes, not only warnings
    email = "private.person@example.org"
    resp = await client.post("/faces", data=upload("image", BIDEN.read_bytes(), name="Joe",
                                                   email=email))
    assert resp.status == 201
    cfg = client.server.app[CONFIG]
    stored = b"".join(p.read_bytes() for p in Path(cfg.storage.data_dir).iterdir() if p.is_file())
    assert email.encode() not in stored
    assert email not in caplog.text
    with sqlite3.connect(Path(cfg.storage.data_dir) / DB_FILE) as db:
        (digest,) = db.execute("SELECT email_hmac FROM people").fetchone()
    secret = load_or_create_secret(Path(cfg.storage.data_dir), cfg.storage.secret)
    assert digest == email_digest(secret, email)


UPLOADS = 'facestream_stage_seconds_count{stage="upload"}'


async def test_metrics_count_each_upload_and_embedded_face(client: Client) -> None:
    async def counts() -> tuple[float, ...]:
        return tuple([await metric(client, name) for name in (
            UPLOADS, "facestream_faces_embedded_total", "facestream_gallery_identities",
            "facestream_frames_captured_total", "facestream_frames_processed_total")])

    assert await counts() == (0, 0, 0, 0, 0)
    resp = await client.post("/process-frame", data=upload("frame", GROUP.read_bytes()))
    assert resp.status == 200
    resp = await client.post("/faces", data=upload("image", OBAMA.read_bytes(), name="B"))
    assert resp.status == 201
    resp = await client.post("/process-frame", data=upload("frame", b"not an image"))
    assert resp.status == 400  # refused by the decoder: not timed as an upload
    # Two uploads analysed, 6 + 1 faces embedded, one person; no camera frames at all.
    assert await counts() == (2, GROUP_FACES + 1, 1, 0, 0)


async def test_the_gallery_is_answered_a_capped_page_at_a_time(client: Client) -> None:
    """No answer lists more than 200 people, whatever ``limit`` asks: a 200,000-person
    gallery answered whole was 78 MB and held the server for seconds. ``q`` finds names
    on the server, ``page_of`` the page a person is on."""
    gallery = client.server.app[GALLERY]
    rng = np.random.default_rng(7)
    hashes = []
    for i in range(230):
        emb = rng.standard_normal(128).astype(np.float32)
        ident = await gallery.add(f"Person {i:03d}" if i != 170 else "Zelda Quint",
                                  emb / np.linalg.norm(emb), force=True)
        hashes.append(ident.hash)
    body = await (await client.get("/faces", params={"limit": "100000"})).json()
    assert (len(body["faces"]), body["total"], body["offset"], body["limit"]) == (200, 230, 0, 200)
    assert [f["hash"] for f in body["faces"]] == hashes[:200]  # oldest first
    body = await (await client.get("/faces")).json()
    assert (len(body["faces"]), body["limit"]) == (50, 50)
    body = await (await client.get("/faces", params={"offset": "200", "limit": "200"})).json()
    assert [f["hash"] for f in body["faces"]] == hashes[200:]
    body = await (await client.get("/faces", params={"q": "  zELDA "})).json()
    assert ([f["name"] for f in body["faces"]], body["total"]) == (["Zelda Quint"], 1)
    body = await (await client.get("/faces", params={"q": "person 1", "limit": "20"})).json()
    assert body["total"] == 99 and len(body["faces"]) == 20  # 100-199 but Zelda's 170
    body = await (await client.get("/faces", params={"page_of": hashes[130]})).json()
    assert body["offset"] == 100 and hashes[130] in [f["hash"] for f in body["faces"]]
    body = await (await client.get("/faces", params={"page_of": hashes[170], "q": "quint",
                                                     "limit": "10"})).json()
    assert (body["offset"], [f["hash"] for f in body["faces"]]) == (0, [hashes[170]])
    resp = await client.get("/faces", params={"page_of": hashes[3], "q": "quint"})
    assert resp.status == 404
    resp = await client.get("/faces", params={"page_of": "x"})
    assert (resp.status, await resp.json()) == (400, {
        "error": "page_of must be a 64-character hex string"})


async def test_health_describes_the_configuration_without_a_camera(client: Client) -> None:
    resp = await client.get("/healthz")
    assert (resp.status, await resp.json()) == (200, {
        "status": "ok", "recognizer": "ok", "camera": None, "model": "SFace",
        "detector": "yunet",
        "threshold": 0.363,
        "identify_threshold": None,  # nobody enrolled: nobody can be named
        "stranger_far": 0.01, "workers": 1, "upload_workers": 1, "worker_restarts": 0,
        "gallery": 0,
        "storage": {"kind": "sqlite", "state": "ok"},
        "mqtt": {"state": "off"}, "webhooks": [],  # none configured
    })
    resp = await client.post("/faces", data=upload("image", OBAMA.read_bytes(), name="B"))
    assert resp.status == 201
    health = await (await client.get("/healthz")).json()
    assert health["gallery"] == 1
    threshold = Config().recognition.policy().identify_threshold(1)
    assert health["identify_threshold"] == round(threshold, 4)


async def test_the_dashboard_modules_are_revalidated_before_each_use(client: Client) -> None:
    """The page links its entry module with a hash of its content; the modules it imports
    have none, so every static file is answered no-cache, then 304 while unchanged."""
    page = await (await client.get("/")).text()
    entry = re.search(r'<script type="module" src="(/static/js/main\.js\?v=[\w%-]+)">', page)
    assert entry, page
    for url in (entry.group(1), "/static/js/dom.js"):
        resp = await client.get(url)
        assert (resp.status, resp.headers["Cache-Control"]) == (200, "no-cache"), url
        again = await client.get(url, headers={"If-None-Match": resp.headers["ETag"]})
        assert (again.status, again.headers["Cache-Control"]) == (304, "no-cache"), url

async def test_unknown_routes_and_methods_answer_json(client: Client) -> None:
    resp = await client.get("/nope")
    assert (resp.status, await resp.json()) == (404, {"error": "404: Not Found"})
    resp = await client.put("/faces")
    assert (resp.status, await resp.json()) == (405, {"error": "405: Method Not Allowed"})

"""HTTP API on the real app (real worker pool, real model, real SQLite), via aiohttp_client."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from facestream.appkeys import CONFIG
from facestream.config import Config, ServerConfig
from facestream.server import create_app
from facestream.storage import DB_FILE

from .conftest import BIDEN, GROUP, OBAMA, OBAMA2, OBAMA3, RGBA_PNG, WEBP_AS_JPG

Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Any, config_factory: Callable[..., Config]) -> Client:
    cfg = config_factory()
    cfg = dataclasses.replace(cfg, server=ServerConfig(max_upload_mb=2.0))
    return await aiohttp_client(create_app(cfg))


def huge_canvas_png() -> bytes:
    """An 80 KB PNG whose canvas is 81 megapixels: refused before it is decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG")
    return buf.getvalue()


def upload(field: str, data: bytes, filename: str = "face.jpg", **fields: str) -> FormData:
    form = FormData()
    form.add_field(field, io.BytesIO(data), filename=filename,
                   content_type="application/octet-stream")
    for k, v in fields.items():
        form.add_field(k, v)
    return form


async def test_process_frame_returns_hash_coords_and_embedding(client: Client) -> None:
    resp = await client.post("/process-frame", data=upload("frame", OBAMA.read_bytes()))
    assert resp.status == 200
    body = await resp.json()
    emb = np.array(body["embedding"], dtype=np.float32)
    assert emb.shape == (128,)
    # The hash is the SHA-256 of the returned float32 embedding: clients can check it.
    assert body["hash"] == hashlib.sha256(emb.astype("<f4").tobytes()).hexdigest()
    _, _, w, h = body["coords"]
    assert w > 50 and h > 50
    assert body["faces"][0]["hash"] == body["hash"] and body["known"] is False


async def test_process_frame_answers_each_face_detection_score(client: Client) -> None:
    body = await (await client.post("/process-frame",
                                    data=upload("frame", GROUP.read_bytes()))).json()
    scores = [f["score"] for f in body["faces"]]
    assert len(scores) >= 3 and all(0.7 <= s <= 1.0 for s in scores)
    assert body["score"] == scores[0]


async def test_a_chart_is_not_a_face(client: Client) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.pie([3, 2, 1])
    ax.plot([0.2, 0.5, 0.8], [0.3, 0.6, 0.1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    resp = await client.post("/process-frame", data=upload("frame", buf.getvalue(), "c.png"))
    assert resp.status == 422
    assert (await resp.json()) == {"error": "no face found in the image"}


async def test_process_frame_accepts_base64_bare_and_data_url(client: Client) -> None:
    raw = OBAMA.read_bytes()
    first = await (await client.post("/process-frame", data=upload("frame", raw))).json()
    b64 = base64.b64encode(raw).decode()
    for value, path in ((b64, "/process-frame"), (f"data:image/jpeg;base64,{b64}", "/process-frame/")):
        resp = await client.post(path, data={"frame": value})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["hash"] == first["hash"]


async def test_process_frame_handles_odd_real_images(client: Client) -> None:
    for path in (WEBP_AS_JPG, RGBA_PNG):
        resp = await client.post("/process-frame", data=upload("frame", path.read_bytes()))
        assert resp.status == 200, (path.name, await resp.text())
    resp = await client.post("/process-frame", data=upload("frame", GROUP.read_bytes()))
    assert len((await resp.json())["faces"]) >= 3


async def test_bad_uploads_get_clear_errors_and_the_server_keeps_serving(
    client: Client, no_face_png: bytes
) -> None:
    cases = [
        (upload("frame", b"%PDF-1.4 not an image"), 400, "not an image"),
        (upload("frame", OBAMA.read_bytes()[:-4000]), 400, "corrupt or truncated"),
        (upload("frame", OBAMA.read_bytes()[:200]), 400, ""),
        (upload("frame", no_face_png, "empty.png"), 422, "no face"),
        (upload("image", OBAMA.read_bytes()), 400, "missing form field 'frame'"),
        ({"frame": "!!!not base64!!!"}, 400, "base64"),
        (upload("frame", b"\xff" * (3 * 1024 * 1024)), 413, ""),
        (upload("frame", huge_canvas_png()), 413, "9000x9000"),
    ]
    for data, status, text in cases:
        resp = await client.post("/process-frame", data=data)
        body = await resp.json()
        assert resp.status == status, body
        assert text in body["error"]
    resp = await client.post("/process-frame", json={"frame": "x"})
    assert resp.status == 400
    assert (await client.get("/healthz")).status == 200
    resp = await client.post("/process-frame", data=upload("frame", OBAMA.read_bytes()))
    assert resp.status == 200


async def test_enroll_list_rename_delete(client: Client) -> None:
    resp = await client.post("/faces", data=upload("image", OBAMA.read_bytes(), name="Barack",
                                                   email="barack@example.org"))
    assert resp.status == 201
    enrolled = await resp.json()
    assert enrolled["name"] == "Barack" and len(enrolled["hash"]) == 64

    # Another photo of the same person is recognised by hash and name.
    body = await (await client.post("/process-frame",
                                    data=upload("frame", OBAMA3.read_bytes()))).json()
    assert body["hash"] == enrolled["hash"] and body["known"] and body["name"] == "Barack"
    assert body["similarity"] >= Config().recognition.policy().identify_threshold(1)
    # ...and a different person is not.
    body = await (await client.post("/process-frame",
                                    data=upload("frame", BIDEN.read_bytes()))).json()
    assert not body["known"] and body["hash"] != enrolled["hash"]

    # Enrolling the same person again: 409 with the existing hash.
    resp = await client.post("/faces", data=upload("image", OBAMA2.read_bytes(), name="Obama"))
    assert resp.status == 409
    assert (await resp.json())["hash"] == enrolled["hash"]

    listing = await (await client.get("/faces")).json()
    assert [(f["hash"], f["name"], f["has_email"]) for f in listing["faces"]] == [
        (enrolled["hash"], "Barack", True)
    ]
    resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": "Barack Obama"})
    assert resp.status == 200 and (await resp.json())["name"] == "Barack Obama"
    resp = await client.delete(f"/faces/{enrolled['hash']}")
    assert resp.status == 200
    assert (await (await client.get("/faces")).json())["faces"] == []
    assert (await client.delete(f"/faces/{enrolled['hash']}")).status == 404
    assert (await client.patch(f"/faces/{'0' * 64}", json={"name": "x"})).status == 404


async def test_enroll_errors(client: Client, no_face_png: bytes) -> None:
    cases = [
        (upload("image", OBAMA.read_bytes()), 400, "name"),
        (upload("picture", OBAMA.read_bytes(), name="x"), 400, "image"),
        (upload("image", no_face_png, name="x"), 422, "no face"),
        (upload("image", b"GIF89a....", name="x"), 400, "not an image"),
        (upload("image", OBAMA.read_bytes(), name="x", email="not-an-email"), 400, "email"),
    ]
    for data, status, text in cases:
        resp = await client.post("/faces", data=data)
        body = await resp.json()
        assert resp.status == status, body
        assert text in body["error"]
    resp = await client.post("/faces", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post("/faces", json={"name": "x"})
    assert resp.status == 400
    resp = await client.patch(f"/faces/{'0' * 64}", json={"nom": "x"})
    assert resp.status == 400
    assert (await client.get("/faces")).status == 200


async def test_email_never_reaches_disk_or_log_in_plain_text(
    client: Client, config_factory: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    email = "private.person@example.org"
    resp = await client.post("/faces", data=upload("image", BIDEN.read_bytes(), name="Joe",
                                                   email=email))
    assert resp.status == 201
    cfg = client.server.app[CONFIG]
    stored = b"".join(p.read_bytes() for p in Path(cfg.storage.data_dir).iterdir() if p.is_file())
    assert email.encode() not in stored
    assert email not in caplog.text
    with sqlite3.connect(Path(cfg.storage.data_dir) / DB_FILE) as db:
        (digest,) = db.execute("SELECT email_hmac FROM identities").fetchone()
    assert len(digest) == 64


async def test_metrics_and_health(client: Client) -> None:
    text = await (await client.get("/metrics")).text()
    for name in (
        "facestream_frames_captured_total",
        "facestream_frames_processed_total",
        "facestream_stream_clients",
        "facestream_stage_seconds_bucket",
    ):
        assert name in text
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["model"] == "SFace"
    assert health["detector"] == "yunet" and health["stranger_far"] == 0.01
    assert health["identify_threshold"] is None  # nobody enrolled: nobody can be named


async def test_unknown_routes_and_methods_answer_json(client: Client) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await client.put("/faces")
    assert resp.status == 405 and "error" in await resp.json()

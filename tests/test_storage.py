"""The gallery: durable, private, one model only, hashes fixed forever.

The tests that take ``store`` run on both databases, SQLite and PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facestream.config import Config
from facestream.db.disk import DB_FILE
from facestream.gallery_types import (
    AlreadyEnrolled,
    LastSample,
    ModelMismatch,
    NotFound,
    StoredImages,
)
from facestream.matching import face_hash, normalize
from facestream.privacy import email_digest, load_or_create_secret, redact_source
from facestream.storage import Gallery

from .conftest import Store, free_port
from .support import GalleryChanges, unit

SECRET = b"k" * 32


async def open_gallery(path: Path, model: str = "Dlib") -> Gallery:
    return await Gallery.open(path, model, Config().recognition.policy(model), SECRET)


async def test_enrollment_is_committed_before_add_returns(store: Store) -> None:
    g = await store.open()
    try:
        emb = unit(1)
        ident = await g.add("Ada", emb)
        assert ident.hash == face_hash(emb)
        # A separate connection (another process, a crash-restart) already sees the row.
        rows = await store.rows(
            "SELECT hash, name, model FROM people JOIN samples ON person = hash")
        assert rows == [(ident.hash, "Ada", "Dlib")]
    finally:
        await g.close()


async def test_same_face_twice_is_refused_with_existing_hash(store: Store) -> None:
    g = await store.open()
    try:
        first = await g.add("Ada", unit(1))
        near = normalize(unit(1) + 0.01 * unit(3))  # same person, another photo
        with pytest.raises(AlreadyEnrolled) as exc:
            await g.add("Ada again", near)
        assert exc.value.hash == first.hash
        assert len(g.list()) == 1
    finally:
        await g.close()


async def test_email_is_stored_only_as_hmac(store: Store) -> None:
    g = await store.open(secret=SECRET)
    try:
        ident = await g.add("Ada", unit(1), email="Ada@Example.org ")
        assert ident.has_email
        assert [i.hash for i in await g.find_by_email("ada@example.ORG")] == [ident.hash]
    finally:
        await g.close()
    if not store.url:
        raw = b"".join(p.read_bytes() for p in store.data_dir.iterdir()
                       if p.name.startswith(DB_FILE))
        assert b"ada@example.org" not in raw.lower()
    rows = await store.rows("SELECT * FROM people")
    assert "ada@example.org" not in repr(rows).lower()
    assert (await store.rows("SELECT email_hmac FROM people")) == [
        (email_digest(SECRET, "ada@example.org"),)]


async def test_gallery_refuses_to_mix_models(store: Store) -> None:
    g = await store.open("Facenet")
    await g.add("Ada", unit(1))
    with pytest.raises(ModelMismatch) as exc:
        await g.add("Bob", unit(2), model="Dlib")
    assert str(exc.value) == "embedding made by Dlib cannot join a gallery of Facenet embeddings"
    assert [i.name for i in g.list()] == ["Ada"]
    await g.close()
    with pytest.raises(ModelMismatch) as exc:
        await store.open("Dlib")
    assert str(exc.value) == (
        f"{store.describe} holds embeddings made 1 by Facenet, but "
        "recognition.model is Dlib; embeddings of different models cannot be compared: run "
        "`python -m facestream reembed --model Dlib` to rebuild them from the stored face "
        'crops, or set recognition.model = "Facenet"')


async def test_operations_fire_events_and_persist(store: Store) -> None:
    g = await store.open(secret=SECRET)
    events = GalleryChanges(g)
    try:
        ada = await g.add("Ada", unit(1), email=" Ada@Example.org ",
                          images=StoredImages(b"ada-crop", b"ada-context", {"box": [1, 2, 3, 4]}))
        bob = await g.add("Bob", unit(2))
        assert ada.hash == face_hash(unit(1))
        second = await g.add_sample(ada.hash, unit(3), images=StoredImages(b"ada-crop-2"))
        await g.rename(bob.hash, "Robert")
        await g.delete_sample(ada.hash, second.id)
        merged = await g.merge(ada.hash, bob.hash)
        assert [s.id for s in merged.samples] == [ada.samples[0].id, bob.samples[0].id]
        assert await g.crop(ada.hash) == b"ada-crop"
        await g.delete_sample(ada.hash, ada.samples[0].id)
        with pytest.raises(LastSample):
            await g.delete_sample(ada.hash, bob.samples[0].id)
        assert events.kinds() == [
            ("added", ada.hash), ("added", bob.hash), ("sample_added", ada.hash),
            ("renamed", bob.hash), ("sample_deleted", ada.hash), ("merged", ada.hash),
            ("sample_deleted", ada.hash)]
        match = g.index.identify(unit(2))
        assert match is not None and (match.hash, match.name) == (ada.hash, "Ada")
        assert await g.crop(ada.hash) is None  # the sample with the crop is gone
        assert [i.hash for i in await g.find_by_email("ada@example.org")] == [ada.hash]
        with pytest.raises(AlreadyEnrolled):
            await g.add("Ada again", unit(1))
        with pytest.raises(NotFound):
            await g.rename("0" * 64, "x")
    finally:
        await g.close()
        await g.close()  # idempotent

    again = await store.open(secret=SECRET)
    try:
        [ident] = again.list()
        assert (ident.hash, ident.name, ident.has_email) == (ada.hash, "Ada", True)
        assert [s.id for s in ident.samples] == [bob.samples[0].id]
        [(_, email_hmac, [record])] = await again.records()
        assert email_hmac == email_digest(SECRET, "ada@example.org")
        np.testing.assert_array_equal(record.embedding, unit(2))
        await again.rename(ada.hash, "Ada Lovelace")
    finally:
        await again.close()
    renamed = await store.open(secret=SECRET)
    try:  # the new name is kept, and the index built on opening answers with it
        assert [(i.hash, i.name) for i in renamed.list()] == [(ada.hash, "Ada Lovelace")]
        match = renamed.index.identify(unit(2))
        assert match is not None and (match.hash, match.name) == (ada.hash, "Ada Lovelace")
        await renamed.delete(ada.hash)
        assert renamed.list() == [] and renamed.index.identify(unit(2)) is None
    finally:
        await renamed.close()
    last = await store.open(secret=SECRET)
    try:
        assert last.list() == [] and await last.records() == []
        with pytest.raises(NotFound):
            await last.delete(ada.hash)
    finally:
        await last.close()


async def test_a_new_gallery_and_its_wal_files_are_private(tmp_path: Path) -> None:
    """Face images and embeddings: readable by this user alone, like secret.key."""
    g = await open_gallery(tmp_path)
    await g.add("Ada", unit(1))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()
             if p.name.startswith(DB_FILE)}
    await g.close()
    assert modes == {DB_FILE: 0o600, f"{DB_FILE}-wal": 0o600, f"{DB_FILE}-shm": 0o600}


def test_secret_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    key = load_or_create_secret(tmp_path)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == key
    assert load_or_create_secret(tmp_path, "configured") == b"configured"


#: Camera sources and how logs, /healthz, /cameras and the "no signal" card show them.
REDACTED_SOURCES = [
    ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://***@10.0.0.5:554/s1"),
    ("http://u:hunter2@cam/video.mjpg?token=abc", "http://***@cam/video.mjpg?token=***"),
    ("rtsp://admin@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:hunter2@cam", "rtsp://***@cam"),
    # Passwords with the characters urlsplit takes for the end of the userinfo or host.
    ("rtsp://admin:pa#ss@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:pa?ss@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:pa/ss@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:p@ss@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:p:a:ss@cam:554/live", "rtsp://***@cam:554/live"),
    ("rtsp://admin:pa ss@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:p@ss/w?rd#1@10.0.0.5:554/live?channel=2",
     "rtsp://***@10.0.0.5:554/live?channel=***"),
    ("RTSP://Admin:Secret@Cam/Live?Password=z", "RTSP://***@Cam/Live?Password=***"),
    ("rtsp://u:p@[fe80::1%25eth0]:554/live", "rtsp://***@[fe80::1%25eth0]:554/live"),
    # Every query value, whatever the parameter is called: no list of names can know
    # every camera's (loginuse/loginpas, psw, pw, p, upw ...).
    ("rtsp://cam/live?user=admin&password=hunter2&channel=1",
     "rtsp://cam/live?user=***&password=***&channel=***"),
    ("http://cam/videostream.cgi?loginuse=admin&loginpas=S3cret",
     "http://cam/videostream.cgi?loginuse=***&loginpas=***"),
    ("rtsp://cam/x?psw=a&pw=b&p=c&upw=d&fps=5", "rtsp://cam/x?psw=***&pw=***&p=***&upw=***&fps=***"),
    ("rtsp://cam/x?user=***&pw=hunter2", "rtsp://cam/x?user=***&pw=***"),
    ("https://s3.example/cam.mjpg?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&size=2",
     "https://s3.example/cam.mjpg?X-Amz-Credential=***&X-Amz-Signature=***&size=***"),
    # A bare query word may be a token too.
    ("http://cam/video.mjpg?Zm9vYmFy&fps=5", "http://cam/video.mjpg?***&fps=***"),
    # A value runs to the next "&", whatever else it holds.
    ("http://cam/video?token=ab/cd?ef#gh&fps=5", "http://cam/video?token=***&fps=***"),
    ("http://cam/video#access_token=xyz", "http://cam/video#access_token=***"),
    # In the path, as some cameras take them.
    ("rtsp://10.0.0.9:554/user=admin&password=123456&channel=1&stream=0.sdp",
     "rtsp://10.0.0.9:554/user=***&password=***&channel=***&stream=***"),
    ("rtsp://10.0.0.9:554/user=admin_password=123456_channel=1_stream=0.sdp",
     "rtsp://10.0.0.9:554/user=***"),
    ("rtsp://10.0.0.9/live;pw=x/ch1", "rtsp://10.0.0.9/live;pw=***"),
    # Both at once.
    ("rtsp://admin:x@cam/live?sig=abc", "rtsp://***@cam/live?sig=***"),
    # The path itself is kept: it says which stream.
    ("rtsp://cam:554/Streaming/Channels/101", "rtsp://cam:554/Streaming/Channels/101"),
    # An "@" in the last query value: the rule hides too much (the host), never too little.
    ("http://cam/snap?mail=x@y.org", "http://***@y.org"),
    # Not URLs: kept as they are.
    ("/videos/door.mp4", "/videos/door.mp4"),
    ("/videos/a@b?c=1.mp4", "/videos/a@b?c=1.mp4"),
    ("0", "0"),
]


@pytest.mark.parametrize("source,shown", REDACTED_SOURCES)
def test_camera_credentials_are_redacted(source: str, shown: str) -> None:
    assert redact_source(source) == shown


async def test_a_live_server_shows_and_logs_no_camera_credentials(
    app_client: Any, config_factory: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """The live app on a camera URL with a password and credentials in parameters no list
    of names knows (loginuse/loginpas, pw), at 127.0.0.1 on a closed port: /healthz,
    /cameras and every log record (DEBUG and up) name the camera without them."""
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there: the capture keeps failing to connect
    # No "/ ? #" in the password: FFmpeg too must take the host for 127.0.0.1.
    source = (f"rtsp://admin:p@ss:w rd@127.0.0.1:{port}/live?loginuse=cam0user&"
              "loginpas=L0GINPAS&pw=PW42&channel=1")
    shown = f"rtsp://***@127.0.0.1:{port}/live?loginuse=***&loginpas=***&pw=***&channel=***"
    client = await app_client(config_factory(source))
    for _ in range(200):
        if sum("cannot open" in r.getMessage() for r in caplog.records) >= 2:
            break
        await asyncio.sleep(0.05)
    resp = await client.get("/healthz")
    assert resp.status == 200
    camera = (await resp.json())["camera"]
    assert (camera["source"], camera["signal"]) == (shown, False)
    (listed,) = (await (await client.get("/cameras")).json())["cameras"]
    assert listed["source"] == shown
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert f"camera {shown}: cannot open" in logged
    for secret in ("admin", "p@ss", "w rd", "cam0user", "L0GINPAS", "PW42"):
        assert secret not in logged


def test_import_pickle_keeps_prototype_hashes(tmp_path: Path) -> None:
    """The prototype's gallery: a pickled list of (embedding, hash) made by Facenet."""
    rng = np.random.default_rng(5)
    entries = [(rng.normal(size=128).tolist(), f"{i:064x}") for i in range(1, 4)]
    entries.append((rng.normal(size=128), "f" * 64))  # numpy arrays too
    entries.append(("garbage", "e" * 64))
    pkl = tmp_path / "faces.pkl"
    pkl.write_bytes(pickle.dumps(entries))
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "facestream", "import-pickle", str(pkl), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    # The user is warned that pickle trusts the file, and told a new gallery was made.
    assert proc.stderr == (f"WARNING: loading {pkl} with pickle runs any code the file "
                           "contains. Only import a file you created yourself.\n"
                           f"created a new gallery at {data / DB_FILE} (to use an existing "
                           "one, check --data-dir or storage.data_dir)\n")
    assert proc.stdout == (f"imported 4 people into {data} (Facenet); 0 already enrolled, "
                           "1 invalid entries skipped\n")
    assert proc.returncode == 1  # one invalid entry was skipped and reported
    with sqlite3.connect(data / DB_FILE) as db:
        rows = db.execute(
            "SELECT hash, model FROM people JOIN samples ON person = hash ORDER BY hash"
        ).fetchall()
    assert rows == sorted([(f"{i:064x}", "Facenet") for i in range(1, 4)] + [("f" * 64, "Facenet")])


async def test_a_deleted_face_leaves_no_trace_in_the_files(tmp_path: Path) -> None:
    """Face images are biometric data: deleting a person or a sample overwrites them in
    the database and its write-ahead log, not only unlinks the rows."""
    marker = b"FACE-IMAGE-" + os.urandom(16).hex().encode()
    g = await open_gallery(tmp_path)
    try:
        keep = await g.add("Keep", unit(1))
        gone = await g.add("Gone", unit(2), images=StoredImages(crop=marker * 50,
                                                                context=marker * 200))
        sample = await g.add_sample(keep.hash, unit(1) + 0.001 * unit(3),
                                    images=StoredImages(crop=marker[::-1] * 50))

        def on_disk() -> bytes:
            return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

        assert marker in on_disk() and marker[::-1] in on_disk()
        await g.delete(gone.hash)
        await g.delete_sample(keep.hash, sample.id)
        assert marker not in on_disk() and marker[::-1] not in on_disk()
    finally:
        await g.close()


async def test_negatives_are_stored_follow_merges_and_go_with_their_person(
        store: Store) -> None:
    """A face marked "not Ada" (corrections.py) is stored with Ada, vetoes her name for
    that face and faces like it after a reopen, moves with her in a merge, and goes when
    the person it belongs to is deleted."""
    ada_face = unit(1)
    marked = normalize(ada_face + 0.25 * unit(2))  # a face like Ada's, that is not her
    g = await store.open()
    ada = await g.add("Ada", ada_face)
    bob = await g.add("Bob", unit(3))
    match = g.index.identify(marked)
    assert match is not None and match.hash == ada.hash  # named Ada: the mistake
    await g.add_negative(ada.hash, marked, b"crop")
    assert g.index.identify(marked) is None
    assert g.index.identify(ada_face).hash == ada.hash  # type: ignore[union-attr]
    await g.close()

    g = await store.open()
    try:
        assert [n for n, _ in g.negatives(ada.hash)] and g.index.identify(marked) is None
        await g.merge(bob.hash, ada.hash)  # Ada was Bob all along: her negatives are his
        assert g.negatives(ada.hash) == [] and len(g.negatives(bob.hash)) == 1
        assert g.index.identify(marked) is None
        await g.delete(bob.hash)
        assert await g.db.query("SELECT COUNT(*) FROM negatives") == [(0,)]
    finally:
        await g.close()

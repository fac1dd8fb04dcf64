"""The gallery: durable, private, one model only, hashes fixed forever."""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facestream.config import Config
from facestream.identity import face_hash, normalize
from facestream.privacy import email_digest, load_or_create_secret, redact_source
from facestream.storage import (
    DB_FILE,
    AlreadyEnrolled,
    Gallery,
    ModelMismatch,
    NotFound,
    StoredImages,
)

SECRET = b"k" * 32


def unit(seed: int, dim: int = 128) -> np.ndarray:
    return normalize(np.random.default_rng(seed).normal(size=dim))


async def open_gallery(path: Path, model: str = "Dlib") -> Gallery:
    return await Gallery.open(path, model, Config().recognition.policy(model), SECRET)


async def test_enrollment_is_committed_before_add_returns(tmp_path: Path) -> None:
    g = await open_gallery(tmp_path)
    try:
        emb = unit(1)
        ident = await g.add("Ada", emb)
        assert ident.hash == face_hash(emb)
        # A separate connection (another process, a crash-restart) already sees the row.
        with sqlite3.connect(tmp_path / DB_FILE) as other:
            rows = other.execute(
                "SELECT hash, name, model FROM identities JOIN samples ON identity = hash"
            ).fetchall()
        assert rows == [(ident.hash, "Ada", "Dlib")]
    finally:
        await g.close()


async def test_changes_survive_reopen_and_index_follows(tmp_path: Path) -> None:
    g = await open_gallery(tmp_path)
    a = await g.add("Ada", unit(1))
    b = await g.add("Bob", unit(2))
    await g.rename(a.hash, "Ada Lovelace")
    await g.delete(b.hash)
    assert g.index.identify(unit(2)) is None
    await g.close()
    await g.close()  # idempotent

    g = await open_gallery(tmp_path)
    try:
        assert [(i.hash, i.name) for i in g.list()] == [(a.hash, "Ada Lovelace")]
        match = g.index.identify(unit(1))
        assert match is not None and match.hash == a.hash and match.name == "Ada Lovelace"
        with pytest.raises(NotFound):
            await g.delete(b.hash)
        with pytest.raises(NotFound):
            await g.rename("0" * 64, "x")
    finally:
        await g.close()


async def test_same_face_twice_is_refused_with_existing_hash(tmp_path: Path) -> None:
    g = await open_gallery(tmp_path)
    try:
        first = await g.add("Ada", unit(1))
        near = normalize(unit(1) + 0.01 * unit(3))  # same person, another photo
        with pytest.raises(AlreadyEnrolled) as exc:
            await g.add("Ada again", near)
        assert exc.value.hash == first.hash
        assert len(g.list()) == 1
    finally:
        await g.close()


async def test_email_is_stored_only_as_hmac(tmp_path: Path) -> None:
    g = await open_gallery(tmp_path)
    try:
        ident = await g.add("Ada", unit(1), email="Ada@Example.org ")
        assert ident.has_email
    finally:
        await g.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_FILE))
    assert b"ada@example.org" not in raw.lower()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        (stored,) = db.execute("SELECT email_hmac FROM identities").fetchone()
    assert stored == email_digest(SECRET, "ada@example.org")


async def test_gallery_refuses_to_mix_models(tmp_path: Path) -> None:
    g = await open_gallery(tmp_path, "Facenet")
    await g.add("Ada", unit(1))
    with pytest.raises(ModelMismatch) as exc:
        await g.add("Bob", unit(2), model="Dlib")
    assert str(exc.value) == "embedding made by Dlib cannot join a gallery of Facenet embeddings"
    assert [i.name for i in g.list()] == ["Ada"]
    await g.close()
    with pytest.raises(ModelMismatch) as exc:
        await open_gallery(tmp_path, "Dlib")
    assert str(exc.value) == (
        f"the gallery {tmp_path / DB_FILE} holds embeddings made 1 by Facenet, but "
        "recognition.model is Dlib; embeddings of different models cannot be compared: run "
        "`python -m facestream reembed --model Dlib` to rebuild them from the stored face "
        'crops, or set recognition.model = "Facenet"')


def test_secret_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    key = load_or_create_secret(tmp_path)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == key
    assert load_or_create_secret(tmp_path, "configured") == b"configured"


def test_camera_credentials_are_redacted() -> None:
    assert redact_source("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://***@10.0.0.5:554/s1"
    # The query string may carry a token: it goes too.
    assert redact_source("http://u:hunter2@cam/video.mjpg?token=abc") == "http://***@cam/video.mjpg"
    assert redact_source("/videos/door.mp4") == "/videos/door.mp4"


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
    # The user is warned that pickle trusts the file.
    assert proc.stderr == (f"WARNING: loading {pkl} with pickle runs any code the file "
                           "contains. Only import a file you created yourself.\n")
    assert proc.stdout == (f"imported 4 identities into {data} (Facenet); 0 already enrolled, "
                           "1 invalid entries skipped\n")
    assert proc.returncode == 1  # one invalid entry was skipped and reported
    with sqlite3.connect(data / DB_FILE) as db:
        rows = db.execute(
            "SELECT hash, model FROM identities JOIN samples ON identity = hash ORDER BY hash"
        ).fetchall()
    assert rows == sorted([(f"{i:064x}", "Facenet") for i in range(1, 4)] + [("f" * 64, "Facenet")])


async def test_a_deleted_face_leaves_no_trace_in_the_files(tmp_path: Path) -> None:
    """Face images are biometric data: deleting an identity or a sample overwrites them in
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

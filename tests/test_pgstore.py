"""The gallery in PostgreSQL: several nodes on one database kept in step by LISTEN/NOTIFY, a
node that loses the database, and ``gallery migrate`` (the gallery operations themselves are
test_storage.py's, which runs each on both databases). Against a real PostgreSQL 15 cluster
started for this module (tests/pg.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from facestream import cli
from facestream.accounts import Auth
from facestream.appkeys import AUTH, GALLERY
from facestream.config import Config
from facestream.db.base import StorageError
from facestream.db.postgres import PostgresDb, postgres_sql
from facestream.gallery_types import (
    AlreadyEnrolled,
    Person,
    SampleRecord,
    StoredImages,
)
from facestream.matching import normalize
from facestream.privacy import load_or_create_secret
from facestream.storage import Gallery

from . import pg
from .conftest import BIDEN, OBAMA, OBAMA2, free_port, make_config, upload
from .pg import PgCluster, pg_cluster
from .support import (
    GALLERY_V4,
    V4_EMBEDDING,
    V4_SAMPLE,
    GalleryChanges,
    unit,
    write_gallery_v4,
)

SECRET = b"k" * 32
MODEL = "Dlib"
_databases = itertools.count()




@pytest.fixture
def url(pg_url: str) -> str:
    """A fresh database for one test (in the run's one cluster)."""
    return pg_url


async def open_node(url: str, model: str = MODEL, secret: bytes = SECRET) -> Gallery:
    return await Gallery.open_url(url, model, Config().recognition.policy(model), secret)


def online(gallery: Gallery) -> bool:
    return isinstance(gallery.db, PostgresDb) and gallery.db.online


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def test_a_missing_postgresql_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(pg, "BIN_DIRS", ())
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install postgresql"):
        PgCluster()


async def test_a_node_refuses_another_secret(url: str) -> None:
    """(Another model is refused on both databases: test_storage.)"""
    g = await open_node(url)
    await g.add("Ada", unit(1))
    await g.close()
    with pytest.raises(StorageError, match="same storage.secret"):
        await open_node(url, secret=b"x" * 32)


async def test_changes_on_one_node_reach_another_within_a_second(url: str) -> None:
    a, b = await open_node(url), await open_node(url)
    seen_by_b = GalleryChanges(b)
    try:
        latencies = []
        for seed in range(50):
            before = time.perf_counter()
            ident = await a.add(f"person {seed}", unit(100 + seed))
            latencies.append(await seen_by_b.wait("added", ident.hash) - before)
            assert b.get(ident.hash) == ident
        p50, p99 = statistics.median(latencies), np.quantile(latencies, 0.99)
        print(f"\nenrollment on node A -> in node B's gallery: p50 {p50 * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms over {len(latencies)}")
        assert p99 < 1.0

        first, second = a.list()[:2]
        await a.rename(first.hash, "Renamed")
        await seen_by_b.wait("renamed", first.hash)
        match = b.index.identify(unit(100))
        assert match is not None and (match.hash, match.name) == (first.hash, "Renamed")

        sample = await b.add_sample(first.hash, unit(100) + 0.01 * unit(7))  # b writes too
        await until(lambda: len(a.get(first.hash).samples) == 2, 1.0,  # type: ignore[union-attr]
                    "B's new sample in A's gallery")
        assert a.sample_embeddings(first.hash).keys() == {first.samples[0].id, sample.id}

        await a.merge(first.hash, second.hash)
        await seen_by_b.wait("merged", first.hash)
        assert b.get(second.hash) is None
        assert b.get(first.hash) == a.get(first.hash)
        assert b.index.ranked(unit(101), top=1)[0].hash == first.hash
        for probe in range(95, 110):  # both indexes answer alike
            assert b.index.ranked(unit(probe)) == a.index.ranked(unit(probe))

        await a.delete(first.hash)
        await seen_by_b.wait("deleted", first.hash)
        assert b.get(first.hash) is None and b.index.identify(unit(100)) is None
        assert [i.hash for i in b.list()] == [i.hash for i in a.list()]
    finally:
        await a.close()
        await b.close()


async def test_the_same_face_enrolled_on_two_nodes_at_once_is_enrolled_once(url: str) -> None:
    a, b = await open_node(url), await open_node(url)
    try:  # neither has heard of the other's enrollment when it checks its own gallery
        results = await asyncio.gather(a.add("Ada", unit(1)), b.add("Ada too", unit(1)),
                                       return_exceptions=True)
        [enrolled] = [r for r in results if isinstance(r, Person)]
        [refused] = [r for r in results if not isinstance(r, Person)]
        assert isinstance(refused, AlreadyEnrolled) and refused.hash == enrolled.hash
        await until(lambda: a.list() == b.list() == [enrolled], 1.0, "one Ada on both nodes")
    finally:
        await a.close()
        await b.close()


async def test_a_node_whose_connection_drops_catches_up(url: str) -> None:
    a, b = await open_node(url), await open_node(url)
    seen_by_a = GalleryChanges(a)
    try:
        db = a.db
        assert isinstance(db, PostgresDb) and db._listener is not None
        listener_pid = db._listener.get_server_pid()
        admin = await asyncpg.connect(url)
        try:  # A's listener is cut, as by a network failure; B changes the gallery meanwhile
            await admin.execute("SELECT pg_terminate_backend($1)", listener_pid)
        finally:
            await admin.close()
        ident = await b.add("While A was away", unit(5))
        await seen_by_a.wait("reloaded", None, timeout=5.0)  # reconnected: reloaded all
        await until(lambda: a.get(ident.hash) is not None, 1.0, "B's enrollment in A")
        assert db.online and db._listener.get_server_pid() != listener_pid
        later = await a.add("After", unit(6))  # A writes again, and B hears it
        await until(lambda: b.get(later.hash) is not None, 1.0, "A's enrollment in B")
    finally:
        await a.close()
        await b.close()


async def test_without_the_database_reads_go_on_writes_are_refused_and_it_catches_up() -> None:
    with pg_cluster() as own:  # stopped and started by this test: a cluster of its own
        url = own.url
        a, b = await open_node(url), await open_node(url)
        seen_by_a = GalleryChanges(a)
        try:
            ada = await a.add("Ada", unit(1), images=StoredImages(b"crop"))
            await until(lambda: b.get(ada.hash) is not None, 1.0, "Ada in B")

            await asyncio.to_thread(own.stop)
            await until(lambda: not online(a) and not online(b), 5.0, "both nodes offline")
            with pytest.raises(StorageError, match="cannot be reached.*refused") as refused:
                await a.add("Bob", unit(2))
            assert "127.0.0.1" in str(refused.value)
            with pytest.raises(StorageError, match="cannot be reached"):
                await b.rename(ada.hash, "x")
            with pytest.raises(StorageError, match="cannot be reached"):
                await a.crop(ada.hash)
            assert [i.name for i in a.list()] == ["Ada"]  # memory serves on
            match = a.index.identify(unit(1))
            assert match is not None and match.name == "Ada"

            await asyncio.to_thread(own.start)
            started = time.perf_counter()
            back = await seen_by_a.wait("reloaded", None, timeout=10.0)
            print(f"\ndatabase started -> node A reconnected and reloaded in "
                  f"{(back - started) * 1000:.0f} ms")
            await until(lambda: online(a) and online(b), 10.0, "both nodes back")
            bob = await b.add("Bob", unit(2))
            await until(lambda: a.get(bob.hash) is not None, 1.0, "B's enrollment in A")
            assert await a.crop(ada.hash) == b"crop"
        finally:
            await a.close()
            await b.close()


def test_migrate_moves_an_sqlite_gallery_history_included(
        pg_server: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    data = tmp_path / "data"
    data.mkdir()
    secret = load_or_create_secret(data)
    policy = Config().recognition.policy(MODEL)

    async def build() -> list[tuple[str, str | None, list[tuple[object, ...]]]]:
        g = await Gallery.open(data, MODEL, policy, secret)
        try:
            ada = await g.add("Ada", unit(1), email="ada@example.org",
                              images=StoredImages(b"crop", b"context", {"box": [1, 2, 3, 4]}))
            await g.add_sample(ada.hash, normalize(unit(1) + 0.05 * unit(9)),
                               images=StoredImages(b"crop2"), source="live")
            await g.add("Bob", unit(2))
            await g.add_negative(ada.hash, unit(7), b"not-ada", "live")  # "not Ada"
            accounts = Auth(g)  # a server ran on this gallery: it has accounts
            await accounts.ensure_schema()
            await accounts.add_user("ada", "admin", "correct horse battery")
            await accounts.create_token("viewer", "door script")
            await accounts.audit("user ada", "POST /faces", 201)
            await g.db.write([
                (("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at, "
                  "quality) VALUES ('v1', ?, 1, 'Ada', 'door', 10.0, 12.5, 0.9)"), (ada.hash,)),
                ("INSERT INTO visit_images (visit, crop, snapshot) VALUES ('v1', ?, ?)",
                 (b"visit-crop", b"snapshot")),
            ])
            return flat(await g.records())
        finally:
            await g.close()

    def flat(records: list[tuple[Person, str | None, list[SampleRecord]]]
             ) -> list[tuple[str, str | None, list[tuple[object, ...]]]]:
        """Comparable: the embeddings as their bytes."""
        return [(i.hash, email, [(r.id, r.embedding.tobytes(), r.crop, r.context, r.geometry,
                                  r.source, r.created_at) for r in samples])
                for i, email, samples in records]

    before = asyncio.run(build())
    url = pg_server.create_database("migrated")
    assert cli.main(["gallery", "migrate", "--data-dir", str(data), "--to", url]) == 0
    out = capsys.readouterr().out
    assert ("moved 2 people, 3 samples, 1 negatives, 1 visits, 1 visit_images, 0 unknowns, "
            "1 users, 1 tokens, 1 audit") in out

    assert 'storage.secret = "hex:" followed by the contents of' in out
    # A node configured as the command says: storage.secret = "hex:<secret.key>".
    configured = load_or_create_secret(tmp_path, "hex:" + (data / "secret.key").read_text())

    async def check() -> None:
        g = await open_node(url, secret=configured)
        try:
            assert flat(await g.records()) == before
            ((_, negative),) = g.negatives(next(p.hash for p in g.list() if p.name == "Ada"))
            assert negative.tobytes() == unit(7).tobytes()
            assert [i.name for i in await g.find_by_email("ADA@example.org")] == ["Ada"]
            newest = await g.add("Cy", unit(3))
            assert newest.samples[0].id > max(r[0] for _, _, rs in before for r in rs)
            accounts = Auth(g)  # the same password logs in, the token is there
            _, who = await accounts.login("ada", "correct horse battery", "127.0.0.1")
            assert (who.name, who.role) == ("ada", "admin")
            assert [t[1] for t in await accounts.tokens()] == ["door script"]
            await accounts.audit("user ada", "POST /faces", 201)  # numbered after the moved
            assert [a["action"] for a in await accounts.audit_log()] == [
                "POST /faces", "POST /faces"]
            conn = await asyncpg.connect(url)
            try:
                visit = await conn.fetchrow("SELECT v.*, i.snapshot FROM visits v "
                                            "JOIN visit_images i ON i.visit = v.id")
            finally:
                await conn.close()
            assert (visit["name"], visit["camera"], visit["left_at"], visit["snapshot"]) == (
                "Ada", "door", 12.5, b"snapshot")
        finally:
            await g.close()
    asyncio.run(check())

    assert cli.main(["gallery", "migrate", "--data-dir", str(data), "--to", url]) == 1
    assert "already holds a gallery" in capsys.readouterr().err


async def test_a_version_4_database_is_renamed_in_place(url: str) -> None:
    """A database made before version 5 (``identities``): the first node of this version
    renames its tables in the transaction that opens it; everything in it stays, and the
    second node finds it done."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for statement in GALLERY_V4:
                await conn.execute(postgres_sql(statement), *(V4_SAMPLE if "?" in statement
                                                              else ()))
    finally:
        await conn.close()
    a = await open_node(url)
    b = await open_node(url)
    try:
        for node in (a, b):
            (ada,) = node.list()
            assert (ada.hash, ada.name, ada.has_email, len(ada.samples)) == (
                "h1", "Ada", True, 1)
            match = node.index.identify(V4_EMBEDDING)
            assert match is not None and match.hash == "h1"
        assert await a.crop("h1") == b"crop"
        assert await a.db.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
            ("6",)]
        # History's version 1 visits got the decision columns, empty (not kept then).
        assert await a.db.query("SELECT id, score, margin, reviewed_at FROM visits") == [
            ("v1", None, None, None)]
        await b.delete("h1")  # the cascade finds the visit under its new names
        assert await b.db.query("SELECT COUNT(*) FROM visits") == [(0,)]
        assert await b.db.query("SELECT COUNT(*) FROM samples") == [(0,)]
    finally:
        await a.close()
        await b.close()
    conn = await asyncpg.connect(url)
    try:
        names = {r[0] for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "UNION SELECT conname FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace")}
        assert {"people", "people_email", "samples_person"} <= names
        assert not {n for n in names if "identit" in n}
        await conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    finally:
        await conn.close()
    with pytest.raises(StorageError, match="version 7, made by a newer facestream"):
        await open_node(url)


def test_migrate_takes_a_version_4_file_and_leaves_it_as_it_was(
        pg_server: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``gallery migrate`` only reads the file: one of version 4 is upgraded in a private
    copy beside it, which is gone afterwards."""
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    write_gallery_v4(data / "gallery.sqlite3")
    before = (data / "gallery.sqlite3").read_bytes()
    url = pg_server.create_database("from_version_4")
    assert cli.main(["gallery", "migrate", "--data-dir", str(data), "--to", url]) == 0
    assert "moved 1 people, 1 samples, 0 negatives, 1 visits, 0 visit_images, 0 unknowns" in (
        capsys.readouterr().out)
    assert (data / "gallery.sqlite3").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == ["gallery.sqlite3", "secret.key"]

    async def check() -> None:
        g = await Gallery.open_url(url, MODEL, Config().recognition.policy(MODEL),
                                   load_or_create_secret(data))
        try:
            (ada,) = g.list()
            assert (ada.hash, ada.name, ada.has_email) == ("h1", "Ada", True)
            assert await g.crop("h1") == b"crop"
        finally:
            await g.close()
    asyncio.run(check())


async def test_a_server_without_its_database_recognises_keeps_its_viewers_and_refuses_changes(
        app_client: Any, tmp_path: Path) -> None:
    """What a user of a node sees when the shared database goes away and comes back: the
    gallery in memory still recognises, a logged-in viewer keeps watching, an enrollment is
    a 503 that says why, /healthz is degraded; then everything works again."""
    with pg_cluster() as own:
        cfg = make_config(tmp_path, storage_url=own.url)
        cfg = dataclasses.replace(cfg, auth=dataclasses.replace(cfg.auth, enabled=True))
        client = await app_client(cfg, live=False)
        app = client.server.app
        _, token = await app[AUTH].create_token("admin", "test")
        bearer = {"Authorization": f"Bearer {token}"}
        resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"),
                                 headers=bearer)
        assert resp.status == 201
        assert (await client.get("/hash", headers=bearer)).status == 200  # token now known

        await asyncio.to_thread(own.stop)
        await until(lambda: not online(app[GALLERY]), 5.0, "the node offline")
        app[AUTH]._cache = {k: (0.0, p) for k, (_, p) in app[AUTH]._cache.items()}  # expired
        assert (await client.get("/hash", headers=bearer)).status == 200
        resp = await client.post("/process-frame", data=upload("frame", OBAMA2),
                                 headers=bearer)
        assert [f["name"] for f in (await resp.json())["faces"]] == ["Barack"]
        resp = await client.post("/faces", data=upload("image", BIDEN, name="Joe"),
                                 headers=bearer)
        assert resp.status == 503
        assert "cannot be reached" in (await resp.json())["error"]
        assert await (await client.get("/healthz")).json() == {"status": "degraded"}
        health = await (await client.get("/healthz", headers=bearer)).json()
        assert (health["status"], health["storage"]) == (
            "degraded", {"kind": "postgresql", "state": "reconnecting"})

        await asyncio.to_thread(own.start)
        await until(lambda: online(app[GALLERY]), 10.0, "the node back")
        resp = await client.post("/faces", data=upload("image", BIDEN, name="Joe"),
                                 headers=bearer)
        assert resp.status == 201
        health = await (await client.get("/healthz", headers=bearer)).json()
        assert (health["status"], health["storage"]["state"]) == ("ok", "ok")
        await client.close()


def test_a_node_whose_database_is_not_there_stops_in_one_line(tmp_path: Path) -> None:
    """No gallery in memory to go on with at start-up: one line saying what to do, and the
    password in storage.url shown nowhere."""
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nurl = "postgresql://fs:s3cret-pw@127.0.0.1:{free_port()}/fs"'
                      '\nsecret = "shared by every node"\n')
    proc = subprocess.run([sys.executable, "-m", "facestream", "faces", "list", "--config",
                           str(config), "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: cannot reach the gallery database 127.0.0.1:")
    assert line.endswith(": start it, or check storage.url")
    assert "s3cret" not in proc.stderr + proc.stdout


async def test_a_negative_made_on_one_node_reaches_the_other(url: str) -> None:
    """"Not Ada" said on node A: node B stops naming that face Ada within a second; a merge
    moves the negative on B too."""
    a, b = await open_node(url), await open_node(url)
    try:
        ada, bob = await a.add("Ada", unit(1)), await a.add("Bob", unit(3))
        marked = normalize(unit(1) + 0.25 * unit(2))  # like Ada, not her
        await until(lambda: b.get(bob.hash) is not None, 1.0, "the enrollments on B")
        assert b.index.identify(marked).hash == ada.hash  # type: ignore[union-attr]
        await a.add_negative(ada.hash, marked)
        await until(lambda: b.index.identify(marked) is None, 1.0, "the negative on B")
        await a.merge(bob.hash, ada.hash)
        await until(lambda: len(b.negatives(bob.hash)) == 1, 1.0, "the merge on B")
        assert b.index.identify(marked) is None
    finally:
        await a.close()
        await b.close()

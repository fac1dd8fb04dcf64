"""Several nodes on one PostgreSQL (``storage.url``): two real ``python -m facestream``
processes, node A and node B, share a database in the run's throwaway PostgreSQL cluster
(conftest's ``pg_server``, tests/pg.py) and a ``storage.secret``. What a user relies on: a
person enrolled on A from a photo is recognised on B from another photo (and the other way
round); renamed or deleted on A, B follows; B's audit log shows A's changes; a node with
another secret is refused. A test of a change first checks that the other node did not
already know the person, so it fails if the nodes do not follow each other.

The deadlines are generous (correctness, not timing): ``bench/nodes_benchmark.py`` measures
how soon B follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import FACES, free_port, stop_process, upload
from .pg import PgCluster
from .servers import Server

LFW = FACES / "lfw"
#: Within this, B must follow a change on A (it takes milliseconds: see the benchmark).
FOLLOW_S = 10.0


@dataclass(frozen=True)
class Nodes:
    a: Server
    b: Server
    db_url: str
    secret: str


def node_config(folder: Path, db_url: str, secret: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    config.write_text(f'[storage]\nurl = "{db_url}"\nsecret = "{secret}"\n')
    return config


def start_node(root: Path, name: str, db_url: str, secret: str) -> Server:
    """A node without a camera (the REST API needs none), one worker."""
    home = root / name
    config = node_config(home, db_url, secret)
    return Server(Path("/dev/null"), home / "data", home, workers=1,
                  extra=("--config", str(config)))


@pytest.fixture(scope="module")
def nodes(pg_server: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """Nodes A and B, started together on one new database, for this module's tests."""
    db_url = pg_server.create_database("nodes")
    root = tmp_path_factory.mktemp("nodes")
    secret = secrets.token_hex(32)
    started: list[Server] = []
    try:
        for name in ("a", "b"):
            started.append(start_node(root, name, db_url, secret))
        asyncio.run(_ready(started))
        yield Nodes(started[0], started[1], db_url, secret)
    finally:
        for server in started:
            server.stop()


async def _ready(servers: list[Server]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(s.wait_ready(session, timeout=120) for s in servers))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def photos(person: str) -> tuple[Path, Path]:
    """An LFW person's first photo (to enroll) and second (to recognise)."""
    first, second = sorted((LFW / person).glob("*.jpg"))[:2]
    return first, second


async def who(session: aiohttp.ClientSession, node: Server, photo: Path) -> dict[str, Any]:
    """``POST /process-frame`` on ``node``: who the photo shows."""
    async with session.post(node.url + "/process-frame", data=upload("frame", photo)) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def face(session: aiohttp.ClientSession, node: Server, face_hash: str
               ) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{node.url}/faces/{face_hash}") as resp:
        return resp.status, await resp.json()


async def enroll(session: aiohttp.ClientSession, node: Server, photo: Path, name: str) -> str:
    async with session.post(node.url + "/faces", data=upload("image", photo, name=name)) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        assert body["name"] == name
        return str(body["hash"])


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls ``check`` until it holds; fails after :data:`FOLLOW_S`."""
    deadline = time.monotonic() + FOLLOW_S
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {FOLLOW_S} s: {what}")
        await asyncio.sleep(0.05)


async def status_on_b(session: aiohttp.ClientSession, nodes: Nodes, face_hash: str,
                       status: int) -> bool:
    return (await face(session, nodes.b, face_hash))[0] == status


async def unknown_to_b(session: aiohttp.ClientSession, nodes: Nodes, probe: Path) -> None:
    """B does not know the person (a test that passed with B knowing already proves nothing)."""
    seen = await who(session, nodes.b, probe)
    assert (seen["known"], seen["name"]) == (False, None)


async def test_enrolled_on_a_is_recognised_on_b_from_another_photo(
        nodes: Nodes, session: aiohttp.ClientSession) -> None:
    enrolled, probe = photos("Abel_Pacheco")
    await unknown_to_b(session, nodes, probe)
    face_hash = await enroll(session, nodes.a, enrolled, "Abel Pacheco")

    async def b_names_him() -> bool:
        seen = await who(session, nodes.b, probe)
        return bool(seen["known"])
    await until(b_names_him, "B recognises the person enrolled on A")
    seen = await who(session, nodes.b, probe)
    assert (seen["hash"], seen["name"]) == (face_hash, "Abel Pacheco")
    status, on_b = await face(session, nodes.b, face_hash)
    assert (status, on_b["name"], len(on_b["samples"])) == (200, "Abel Pacheco", 1)


async def test_enrolled_on_b_is_recognised_on_a(nodes: Nodes,
                                                session: aiohttp.ClientSession) -> None:
    """Every node writes, not only the first."""
    enrolled, probe = photos("Akhmed_Zakayev")
    assert (await who(session, nodes.a, probe))["known"] is False
    face_hash = await enroll(session, nodes.b, enrolled, "Akhmed Zakayev")

    async def a_names_him() -> bool:
        return (await who(session, nodes.a, probe))["hash"] == face_hash
    await until(a_names_him, "A recognises the person enrolled on B")


async def test_renamed_on_a_is_shown_renamed_by_b(nodes: Nodes,
                                                  session: aiohttp.ClientSession) -> None:
    enrolled, probe = photos("Amber_Tamblyn")
    await unknown_to_b(session, nodes, probe)
    face_hash = await enroll(session, nodes.a, enrolled, "Amber")
    await until(lambda: status_on_b(session, nodes, face_hash, 200), "B knows Amber")

    async with session.patch(f"{nodes.a.url}/faces/{face_hash}",
                             json={"name": "Amber Tamblyn"}) as resp:
        assert resp.status == 200, await resp.text()

    async def b_lists_the_new_name() -> bool:
        async with session.get(nodes.b.url + "/faces") as resp:
            listed = (await resp.json())["faces"]
        return {f["hash"]: f["name"] for f in listed}.get(face_hash) == "Amber Tamblyn"
    await until(b_lists_the_new_name, "B's /faces shows the new name")
    seen = await who(session, nodes.b, probe)
    assert (seen["hash"], seen["name"]) == (face_hash, "Amber Tamblyn")


async def test_deleted_on_a_is_no_longer_recognised_on_b(
        nodes: Nodes, session: aiohttp.ClientSession) -> None:
    enrolled, probe = photos("Anthony_Fauci")
    await unknown_to_b(session, nodes, probe)
    face_hash = await enroll(session, nodes.a, enrolled, "Anthony Fauci")

    async def b_names_him() -> bool:
        return (await who(session, nodes.b, probe))["hash"] == face_hash
    await until(b_names_him, "B recognises the person enrolled on A")

    async with session.delete(f"{nodes.a.url}/faces/{face_hash}") as resp:
        assert resp.status == 200, await resp.text()

    async def b_no_longer_names_him() -> bool:
        return not (await who(session, nodes.b, probe))["known"]
    await until(b_no_longer_names_him, "B no longer recognises the person deleted on A")
    assert await face(session, nodes.b, face_hash) == (
        404, {"error": f"no enrolled person with hash {face_hash}"})


async def test_a_change_on_a_is_in_b_s_audit_log(nodes: Nodes,
                                                 session: aiohttp.ClientSession) -> None:
    """The accounts' tables are shared too: B shows who changed what on A."""
    enrolled, _ = photos("Angela_Bassett")
    face_hash = await enroll(session, nodes.a, enrolled, "Angela")
    async with session.patch(f"{nodes.a.url}/faces/{face_hash}",
                             json={"name": "Angela Bassett"}) as resp:
        assert resp.status == 200, await resp.text()
    async with session.get(nodes.b.url + "/audit") as resp:
        newest, before = (await resp.json())["audit"][:2]
    assert {k: newest[k] for k in ("actor", "action", "status")} == {
        "actor": "anonymous (authentication off)", "action": f"PATCH /faces/{face_hash}",
        "status": 200}
    assert (before["action"], before["status"]) == ("POST /faces", 201)


async def test_a_node_with_another_secret_is_refused_at_start(
        nodes: Nodes, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Emails are HMACs under storage.secret: a node with another one could not find them."""
    config = node_config(tmp_path / "c", nodes.db_url, secrets.token_hex(32))
    port = free_port()
    out, err = tmp_path / "c" / "stdout", tmp_path / "c" / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "facestream", "--config", str(config), "--source",
             "/dev/null", "--port", str(port), "--data-dir", str(tmp_path / "c" / "data"),
             "--no-auth", "--workers", "1"],
            cwd=tmp_path / "c", stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    pytest.fail(f"a node with another storage.secret started: {resp.status}")
            assert time.monotonic() < deadline, "another secret: neither refused nor started"
            await asyncio.sleep(0.2)
    finally:
        stop_process(proc)
    assert proc.returncode != 0
    lines = err.read_text().strip().splitlines()
    assert len(lines) == 1 and "storage.secret" in lines[0], lines
    assert out.read_text() == ""

"""Bad disks: every failure stops start-up in one line or answers one JSON error, and a full
disk never kills the process or leaves the gallery half-changed.

The disks are real, which needs root (the tests skip without it, or where mounting is not
allowed). Root ignores permission bits, so chmod cannot make anything read-only for these
tests; instead:

- read-only: the data dir bind-mounted read-only (``mount --bind`` then ``mount -o
  remount,ro,bind``: every write answers EROFS, for root too), or ``chattr +i`` on a
  directory or file (EPERM, for root too);
- full: a tmpfs of a few MiB, or a 4 MiB ext4 image on a loop device (formatted with 1 KiB
  blocks, as mkfs does for small filesystems: the case where SQLite's memory-mapped -shm file
  gets holes, see ``db.disk.DiskGuard``), filled with a file until ENOSPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facestream import weights
from facestream.appkeys import GALLERY, HISTORY
from facestream.config import Config, StorageConfig
from facestream.db.disk import DB_FILE, MIN_FREE_BYTES, RESTORE_HINT, SHM_RESERVE
from facestream.gallery_types import StoredImages
from facestream.presence import VisitEvent, VisitRecord
from facestream.storage import Gallery

from .conftest import BIDEN, OBAMA, OBAMA2, TALKING_HEAD, free_port, make_config, upload
from .support import unit, wait_for

SECRET = b"k" * 32
ERROR_EXIT = 2  # cli.main: "error: <message>" on stderr


# -- real disks ---------------------------------------------------------------------------


class Disks:
    """Filesystems mounted for one test (as root), unmounted at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mounts: list[Path] = []
        self._immutable: list[Path] = []

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"`{' '.join(cmd)}` is not allowed here: {proc.stderr.strip()}")

    def _mount(self, where: Path, *cmd: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        self._run("mount", *cmd, str(where))
        self._mounts.append(where)
        return where

    def tmpfs(self, name: str, size: str) -> Path:
        return self._mount(self.root / name, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")

    def small_ext4(self, name: str) -> Path:
        """4 MiB of ext4 with 1 KiB blocks (about 2.7 MiB free)."""
        image = self.root / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(4 << 20)
        self._run("mkfs.ext4", "-q", "-F", "-b", "1024", str(image))
        return self._mount(self.root / name, "-o", "loop", str(image))

    def read_only(self, source: Path, name: str) -> Path:
        """``source`` seen through a read-only bind mount."""
        where = self._mount(self.root / name, "--bind", str(source))
        self._run("mount", "-o", "remount,ro,bind", str(where))
        return where

    def immutable(self, path: Path) -> None:
        self._run("chattr", "+i", str(path))
        self._immutable.append(path)

    def close(self) -> None:
        for path in reversed(self._immutable):
            subprocess.run(["chattr", "-i", str(path)], check=False)
        for where in reversed(self._mounts):
            if subprocess.run(["umount", str(where)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[Disks]:
    if os.geteuid() != 0:
        pytest.skip("mounting test filesystems needs root")
    d = Disks(tmp_path)
    try:
        yield d
    finally:
        d.close()


def fill(disk: Path, leave_kib: int = 0) -> Path:
    """Fill the filesystem of ``disk`` until ENOSPC, then give ``leave_kib`` KiB back."""
    path = disk / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 10):
            try:
                while True:
                    os.write(fd, bytes(chunk))
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave_kib * 1024))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.sync()
    return path


def free_kib(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize // 1024


# -- galleries and commands -----------------------------------------------------------------




async def build_gallery(data: Path, people: int = 20) -> Path:
    """A real gallery of ``people`` people, each with a 4 KB crop each (about 50 pages)."""
    data.mkdir(parents=True, exist_ok=True)
    g = await Gallery.open(data, "SFace", Config().recognition.policy("SFace"), SECRET)
    try:
        for i in range(people):
            await g.add(f"Person {i}", unit(i),
                        images=StoredImages(crop=np.random.default_rng(i).bytes(4000)))
    finally:
        await g.close()
    return data / DB_FILE


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def leave_wal_and_shm(db: Path) -> None:
    """What a killed server leaves: -wal and -shm beside the gallery."""
    script = ("import os, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL')\n"
              "c.execute(\"UPDATE people SET name = name || ''\"); c.commit()\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(db)], check=True)
    assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()


def cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facestream", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def provisioned() -> None:
    """Weights in place, so a server started by a test logs nothing about fetching them."""
    weights.provision()


def assert_start_up_refused(data: Path, message: str, cwd: Path, server: bool = True) -> None:
    """``faces list`` and the server itself stop with exactly ``error: message``."""
    runs = [cli("faces", "--data-dir", str(data), "list", cwd=cwd)]
    if server:
        runs.append(cli("--data-dir", str(data), "--source", str(TALKING_HEAD),
                        "--port", str(free_port()), cwd=cwd))
    for proc in runs:
        assert (proc.returncode, proc.stderr, proc.stdout) == (
            ERROR_EXIT, f"error: {message}\n", ""), proc.args


# -- start-up -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["bind mount remounted ro", "chattr +i"])
async def test_a_read_only_data_dir_stops_start_up_in_one_line(
        how: str, disks: Disks, tmp_path: Path, provisioned: None) -> None:
    data = tmp_path / "data"
    db = await build_gallery(data)
    before = db.read_bytes()
    if how == "chattr +i":
        disks.immutable(data)
        reason = "Operation not permitted"
    else:
        data = disks.read_only(data, "ro")
        reason = "Read-only file system"
    assert_start_up_refused(data, (f"the data dir {data} is not writable ({reason}): make it "
                                   "writable by this user, or choose another with --data-dir "
                                   "or storage.data_dir"), tmp_path)
    assert db.read_bytes() == before


async def test_a_data_dir_that_cannot_be_created_stops_start_up(
        tmp_path: Path, provisioned: None) -> None:
    data = Path("/proc/facestream-data")  # procfs: nobody, root included, creates files here
    # The server and the commands that make a gallery try to create it (``faces list`` and
    # the others that need an existing gallery refuse a missing data dir: test_cli.py).
    for args in (("--source", str(TALKING_HEAD), "--port", str(free_port())),
                 ("tokens", "create", "--role", "viewer")):
        proc = cli(*args, "--data-dir", str(data), cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (
            ERROR_EXIT, (f"error: cannot create the data dir {data} (No such file or "
                         "directory): create it, or choose another with --data-dir or "
                         "storage.data_dir\n")), args


@pytest.mark.parametrize("damage", ["random bytes", "cut to half", "a text file", "0 bytes"])
async def test_a_damaged_gallery_file_stops_start_up_in_one_line(
        damage: str, tmp_path: Path, provisioned: None) -> None:
    data = tmp_path / "data"
    db = await build_gallery(data)
    size = db.stat().st_size
    if damage == "random bytes":
        db.write_bytes(np.random.default_rng(0).bytes(size))
    elif damage == "cut to half":
        os.truncate(db, size // 2)
    elif damage == "a text file":
        db.write_text("name,hash\nAda,0123\n")
    else:
        db.write_bytes(b"")
    damaged = db.read_bytes()
    messages = {
        "random bytes": f"the gallery {db} is not a SQLite database: move it away to start "
                        f"an empty gallery, or {RESTORE_HINT}",
        "cut to half": f"the gallery {db} is truncated ({size // 2} of {size} bytes): "
                       f"{RESTORE_HINT}, or move it away to start an empty gallery",
        "0 bytes": f"the gallery {db} is empty (0 bytes): delete it to start an empty "
                   f"gallery, or {RESTORE_HINT}",
    }
    messages["a text file"] = messages["random bytes"]
    assert_start_up_refused(data, messages[damage], tmp_path)
    assert db.read_bytes() == damaged  # nothing written into it, no new gallery in it
    assert not Path(f"{db}-wal").exists()


async def test_damage_found_while_opening_stops_start_up_in_one_line(
        tmp_path: Path, provisioned: None) -> None:
    """A file with a good header and a ruined page: SQLite's own error, as one line."""
    data = tmp_path / "data"
    db = await build_gallery(data)
    with sqlite3.connect(db) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'samples'"
                            ).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    overwrite(db, (page - 1) * size, b"\xa5" * size)
    assert_start_up_refused(data, (
        f"the gallery {db} is damaged (database disk image is malformed): `python -m "
        f"facestream gallery check` lists the problems; {RESTORE_HINT}, or move it away to "
        "start an empty gallery"), tmp_path)


@pytest.mark.parametrize("which", ["-shm", "-wal"])
async def test_an_unwritable_wal_or_shm_file_stops_start_up_in_one_line(
        which: str, disks: Disks, tmp_path: Path, provisioned: None) -> None:
    data = tmp_path / "data"
    db = await build_gallery(data)
    leave_wal_and_shm(db)
    disks.immutable(Path(f"{db}{which}"))
    advice = {"-shm": ", or delete it while no facestream runs (SQLite rebuilds it)",
              "-wal": " (do not delete it: it holds changes not yet in the gallery file)"}
    assert_start_up_refused(data, f"{db}{which} cannot be written: make it a file this user "
                            f"can write{advice[which]}", tmp_path)


async def test_a_nearly_full_disk_stops_start_up_instead_of_sigbus(
        disks: Disks, tmp_path: Path) -> None:
    """Before: with 9-40 KiB left on a small ext4, opening died of SIGBUS (exit -7) with no
    word, in SQLite's first writes into the -shm file it had just mapped."""
    source = await build_gallery(tmp_path / "source")
    disk = disks.small_ext4("disk")
    data = disk / "data"
    data.mkdir()
    for leave in (10, 24, 40):
        shutil.copy(source, data / DB_FILE)
        for extra in ("filler", f"data/{DB_FILE}-wal", f"data/{DB_FILE}-shm"):
            (disk / extra).unlink(missing_ok=True)
        fill(disk, leave)
        free = free_kib(disk)
        proc = cli("faces", "--data-dir", str(data), "list", cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (
            ERROR_EXIT, (f"error: the disk holding {data / DB_FILE} is full ({free} KiB free; "
                         f"the gallery needs {MIN_FREE_BYTES // 1024} KiB to open): free space "
                         "and retry\n"))


# A process holding the gallery open while the test fills its disk, then writing to it.
_WRITER = """
import asyncio, os, sys
from pathlib import Path
import numpy as np
from facestream.config import Config
from facestream.matching import normalize
from facestream.db.base import StorageError
from facestream.gallery_types import StoredImages
from facestream.storage import Gallery

async def main() -> None:
    policy = Config().recognition.policy("SFace")
    gallery = await Gallery.open(Path(sys.argv[1]), "SFace", policy, b"k" * 32)
    print("open", flush=True)
    sys.stdin.readline()
    rng = np.random.default_rng(int(sys.argv[2]))
    try:
        for i in range(100_000):
            await gallery.add(f"P{i}", normalize(rng.normal(size=128)),
                              images=StoredImages(crop=rng.bytes(2000)))
    except StorageError as exc:
        print(exc, flush=True)
    finally:
        await gallery.close()

asyncio.run(main())
"""


def test_a_disk_filling_up_under_an_open_gallery_is_an_error_not_sigbus(
        disks: Disks, tmp_path: Path) -> None:
    """SQLite stores into its -shm file through a memory map; on this filesystem its own
    growth of the file leaves most of each page a hole, and a store into a hole once the
    disk is full is SIGBUS (measured: a connection that began writing with 12-28 KiB left
    died with exit -7). The gallery gives the whole -shm file its blocks when it opens, so
    the write that finds the disk full fails with SQLITE_FULL, reported in one line."""
    disk = disks.small_ext4("disk")
    for leave in (8, 24):
        data = disk / f"data{leave}"
        data.mkdir()
        with subprocess.Popen([sys.executable, "-c", _WRITER, str(data), str(leave)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as writer:
            try:  # a failed check must not leave the writer holding the disk
                assert writer.stdout is not None and writer.stdin is not None
                assert writer.stdout.readline() == "open\n", writer.communicate()
                shm = os.stat(data / f"{DB_FILE}-shm")  # no hole for a store to fall into
                assert shm.st_blocks * 512 >= shm.st_size >= SHM_RESERVE
                filler = fill(disk, leave)
                out, err = writer.communicate("go\n", timeout=120)
            finally:
                if writer.poll() is None:
                    writer.kill()
        assert (writer.returncode, out, err) == (
            0, f"the disk holding {data / DB_FILE} is full: free space and retry\n", "")
        filler.unlink()
        shutil.rmtree(data)


# -- a full disk while serving ----------------------------------------------------------------


def data_on(disk: Path, tmp_path: Path) -> Config:
    return dataclasses.replace(make_config(tmp_path),
                               storage=StorageConfig(data_dir=str(disk / "data")))


async def test_a_full_disk_answers_507_and_changes_nothing(
        app_client: Any, disks: Disks, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    disk = disks.tmpfs("disk", "8m")
    cfg = data_on(disk, tmp_path)
    db = cfg.data_path / DB_FILE
    client = await app_client(cfg, live=False)
    app = client.server.app
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack Obama"))
    assert resp.status == 201
    face = (await resp.json())["hash"]
    gallery = app[GALLERY]
    events: list[str] = []
    gallery.on_change(lambda event, person, hashes: events.append(event))
    listing, index = await (await client.get("/faces")).json(), gallery.index

    filler = fill(disk)
    full = {"error": f"the disk holding {db} is full: free space and retry"}
    resp = await client.post("/faces", data=upload("image", BIDEN, name="Joe Biden"))
    assert (resp.status, await resp.json()) == (507, full)
    resp = await client.patch(f"/faces/{face}", json={"name": "Barack H. Obama"})
    assert (resp.status, await resp.json()) == (507, full)
    resp = await client.post(f"/faces/{face}/samples", data=upload("image", OBAMA2))
    assert (resp.status, await resp.json()) == (507, full)
    # Nothing half-applied: the listing, the matcher and the file are as before.
    assert await (await client.get("/faces")).json() == listing
    assert gallery.index is index  # never rebuilt
    assert events == []
    assert await gallery.db.query("SELECT name FROM people") == [("Barack Obama",)]

    # A visit cannot be stored either: one log line, no traceback; it is kept and retried.
    vid = uuid.uuid4().hex
    app[HISTORY].record(VisitEvent("arrived", VisitRecord(
        vid, face, "Barack Obama", True, "cam", time.time(), None, None)))

    def logged() -> list[Any]:
        return [r for r in caplog.records if r.name == "facestream.history"]

    (record,) = await wait_for(logged, 10)
    assert (record.levelname, record.getMessage(), record.exc_info) == (
        "ERROR", f"visit {vid} not stored yet (retrying): {full['error']}", None)

    filler.unlink()  # space again: the visit is stored, and the same requests succeed

    async def stored() -> list[Any]:
        return await gallery.db.query("SELECT id FROM visits WHERE id = ?", (vid,))
    assert await wait_for(stored, 40) == [(vid,)]
    assert [r.levelname for r in logged()] == ["ERROR", "WARNING"]
    resp = await client.patch(f"/faces/{face}", json={"name": "Barack H. Obama"})
    assert resp.status == 200
    resp = await client.post("/faces", data=upload("image", BIDEN, name="Joe Biden"))
    assert resp.status == 201
    assert events == ["renamed", "added"]


async def test_a_damaged_page_read_while_serving_answers_503(
        app_client: Any, tmp_path: Path) -> None:
    """Bit rot under a running server (a visit snapshot's overflow chain broken): 503 with the
    way out, not 500."""
    cfg = make_config(tmp_path)
    db = cfg.data_path / DB_FILE
    gallery = await Gallery.for_config(cfg)
    vid = uuid.uuid4().hex
    try:
        await gallery.db.write([
            (("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at) "
              "VALUES (?, ?, 0, NULL, 'cam', ?, ?)"), (vid, "f" * 64, time.time(), time.time())),
            ("INSERT INTO visit_images (visit, snapshot) VALUES (?, ?)",
             (vid, np.random.default_rng(0).bytes(40_000))),
        ])
    finally:
        await gallery.close()
    with sqlite3.connect(db) as conn:
        pages = [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'visit_images' AND pagetype = 'overflow'")]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    # An overflow page's "next page" pointer, out of range.
    overwrite(db, (pages[0] - 1) * size, (0x7FFFFFF0).to_bytes(4, "big"))

    client = await app_client(cfg, live=False)
    resp = await client.get(f"/visits/{vid}/snapshot")
    assert (resp.status, await resp.json()) == (503, {"error": (
        f"the gallery {db} is damaged (database disk image is malformed): `python -m "
        f"facestream gallery check` lists the problems; {RESTORE_HINT}, or move it away to "
        "start an empty gallery")})


# -- gallery check / backup / restore ---------------------------------------------------------


def corrupt_an_index_entry(db: Path) -> None:
    """Change one character of a sample's person in the samples table only (the index on
    it keeps the old value): damage only an integrity check finds."""
    with sqlite3.connect(db) as conn:
        face = conn.execute("SELECT person FROM samples ORDER BY id LIMIT 1").fetchone()[0]
        leaves = [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'samples' AND pagetype = 'leaf'")]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    for page in leaves:
        at = data.find(face.encode(), (page - 1) * size, page * size)
        if at >= 0:
            data[at] = ord("0") if data[at] != ord("0") else ord("1")
            db.write_bytes(bytes(data))
            return
    raise AssertionError("sample row not found")


async def test_gallery_check_passes_a_good_gallery_and_names_the_damage(tmp_path: Path) -> None:
    db = await build_gallery(tmp_path / "data")
    proc = cli("gallery", "--data-dir", str(db.parent), "check", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "ok: 20 people, 20 samples, 0 visits\n", "")

    index = tmp_path / "index"
    index.mkdir()
    shutil.copy(db, index / DB_FILE)
    corrupt_an_index_entry(index / DB_FILE)
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    shutil.copy(db, orphan / DB_FILE)
    with sqlite3.connect(orphan / DB_FILE) as conn:  # foreign_keys is off by default
        conn.execute("DELETE FROM people WHERE name = 'Person 3'")
    conn.close()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_FILE).write_bytes(np.random.default_rng(1).bytes(8192))

    expected = {
        index: "row 1 missing from index samples_person",
        orphan: "samples row 4 refers to a missing people row",
        garbage: f"the gallery {garbage / DB_FILE} is not a SQLite database: move it away "
                 f"to start an empty gallery, or {RESTORE_HINT}",
    }
    for data, problem in expected.items():
        proc = cli("gallery", "--data-dir", str(data), "check", cwd=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            1, f"{problem}\n1 problem in {data / DB_FILE}: {RESTORE_HINT}\n", "")


async def test_backup_while_serving_and_writing_restores_the_same_gallery(
        app_client: Any, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    client = await app_client(cfg, live=False)
    app = client.server.app
    faces = {}
    for path, name in ((OBAMA, "Barack Obama"), (BIDEN, "Joe Biden")):
        resp = await client.post("/faces", data=upload("image", path, name=name))
        assert resp.status == 201
        faces[name] = (await resp.json())["hash"]
    resp = await client.post(f"/faces/{faces['Barack Obama']}/samples", data=upload("image", OBAMA2))
    assert resp.status == 201

    backup = tmp_path / "backups" / "gallery.sqlite3"
    backup.parent.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "facestream", "gallery", "--data-dir", cfg.storage.data_dir,
        "backup", str(backup), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    communicate = asyncio.ensure_future(proc.communicate())
    writes = 0
    while not communicate.done():  # the server keeps writing throughout the backup
        resp = await client.patch(f"/faces/{faces['Joe Biden']}", json={"name": f"Joe {writes}"})
        assert resp.status == 200
        app[HISTORY].record(VisitEvent("left", VisitRecord(
            uuid.uuid4().hex, faces["Joe Biden"], f"Joe {writes}", True, "cam",
            time.time() - 1, time.time(), None)))
        writes += 1
        await asyncio.sleep(0.005)
    out, err = await communicate
    assert writes > 3
    with sqlite3.connect(backup) as conn:
        visits = conn.execute("SELECT COUNT(*) FROM visits").fetchone()[0]
        (biden_then,) = conn.execute("SELECT name FROM people WHERE hash = ?",
                                     (faces["Joe Biden"],)).fetchone()
    conn.close()
    assert (proc.returncode, err.decode()) == (0, "")
    assert out.decode() == (
        f"wrote {backup}: 2 people, 3 samples, {visits} visits "
        f"({backup.stat().st_size} bytes)\n"
        f"keep {cfg.data_path / 'secret.key'} with your backups: email look-ups need it\n")
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert not list(backup.parent.glob(".*.tmp"))  # the temporary file was renamed
    served = {i.hash: i for i in app[GALLERY].list()}

    fresh = tmp_path / "fresh"
    proc2 = cli("gallery", "--data-dir", str(fresh), "restore", str(backup), cwd=tmp_path)
    assert (proc2.returncode, proc2.stderr, proc2.stdout) == (0, "", (
        f"restored {backup} (2 people, 3 samples, {visits} visits) into "
        f"{fresh / DB_FILE}; there was no gallery before\n"
        f"copy the secret.key kept with the backup into {fresh} before starting, or email "
        "look-ups will not match\n"))
    restored = await Gallery.open(fresh, "SFace", cfg.recognition.policy("SFace"), SECRET)
    original = app[GALLERY]
    try:
        got = {i.hash: i for i in restored.list()}
        assert got.keys() == served.keys()
        assert got[faces["Barack Obama"]] == served[faces["Barack Obama"]]
        assert got[faces["Joe Biden"]].name == biden_then  # as it was during the backup
        assert got[faces["Joe Biden"]].samples == served[faces["Joe Biden"]].samples
        for face in got:
            mine, theirs = restored.sample_embeddings(face), original.sample_embeddings(face)
            assert mine.keys() == theirs.keys()
            assert all(np.array_equal(mine[s], theirs[s]) for s in mine)
    finally:
        await restored.close()


async def test_restore_refuses_while_served_keeps_the_old_file_and_refuses_damage(
        app_client: Any, tmp_path: Path) -> None:
    backup = await build_gallery(tmp_path / "source", people=3)
    cfg = make_config(tmp_path)
    data = cfg.data_path
    db = data / DB_FILE
    client = await app_client(cfg, live=False)
    app = client.server.app
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack Obama"))
    assert resp.status == 201

    proc = cli("gallery", "--data-dir", str(data), "restore", str(backup), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        ERROR_EXIT, (f"error: a running facestream (the server or a command) has {db} open: "
                     "stop it, then restore\n"))
    assert [i.name for i in app[GALLERY].list()] == ["Barack Obama"]
    await client.close()  # the server stops

    damaged = tmp_path / "damaged.sqlite3"
    shutil.copy(backup, damaged)
    corrupt_an_index_entry(damaged)
    proc = cli("gallery", "--data-dir", str(data), "restore", str(damaged), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        ERROR_EXIT, (f"error: the backup {damaged} is damaged (row 1 missing from index "
                     "samples_person): restore another backup\n"))

    proc = cli("gallery", "--data-dir", str(data), "restore", str(backup), cwd=tmp_path)
    (kept,) = data.glob(f"{DB_FILE}.before-restore-*")
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", (
        f"restored {backup} (3 people, 3 samples, 0 visits) into {db}; the previous "
        f"gallery is kept as {kept}\n"))
    assert not [p for p in os.listdir(data) if p.endswith(("-wal", "-shm", ".tmp"))]
    for path, names in ((db, ["Person 0", "Person 1", "Person 2"]), (kept, ["Barack Obama"])):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            assert [n for (n,) in conn.execute("SELECT name FROM people ORDER BY name")
                    ] == names
        conn.close()

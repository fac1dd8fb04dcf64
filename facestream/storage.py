"""The face gallery: SQLite in the data dir, one writer thread, an in-memory index for matching.

An identity has a fixed hash (from its first embedding), a name, an optional email HMAC, and
one or more samples: an embedding plus the images of the face it was computed from (a
thumbnail, and a context square with the face's box and landmarks in it: small JPEGs), so the
whole gallery can be re-embedded for another model, each with its own alignment, without
re-enrolling anyone.

Every database call runs on one dedicated thread that owns the connection, so SQLite never
blocks the event loop and writes never race. A write is committed (WAL, synchronous=FULL)
before the coroutine returns, so anything the API acknowledged survives a crash. After each
commit a new immutable ``GalleryIndex`` snapshot, derived from the last in milliseconds
(``GalleryIndex.replaced``), is swapped in for the live matcher. Changes made by
another process (the ``faces`` command line) are noticed through ``PRAGMA data_version`` and
reloaded.

The gallery records which model made each embedding and refuses to mix models.

A bad disk is a ``StorageError`` with one line saying what to do: opening refuses a data dir
it cannot write or with little free space, and an empty, foreign, truncated or damaged file;
a write that meets a full disk raises ``StorageFull`` and changes nothing, in the file or in
memory. ``DiskGuard`` keeps SQLite's memory-mapped -shm file from ever causing SIGBUS.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import itertools
import json
import logging
import os
import sqlite3
import tempfile
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol, TypeVar

import numpy as np

from .config import Config
from .identity import Embedding, GalleryIndex, OpenSetPolicy, face_hash, normalize
from .privacy import email_digest, load_or_create_secret
from .recognition import SampleImages

T = TypeVar("T")

log = logging.getLogger(__name__)

DB_FILE: Final = "gallery.sqlite3"
SCHEMA_VERSION: Final = 4
MAX_NAME_LENGTH: Final = 200
SOURCES: Final = ("upload", "live", "import", "history")
#: How much of ``gallery.sqlite3-shm`` is given its disk blocks up front (see DiskGuard):
#: 32 of SQLite's 32 KiB index regions, a write-ahead log of about 130,000 pages.
SHM_RESERVE: Final = 1 << 20
#: Opening refuses a disk with less free space: SQLite's first writes into a new -shm (before
#: it can be reserved) and the reservation itself must find room.
MIN_FREE_BYTES: Final = 2 * SHM_RESERVE
RESTORE_HINT: Final = "bring a backup back with `python -m facestream gallery restore BACKUP`"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email_hmac  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_email ON identities (email_hmac);
CREATE TABLE IF NOT EXISTS samples (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    identity    TEXT NOT NULL REFERENCES identities (hash) ON DELETE CASCADE,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    crop        BLOB,
    context     BLOB,
    geometry    TEXT,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_identity ON samples (identity);
CREATE TABLE IF NOT EXISTS visits (
    id          TEXT PRIMARY KEY,
    person      TEXT NOT NULL,
    known       INTEGER NOT NULL,
    name        TEXT,
    camera      TEXT NOT NULL,
    arrived_at  REAL NOT NULL,
    left_at     REAL,
    quality     REAL
);
CREATE INDEX IF NOT EXISTS visits_time ON visits (arrived_at, id);
CREATE INDEX IF NOT EXISTS visits_person ON visits (person, arrived_at);
CREATE TABLE IF NOT EXISTS visit_images (
    visit       TEXT PRIMARY KEY REFERENCES visits (id) ON DELETE CASCADE,
    crop        BLOB,
    context     BLOB,
    geometry    TEXT,
    snapshot    BLOB
);
CREATE TABLE IF NOT EXISTS unknowns (
    hash        TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    count       INTEGER NOT NULL,
    created_at  REAL NOT NULL
);
"""


class GalleryError(Exception):
    """Base for gallery failures the API reports as 4xx."""


class ModelMismatch(GalleryError):
    pass


class AlreadyEnrolled(GalleryError):
    def __init__(self, existing_hash: str, name: str, similarity: float | None) -> None:
        super().__init__(f"this face is already enrolled as {name!r}")
        self.hash = existing_hash
        self.name = name
        self.similarity = similarity


class BelongsToOther(AlreadyEnrolled):
    def __init__(self, existing_hash: str, name: str, similarity: float | None) -> None:
        super().__init__(existing_hash, name, similarity)
        self.args = (f"this face matches another identity, {name!r}",)


class NotFound(GalleryError):
    pass


class LastSample(GalleryError):
    pass


class StorageError(GalleryError):
    """The gallery file or the disk under it failed (read-only, damaged, I/O errors): start-up
    stops with this line, the API answers 503. A failed write changed nothing."""


class StorageFull(StorageError):
    """The disk holding the gallery is full: the API answers 507; nothing was written."""

    def __init__(self, path: Path, detail: str = "") -> None:
        super().__init__(f"the disk holding {path} is full{detail}: free space and retry")
        self.path = path


@dataclass(frozen=True)
class Sample:
    id: int
    created_at: float
    source: str
    has_crop: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "source": self.source,
                "has_crop": self.has_crop}


@dataclass(frozen=True)
class Identity:
    hash: str
    name: str
    model: str
    created_at: float
    has_email: bool
    samples: tuple[Sample, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "model": self.model,
            "created_at": self.created_at,
            "has_email": self.has_email,
            "samples": [s.to_json() for s in self.samples],
            "thumbnail": f"/faces/{self.hash}/thumbnail",
        }


@dataclass(frozen=True)
class SampleRecord:
    """A sample with its data, for export and re-embedding."""

    id: int
    identity: str
    embedding: Embedding
    crop: bytes | None
    source: str
    created_at: float
    context: bytes | None = None
    geometry: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredImages:
    """A sample's images: the thumbnail (``crop``), and the context square with the face's
    ``geometry`` in it (box and landmarks) that re-embedding aligns from."""

    crop: bytes | None = None
    context: bytes | None = None
    geometry: dict[str, Any] | None = None


    @classmethod
    def of(cls, images: SampleImages | None) -> StoredImages:
        if images is None:
            return NO_IMAGES
        return cls(images.crop, images.context, images.geometry())


NO_IMAGES: Final = StoredImages()


#: Letters and symbols by category that show nothing: the Hangul fillers and the blank Braille
#: pattern (the usual ways to make an "empty" name look filled).
_BLANK_CHARACTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")


#: Characters that reorder the text around them (the bidi embeddings, overrides and isolates,
#: and the direction marks): "\u202eevil" shows as "live". Names in right-to-left scripts
#: display right without them.
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                  "\u2066\u2067\u2068\u2069")


def _invisible(ch: str) -> bool:
    """Shows nothing on its own: a format character (Cf: zero-width space and joiners, BOM,
    word joiner, bidi marks), a combining mark, or a blank filler."""
    return unicodedata.category(ch) in ("Cf", "Mn", "Me") or ch in _BLANK_CHARACTERS


def clean_name(name: Any) -> str:
    """A display name as it is stored, or GalleryError saying what is wrong with it.

    Whitespace is trimmed and every inner run of it becomes one space; format characters at
    either end are trimmed too (they show nothing there; inside, joiners build emoji and
    ZWNJ spells Persian). Refused: no visible character (only whitespace, format characters,
    combining marks or blank fillers), a control character (Unicode Cc: NUL, ESC, DEL, C1;
    tab and newline count as whitespace), a bidirectional control (U+202E and its kin), an
    unpaired surrogate or U+FFFD (text that was not valid UTF-8 on its way here), more than
    ``MAX_NAME_LENGTH`` characters."""
    if name is None:
        raise GalleryError("name is required")
    if not isinstance(name, str):
        raise GalleryError("name must be a string")
    name = " ".join(name.split())
    if not name:
        raise GalleryError("name is required")
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise GalleryError(f"name contains a control character (U+{ord(ch):04X})")
        if category == "Cs":
            raise GalleryError(f"name contains an unpaired surrogate (U+{ord(ch):04X}); "
                               "send valid Unicode text")
        if ch in _BIDI_CONTROLS:
            raise GalleryError(f"name contains a bidirectional control character "
                               f"(U+{ord(ch):04X}), which changes how the text around it "
                               "displays; right-to-left names need none")
        if ch == "\ufffd":
            raise GalleryError("name contains U+FFFD, the replacement character: it was not "
                               "valid UTF-8 text when it was sent")
    if all(ch == " " or _invisible(ch) for ch in name):
        only = ", ".join(f"U+{ord(ch):04X}" for ch in sorted(set(name) - {" "}))
        raise GalleryError(f"name has no visible characters (only {only})")
    name = name.strip(" " + "".join({ch for ch in name if unicodedata.category(ch) == "Cf"}))
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"name is longer than {MAX_NAME_LENGTH} characters")
    return name


def _blob(emb: Embedding) -> bytes:
    return np.ascontiguousarray(emb, dtype="<f4").tobytes()


# -- the disk under the gallery ---------------------------------------------------------------


def free_bytes(folder: Path) -> int:
    """Space left where ``folder`` lives, as ``df`` shows it (root may use a little more)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return MIN_FREE_BYTES  # unknown: let SQLite say what is wrong
    return st.f_bavail * st.f_frsize


def storage_error(path: Path, exc: sqlite3.Error) -> StorageError | None:
    """What a SQLite error on the gallery ``path`` means when the disk or the file is at
    fault, as one line saying what to do; None for any other error."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_FULL or (
            code == sqlite3.SQLITE_IOERR and free_bytes(path.parent) < MIN_FREE_BYTES):
        # The log reports a full disk as SQLITE_FULL, the -shm file as an I/O error.
        return StorageFull(path)
    if code == sqlite3.SQLITE_READONLY:
        return StorageError(
            f"the gallery {path} cannot be written ({exc}): make {path.parent} and its files "
            "writable by this user, then restart")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StorageError(
            f"the gallery {path} is damaged ({exc}): `python -m facestream gallery check` "
            f"lists the problems; {RESTORE_HINT}, or move it away to start an empty gallery")
    if code == sqlite3.SQLITE_IOERR:
        return StorageError(
            f"reading or writing the gallery {path} failed ({exc}, "
            f"{getattr(exc, 'sqlite_errorname', 'SQLITE_IOERR')}): check the disk "
            "(`dmesg`), then retry")
    if code == sqlite3.SQLITE_CANTOPEN:
        return StorageError(
            f"cannot open the gallery {path} ({exc}): make {path.parent} and its files "
            "readable and writable by this user")
    return None


def check_data_dir(data_dir: Path) -> None:
    """Refuse, in one line, a data dir the gallery cannot live in: one that cannot be written
    (SQLite creates its -wal and -shm files beside the gallery) or on a full disk. Root
    ignores permission bits, so a real file is created rather than the bits read."""
    try:
        fd, probe = tempfile.mkstemp(dir=data_dir, prefix=".facestream-write-test-")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageFull(data_dir / DB_FILE) from None
        raise StorageError(
            f"the data dir {data_dir} is not writable ({exc.strerror}): make it writable by "
            "this user, or choose another with --data-dir or storage.data_dir") from None
    os.close(fd)
    os.unlink(probe)
    free = free_bytes(data_dir)
    if free < MIN_FREE_BYTES:
        raise StorageFull(data_dir / DB_FILE, f" ({free // 1024} KiB free; the gallery needs "
                          f"{MIN_FREE_BYTES // 1024} KiB to open)")


def check_gallery_file(path: Path, writable: bool = True) -> None:
    """Refuse, in one line, a gallery file SQLite would misread or cannot write: empty
    (SQLite would quietly start a new gallery in it), not a database, cut short, or (if
    ``writable``) with a -wal / -shm file nobody here can write. It reads the header: call
    it only while this process has no connection to ``path`` (``DiskGuard.holds``)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return  # a new gallery
    if not path.is_file():
        raise StorageError(f"the gallery {path} is not a file: move it away")
    if size == 0:
        raise StorageError(f"the gallery {path} is empty (0 bytes): delete it to start an "
                           f"empty gallery, or {RESTORE_HINT}")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise StorageError(f"cannot read the gallery {path} ({exc.strerror}): make it "
                           "readable and writable by this user") from None
    if not header.startswith(SQLITE_MAGIC):
        raise StorageError(f"the gallery {path} is not a SQLite database: move it away to "
                           f"start an empty gallery, or {RESTORE_HINT}")
    wal = Path(f"{path}-wal")
    if not (wal.exists() and wal.stat().st_size):
        # With no log to complete it, the file is as long as its header says (a count that
        # is valid when bytes 92-95 repeat the change counter at 24-27).
        page = int.from_bytes(header[16:18], "big")
        expected = int.from_bytes(header[28:32], "big") * (65536 if page == 1 else page)
        if len(header) < 100 or (header[24:28] == header[92:96] and size < expected):
            raise StorageError(
                f"the gallery {path} is truncated ({size} of {max(expected, 100)} bytes): "
                f"{RESTORE_HINT}, or move it away to start an empty gallery")
    if not writable:
        return
    for file, advice in (
        (path, ""),
        (wal, " (do not delete it: it holds changes not yet in the gallery file)"),
        (Path(f"{path}-shm"), ", or delete it while no facestream runs (SQLite rebuilds it)"),
    ):
        # access() heeds read-only mounts and `chattr +i`, for root too.
        if file.exists() and not (file.is_file() and os.access(file, os.W_OK)):
            raise StorageError(f"{file} cannot be written: make it a file this user can "
                               f"write{advice}")


class DiskGuard:
    """Keeps a gallery's ``-shm`` file allocated on disk, so that a full disk is an error
    SQLite reports rather than a signal that kills the process.

    SQLite maps ``gallery.sqlite3-shm`` into memory and writes its WAL index through the
    mapping. It grows the file by writing one byte per 4 KiB, so where filesystem blocks are
    smaller (ext4 formats 1 KiB blocks below 512 MiB) most of each page stays a hole, and the
    first store into a hole on a full disk cannot be backed: the kernel sends SIGBUS and the
    server dies without a log line (measured on a 4 MiB ext4 image, with 9-40 KiB left at
    start, and when the disk filled while serving). ``posix_fallocate`` gives the pages their
    blocks up front, or fails with ENOSPC, which is reported.

    One per gallery file and process, shared: closing any descriptor of a file drops all of
    the process's POSIX locks on it, SQLite's included, so the descriptor stays open until
    this process's last user is done (SQLite's os_unix.c keeps its descriptors per inode for
    the same reason). Not thread-safe across users; each user calls it from one thread.
    """

    _held: ClassVar[dict[tuple[int, int], DiskGuard]] = {}

    def __init__(self, db: Path, key: tuple[int, int]) -> None:
        self.db = db
        self._key = key
        self._users = 0
        self._fd: int | None = None
        self._reserved = 0

    @staticmethod
    def _key_of(db: Path) -> tuple[int, int] | None:
        try:
            st = db.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @classmethod
    def holds(cls, db: Path) -> bool:
        """Whether this process has the gallery file ``db`` open."""
        key = cls._key_of(db)
        return key is not None and key in cls._held

    @classmethod
    def acquire(cls, db: Path) -> DiskGuard:
        """The guard of ``db``, which a connection of this process has just opened."""
        key = cls._key_of(db)
        if key is None:
            raise StorageError(f"the gallery {db} disappeared while it was being opened")
        guard = cls._held.setdefault(key, cls(db, key))
        guard._users += 1
        try:
            guard.reserve()
        except BaseException:
            guard.release()
            raise
        return guard

    def reserve(self) -> None:
        """Give the -shm file's pages their disk blocks (one fstat when nothing grew). Call
        it before a write: it raises StorageFull when there is no room."""
        if self._fd is None:
            try:
                self._fd = os.open(f"{self.db}-shm", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                # No -shm yet, or one nobody here can write: SQLite maps that one read-only
                # and never stores into it.
                return
        want = max(SHM_RESERVE, os.fstat(self._fd).st_size)
        if want <= self._reserved:
            return
        try:
            os.posix_fallocate(self._fd, 0, want)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StorageFull(self.db) from None
            raise StorageError(f"cannot reserve disk space for {self.db}-shm "
                               f"({exc.strerror}): check the disk, then retry") from None
        self._reserved = want

    def release(self) -> None:
        """This user is done; call it after its connections are closed."""
        self._users -= 1
        if self._users > 0:
            return
        self._held.pop(self._key, None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the gallery file ``path``, guarded like the server's (for
    ``gallery check`` and ``backup``; safe while the server writes). Disk and file failures
    raise StorageError."""
    if not path.exists():
        raise StorageError(f"there is no gallery at {path}")
    if not DiskGuard.holds(path):
        check_gallery_file(path, writable=False)
    options = "mode=ro"
    if not os.access(path.parent, os.W_OK):
        # A read-only disk: SQLite cannot create the -shm it wants even for reading; the
        # file cannot change under us, so with no log beside it, it is read as it is.
        wal = Path(f"{path}-wal")
        if not (wal.exists() and wal.stat().st_size):
            options += "&immutable=1"
    elif free_bytes(path.parent) < MIN_FREE_BYTES:
        raise StorageFull(path)  # SQLite may have to write a new -shm: see DiskGuard
    conn = sqlite3.connect(f"file:{path}?{options}", uri=True, timeout=30.0)
    guard = None
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the log
        guard = DiskGuard.acquire(path)
        yield conn
    except sqlite3.Error as exc:
        mapped = storage_error(path, exc)
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        conn.close()
        if guard is not None:
            guard.release()


#: A statement and its parameters, with ``?`` placeholders (PostgreSQL's backend renumbers
#: them): the SQL the gallery, history and accounts speak to either database.
Statement = tuple[str, tuple[Any, ...]]
#: What a change tells the other nodes sharing the database: the event and the identities.
Change = tuple[str, Sequence[str]]
#: A gallery's samples as they are read, by column: ids, identities, has_crop, source,
#: created_at, and the embeddings as one matrix (a row per sample).
SampleColumns = tuple[Sequence[int], Sequence[str], Sequence[Any], Sequence[str],
                      Sequence[float], np.ndarray]
#: A gallery as it is read: its samples' columns, and the identities' rows ``(hash, name,
#: created_at, has_email)``.
Rows = tuple[SampleColumns, Sequence[Sequence[Any]]]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Reading a gallery makes millions of new objects, none of them garbage: the cyclic
    collector would start again and again over an ever larger heap (1,000,000 identities
    opened in 16.5 s with it, 13.0 s without)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def sample_columns(fetched: list[Sequence[Sequence[Any]]]) -> SampleColumns:
    """The columns of the sample rows ``(id, identity, dim, embedding, has_crop, source,
    created_at)`` taken out of ``fetched``: the rows and the embeddings' bytes are freed as
    soon as they are split and copied into one matrix (at a million samples they are a
    million tuples and half a gigabyte, gone before the identities are read)."""
    with collector_paused():
        rows = fetched.pop()
        sids, owners, dims, blobs, has_crops, sources, created = (
            zip(*rows) if rows else ((),) * 7)
        del rows
        if not sids:
            matrix = np.zeros((0, 0), dtype=np.float32)
        elif len(set(dims)) > 1:  # never written so, but one row must not make the rest fail
            matrix = np.stack([np.frombuffer(b, dtype="<f4") for b in blobs])
        else:
            matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
        return sids, owners, has_crops, sources, created, matrix.astype(np.float32, copy=False)


_SAMPLE_ROWS: Final = ("SELECT id, identity, dim, embedding, crop IS NOT NULL, source, "
                       "created_at FROM samples")
_IDENTITY_ROWS: Final = ("SELECT hash, name, created_at, email_hmac IS NOT NULL "
                         "FROM identities")


class Conflict(GalleryError):
    """A write broke a uniqueness or reference rule: another writer (a node sharing the
    database, or the ``faces`` command) changed the same identity a moment ago."""


class SqliteDb:
    """The gallery's SQLite file: one writer thread owns the connection, a second thread reads
    through a read-only one (WAL lets it read while the writer writes), so SQLite never blocks
    the event loop, a history page never waits behind a write, and writes never race."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.describe = f"the gallery {path}"
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facestream-db")
        self._conn: sqlite3.Connection | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facestream-db-r")
        self._rconn: sqlite3.Connection | None = None
        self._guard: DiskGuard | None = None
        self._data_version = 0
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, fn, *args)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except sqlite3.Error as exc:
            mapped = storage_error(self.path, exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def open(self) -> None:
        await self._run(self._open_sync)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the database's thread, which did the reading."""
        return await self._run(fn, *args)

    def _open_sync(self) -> None:
        check_data_dir(self.path.parent)
        if not DiskGuard.holds(self.path):
            check_gallery_file(self.path)
        created = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        if created:  # biometric data: this user's alone (SQLite's later -wal/-shm follow)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.chmod(f"{self.path}{suffix}", 0o600)
        self._guard = DiskGuard.acquire(self.path)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted faces are overwritten, not left in free pages until a VACUUM.
        conn.execute("PRAGMA secure_delete=ON")
        self._migrate_v1()
        conn.executescript(_SCHEMA)
        self._migrate_v2()
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        self._guard.reserve()  # a new gallery has had its -shm only since the first write

    def _migrate_v1(self) -> None:
        """Version 1 kept one embedding per identity, in the identities table."""
        assert self._conn is not None
        cols = [r[1] for r in self._conn.execute("PRAGMA table_info(identities)")]
        if "embedding" not in cols:
            return
        c = self._conn
        with c:
            c.execute("BEGIN IMMEDIATE")
            c.execute("ALTER TABLE identities RENAME TO identities_v1")
            c.execute("DROP INDEX IF EXISTS identities_email")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(
                "INSERT INTO identities (hash, name, email_hmac, created_at, updated_at) "
                "SELECT hash, name, email_hmac, created_at, updated_at FROM identities_v1"
            )
            c.execute(
                "INSERT INTO samples (identity, model, dim, embedding, crop, source, created_at)"
                " SELECT hash, model, dim, embedding, NULL, 'import', created_at "
                "FROM identities_v1"
            )
            c.execute("DROP TABLE identities_v1")

    def _migrate_v2(self) -> None:
        """Version 2 kept only a sample's thumbnail (a dlib chip); version 3 adds the context
        square and the face's geometry in it. Old samples keep working without them."""
        assert self._conn is not None
        cols = [r[1] for r in self._conn.execute("PRAGMA table_info(samples)")]
        with self._conn:
            for col, kind in (("context", "BLOB"), ("geometry", "TEXT")):
                if col not in cols:
                    self._conn.execute(f"ALTER TABLE samples ADD COLUMN {col} {kind}")

    async def load(self, faces: Sequence[str] | None = None) -> Rows:
        """The rows of the identities ``faces`` (all for None), read in one transaction."""
        return await self._run(self._load_sync, faces)

    def _load_sync(self, faces: Sequence[str] | None) -> Rows:
        assert self._conn is not None
        c = self._conn
        with collector_paused(), c:
            c.execute("BEGIN")
            if faces is None:
                self._data_version = c.execute("PRAGMA data_version").fetchone()[0]
                where, params = "", ()
            else:
                where = f" WHERE {{}} IN ({', '.join('?' * len(faces))})"
                params = tuple(faces)
            fetched = [c.execute(f"{_SAMPLE_ROWS}{where.format('identity')} ORDER BY id",
                                 params).fetchall()]
            columns = sample_columns(fetched)
            return columns, c.execute(
                f"{_IDENTITY_ROWS}{where.format('hash')} ORDER BY created_at",
                params).fetchall()

    async def changed_elsewhere(self) -> bool:
        """Whether another process (the ``faces`` command) committed since the last load."""
        return await self._run(self._changed_elsewhere_sync)

    def _changed_elsewhere_sync(self) -> bool:
        assert self._conn is not None
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return bool(version != self._data_version)

    def follow(self, apply: Callable[[str, list[str]], Awaitable[None]]) -> None:
        """Other processes' changes are polled (``changed_elsewhere``), not pushed."""

    def status(self) -> dict[str, str]:
        return {"kind": "sqlite", "state": "ok"}

    def _write_sync(self, statements: Sequence[Statement]) -> list[int]:
        """Run statements in one IMMEDIATE transaction; return each one's lastrowid."""
        assert self._conn is not None
        if self._guard is not None:
            self._guard.reserve()  # the -shm may have grown in the last write
        ids = []
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                cur = self._conn.execute(sql, params)
                ids.append(int(cur.lastrowid or 0))
        return ids

    def _forget_sync(self, statements: Sequence[Statement]) -> None:
        """Delete face data for good: secure_delete zeroes it in the database file, and a
        truncating checkpoint drops the write-ahead log that still holds the old pages."""
        assert self._conn is not None
        self._write_sync(statements)
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            # The deletion is committed (and the caller must hear so); only the old pages
            # wait in the log for the next checkpoint.
            log.warning("the deleted data stays in %s-wal until the next checkpoint: %s",
                        self.path, storage_error(self.path, exc) or exc)

    def _read_sync(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._rconn is None:
            self._rconn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
            self._rconn.execute("PRAGMA query_only=ON")
        return list(self._rconn.execute(sql, params))

    def _close_reader_sync(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, from the reader connection (never behind a write)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, self._read_sync, sql, params)
        except sqlite3.Error as exc:
            mapped = storage_error(self.path, exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def write(self, statements: Sequence[Statement], change: Change | None = None
                    ) -> list[int]:
        """Run statements in one transaction on the writer; each one's lastrowid."""
        return await self._run(self._write_sync, statements)

    async def forget(self, statements: Sequence[Statement], change: Change | None = None
                     ) -> None:
        """Like ``write``, for deletions of face data: nothing of it stays on disk."""
        await self._run(self._forget_sync, statements)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._guard is not None:  # after the reader and the writer are closed
            self._guard.release()
            self._guard = None

    async def close(self) -> None:
        """Idempotent: close the connections on their own threads, then stop the threads."""
        if self._closed:
            return
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._reader, self._close_reader_sync)
            await self._run(self._close_sync)
        finally:
            self._reader.shutdown(wait=True)
            self._writer.shutdown(wait=True)


class Database(Protocol):
    """What a gallery needs of its database; ``SqliteDb`` and ``pgstore.PostgresDb`` are the
    two. Writes are ``?``-parameter statements run in one transaction; ``change`` is what
    the other nodes sharing the database are told."""

    describe: str

    async def open(self) -> None: ...
    async def load(self, faces: Sequence[str] | None = None) -> Rows: ...
    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
    async def write(self, statements: Sequence[Statement], change: Change | None = None
                    ) -> list[int]: ...
    async def forget(self, statements: Sequence[Statement], change: Change | None = None
                     ) -> None: ...
    async def changed_elsewhere(self) -> bool: ...
    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...
    def follow(self, apply: Callable[[str, list[str]], Awaitable[None]]) -> None: ...
    def status(self) -> dict[str, str]: ...
    async def close(self) -> None: ...


def _build(read: list[Rows], model: str) -> tuple[dict[str, Identity], dict[int, Embedding],
                                                  dict[int, str], np.ndarray, Sequence[str]]:
    """Identities, embeddings and owners from what was read (taken out of ``read``), plus the
    embedding matrix and each sample's identity, for the index."""
    with collector_paused():
        (sids, owners, has_crops, sources, created, matrix), identity_rows = read.pop()
        samples: dict[str, list[Sample]] = {}
        for sid, ident, has_crop, source, at in zip(sids, owners, has_crops, sources, created):
            samples.setdefault(ident, []).append(Sample(sid, at, source, bool(has_crop)))
        identities = {
            face: Identity(face, name, model, at, bool(has_email), tuple(samples.get(face, ())))
            for face, name, at, has_email in identity_rows
        }
        return identities, dict(zip(sids, matrix)), dict(zip(sids, owners)), matrix, owners


class Gallery:
    """Enrolled identities for one model: kept whole in memory and matched there, stored in a
    ``Database`` (SQLite in the data dir, or PostgreSQL shared by several nodes). Create with
    ``await Gallery.open(...)``, ``Gallery.open_url(...)`` or ``Gallery.for_config(...)``."""

    def __init__(
        self, db: Database, model: str, policy: OpenSetPolicy, secret: bytes,
        strategy: str = "centroid", duplicate_far: float = 1e-6,
    ) -> None:
        self.db = db
        self.model = model
        self.policy = policy
        self.strategy = strategy
        self.duplicate_far = duplicate_far
        self._secret = secret
        self._identities: dict[str, Identity] = {}
        self._embeddings: dict[int, Embedding] = {}  # sample id -> embedding
        self._owner: dict[int, str] = {}  # sample id -> identity hash
        self.index = GalleryIndex.empty(policy, strategy)
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[str, Identity | None], None]] = []

    @classmethod
    async def open(cls, data_dir: Path, model: str, policy: OpenSetPolicy, secret: bytes,
                   **options: Any) -> Gallery:
        """The SQLite gallery in ``data_dir``. ``options``: ``strategy``, ``check_model``
        (refuse a gallery of another model's embeddings; default True), ``duplicate_far``."""
        return await cls._opened(SqliteDb(data_dir / DB_FILE), model, policy, secret,
                                 **options)

    @classmethod
    async def open_url(cls, url: str, model: str, policy: OpenSetPolicy, secret: bytes,
                       **options: Any) -> Gallery:
        """The gallery in the PostgreSQL database ``url``, followed as other nodes change
        it; ``options`` as for ``open``."""
        from .pgstore import PostgresDb

        return await cls._opened(PostgresDb(url, secret), model, policy, secret, **options)

    @classmethod
    async def _opened(cls, db: Database, model: str, policy: OpenSetPolicy, secret: bytes,
                      strategy: str = "centroid", check_model: bool = True,
                      duplicate_far: float = 1e-6) -> Gallery:
        gallery = cls(db, model, policy, secret, strategy, duplicate_far)
        try:
            await db.open()
            if check_model:
                await gallery._check_models()
            await gallery._load()
            db.follow(gallery._follow)
        except BaseException:
            await gallery.close()
            raise
        return gallery

    @classmethod
    async def for_config(
        cls, config: Config, model: str | None = None, check_model: bool = True
    ) -> Gallery:
        """The configured gallery (``storage.url``, or the data dir's SQLite file, created
        private with its secret) for ``model`` (default: the configured one), with that
        model's open-set policy."""
        data_dir = config.data_path
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data dir {data_dir} ({exc.strerror}): create it, or choose "
                "another with --data-dir or storage.data_dir") from None
        check_data_dir(data_dir)  # before the secret is written into it
        secret = load_or_create_secret(data_dir, config.storage.secret)
        r = config.recognition
        model = model or r.model
        opener = (functools.partial(cls.open_url, config.storage.url) if config.storage.url
                  else functools.partial(cls.open, data_dir))
        return await opener(model, r.policy(model), secret, strategy=r.matching,
                            check_model=check_model, duplicate_far=r.duplicate_far)

    async def _check_models(self) -> None:
        rows = await self.db.query(
            "SELECT model, COUNT(*) FROM samples WHERE model != ? GROUP BY model", (self.model,))
        if rows:
            others = ", ".join(f"{count} by {model}" for model, count in rows)
            raise ModelMismatch(
                f"{self.db.describe} holds embeddings made {others}, but "
                f"recognition.model is {self.model}; embeddings of different models cannot be "
                f"compared: run `python -m facestream reembed --model {self.model}` to rebuild "
                f"them from the stored face crops, or set recognition.model = \"{rows[0][0]}\""
            )

    async def _load(self) -> None:
        """Read the whole gallery and build its index, off the event loop (at a million
        identities this is seconds of work) and on the database's own thread: the memory
        the reading freed is reused by the building (built on another thread, the same
        million-identity gallery kept 330 MB more of the process's memory)."""
        read = [await self.db.load()]
        self._identities, self._embeddings, self._owner, self.index = await self.db.run(
            self._built, read)

    def _built(self, read: list[Rows]) -> tuple[dict[str, Identity], dict[int, Embedding],
                                                 dict[int, str], GalleryIndex]:
        identities, embeddings, owner, matrix, owners = _build(read, self.model)
        return identities, embeddings, owner, self._index_of(identities, matrix, owners)

    def _index_of(self, identities: dict[str, Identity], matrix: np.ndarray,
                  owners: Sequence[str]) -> GalleryIndex:
        indexed = [face for face in identities if identities[face].samples]
        if not indexed:
            return GalleryIndex.empty(self.policy, self.strategy)
        position = {face: i for i, face in enumerate(indexed)}
        owner = np.array([position.get(face, -1) for face in owners], dtype=np.int64)
        kept = owner >= 0
        return GalleryIndex.from_arrays(
            indexed, [identities[f].name for f in indexed],
            *((owner, matrix) if kept.all() else (owner[kept], matrix[kept])),
            self.strategy, self.policy)

    # -- following changes made elsewhere --------------------------------------------------

    async def _follow(self, event: str, faces: list[str]) -> None:
        """Another node changed ``faces`` (``reloaded``: anything): bring them in from the
        database and fire the same event here as the node that made the change."""
        async with self._lock:
            if event == "reloaded" or not faces:
                try:
                    await self._reload()
                except ModelMismatch as exc:  # re-embedded elsewhere for another model
                    log.error("%s; until then this node matches the gallery it had", exc)
                return
            before = self._identities.get(faces[0])
            identities, embeddings, owner, _, _ = _build([await self.db.load(faces)], self.model)
            for face in faces:
                self._drop_samples(self._identities.get(face))
                if face in identities:
                    self._identities[face] = identities[face]
                else:
                    self._identities.pop(face, None)
            self._embeddings.update(embeddings)
            self._owner.update(owner)
            after = self._identities.get(faces[0])
            if event == "deleted" or after is None:
                # Changed, then deleted before we looked: the deletion's event is this one.
                self._changed("deleted", before, *faces)
            else:
                self._changed(event, after, *faces)

    async def reload_if_changed(self) -> bool:
        """Pick up changes committed by another process on the same SQLite file; True if
        there were any (a shared database's changes are followed as they are notified)."""
        async with self._lock:
            if not await self.db.changed_elsewhere():
                return False
            await self._reload()
            return True

    async def _reload(self) -> None:
        """The whole gallery again (another model's embeddings refused), then ``reloaded``."""
        await self._check_models()
        await self._load()
        self._changed("reloaded", None)

    def _drop_samples(self, ident: Identity | None) -> None:
        """Forget ``ident``'s samples' embeddings and owners (the identity itself stays)."""
        for sample in ident.samples if ident is not None else ():
            self._owner.pop(sample.id, None)
            self._embeddings.pop(sample.id, None)

    # -- change notification ---------------------------------------------------------------

    def on_change(self, listener: Callable[[str, Identity | None], None]) -> None:
        """Call ``listener(event, identity)`` after each committed change (this node's or,
        on a shared database, another node's)."""
        self._listeners.append(listener)

    def _changed(self, event: str, ident: Identity | None, *faces: str) -> None:
        """Swap in an index that follows the change to ``faces`` (identities added, changed
        or gone; milliseconds, see GalleryIndex.replaced), then tell the listeners."""
        index = self.index
        for face in faces:
            now = self._identities.get(face)
            if now is None or not now.samples:
                index = index.removed(face)
            else:
                index = index.replaced(face, now.name,
                                       [self._embeddings[s.id] for s in now.samples])
        self.index = index
        for listener in self._listeners:
            try:
                listener(event, ident)
            except Exception:
                log.exception("a gallery change listener failed on %s", event)

    # -- the database, for history and accounts --------------------------------------------

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (``?`` parameters)."""
        return await self.db.query(sql, params)

    async def write(self, statements: Sequence[Statement]) -> list[int]:
        """Run statements in one transaction; the id each INSERT gave its row."""
        return await self.db.write(statements)

    async def forget(self, statements: Sequence[Statement]) -> None:
        """Like ``write``, for deletions of face data: nothing of it stays on disk."""
        await self.db.forget(statements)

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[Identity]:
        return list(self._identities.values())

    def page(self, offset: int, limit: int) -> list[Identity]:
        """``limit`` identities from ``offset``, oldest first, without copying the others
        (``list()`` of 200,000 costs a millisecond each time)."""
        if offset >= len(self._identities):
            return []  # (islice takes no offset beyond sys.maxsize, which a query may ask)
        return list(itertools.islice(self._identities.values(), offset, offset + limit))

    @property
    def count(self) -> int:
        """How many identities are enrolled."""
        return len(self._identities)

    def get(self, face: str) -> Identity | None:
        return self._identities.get(face)

    def sample_embeddings(self, face: str) -> dict[int, Embedding]:
        ident = self._identities.get(face)
        return {s.id: self._embeddings[s.id] for s in ident.samples} if ident else {}

    async def find_by_email(self, email: str) -> list[Identity]:
        digest = email_digest(self._secret, email)
        rows = await self.query("SELECT hash FROM identities WHERE email_hmac = ?", (digest,))
        return [self._identities[r[0]] for r in rows if r[0] in self._identities]

    async def crop(self, face: str, sample_id: int | None = None) -> bytes | None:
        """A sample's aligned face crop (JPEG); without ``sample_id``, the first one."""
        if sample_id is None:
            sql, params = (("SELECT crop FROM samples WHERE identity = ? AND crop IS NOT NULL "
                           "ORDER BY id LIMIT 1"), (face,))
        else:
            sql, params = ("SELECT crop FROM samples WHERE identity = ? AND id = ?",
                           (face, sample_id))
        rows = await self.query(sql, params)
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def records(self) -> list[tuple[Identity, str | None, list[SampleRecord]]]:
        """Everything, for export and re-embedding: identity, email HMAC, samples."""
        rows = await self.query(
            "SELECT id, identity, dim, embedding, crop, source, created_at, context, geometry "
            "FROM samples ORDER BY id")
        by_identity: dict[str, list[SampleRecord]] = {}
        for sid, face, dim, blob, crop, source, created, context, geometry in rows:
            emb = np.frombuffer(blob, dtype="<f4").reshape(dim).astype(np.float32)
            by_identity.setdefault(face, []).append(SampleRecord(
                int(sid), face, emb, crop, source, created, context,
                json.loads(geometry) if geometry else None))
        emails = dict(await self.query("SELECT hash, email_hmac FROM identities"))
        return [(i, emails.get(i.hash), by_identity.get(i.hash, []))
                for i in self._identities.values()]

    # -- writing ---------------------------------------------------------------------------

    def _check_embedding(self, embedding: Sequence[float] | Embedding,
                         model: str | None) -> Embedding:
        if model is not None and model != self.model:
            raise ModelMismatch(
                f"embedding made by {model} cannot join a gallery of {self.model} embeddings"
            )
        emb = normalize(embedding)
        if len(self.index) and emb.shape[0] != self.index.dim:
            raise ModelMismatch(
                f"embedding has {emb.shape[0]} dimensions; {self.model} embeddings in this "
                f"gallery have {self.index.dim}"
            )
        return emb

    def _sample_sql(self, face: str, emb: Embedding, images: StoredImages, source: str,
                    now: float) -> tuple[str, tuple[Any, ...]]:
        if source not in SOURCES:
            raise GalleryError(f"unknown sample source {source!r}")
        geometry = json.dumps(images.geometry) if images.geometry is not None else None
        return (
            ("INSERT INTO samples (identity, model, dim, embedding, crop, context, geometry, "
             "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (face, self.model, int(emb.shape[0]), _blob(emb), images.crop, images.context,
             geometry, source, now),
        )

    async def add(
        self,
        name: str,
        embedding: Sequence[float] | Embedding,
        email: str | None = None,
        face: str | None = None,
        model: str | None = None,
        images: StoredImages = NO_IMAGES,
        source: str = "upload",
        email_hmac: str | None = None,
        force: bool = False,
    ) -> Identity:
        """Enroll a face. ``face`` keeps a given hash (the prototype's, on import); by default
        the hash is derived from the embedding. Raises AlreadyEnrolled if the face is
        near-certainly an enrolled identity (a chance of at most ``duplicate_far`` that it is
        somebody else) unless ``force``, ModelMismatch if ``model`` differs from the
        gallery's."""
        name = clean_name(name)
        emb = self._check_embedding(embedding, model)
        digest = email_digest(self._secret, email) if email and email.strip() else email_hmac
        async with self._lock:
            face = face or face_hash(emb)
            if face in self._identities:
                existing = self._identities[face]
                raise AlreadyEnrolled(face, existing.name, 1.0)
            match = None if force else self.index.near_certain(emb, self.duplicate_far)
            if match is not None:
                raise AlreadyEnrolled(match.hash, match.name, match.similarity)
            now = time.time()
            try:
                _, sid, _, _ = await self.db.write([
                (("INSERT INTO identities (hash, name, email_hmac, created_at, updated_at) "
                 "VALUES (?, ?, ?, ?, ?)"), (face, name, digest, now, now)),
                self._sample_sql(face, emb, images, source, now),
                # A stranger seen before (enrolled from the live view or from history):
                # their visits are this person's now.
                ("UPDATE visits SET known = 1, name = ? WHERE person = ?", (name, face)),
                ("DELETE FROM unknowns WHERE hash = ?", (face,)),
                ], ("added", [face]))
            except Conflict:  # another node or process enrolled it a moment ago
                raise AlreadyEnrolled(face, name, 1.0) from None
            ident = Identity(face, name, self.model, now, digest is not None,
                             (Sample(sid, now, source, images.crop is not None),))
            self._identities[face] = ident
            self._embeddings[sid] = emb
            self._owner[sid] = face
            self._changed("added", ident, face)
            return ident

    async def add_sample(
        self,
        face: str,
        embedding: Sequence[float] | Embedding,
        images: StoredImages = NO_IMAGES,
        source: str = "upload",
        model: str | None = None,
        force: bool = False,
    ) -> Sample:
        """Add another sample to an identity; it keeps its hash. Raises BelongsToOther if the
        face is near-certainly a different identity, and more like it than like this one
        (unless ``force``)."""
        emb = self._check_embedding(embedding, model)
        async with self._lock:
            ident = self._identities.get(face)
            if ident is None:
                raise NotFound(f"no enrolled face with hash {face}")
            other = None if force else self.index.near_certain(emb, self.duplicate_far)
            if other is not None and other.hash != face:
                own = self.index.score(emb, face)
                if own is None or other.similarity > own:
                    raise BelongsToOther(other.hash, other.name, other.similarity)
            now = time.time()
            try:
                sid, _ = await self.db.write([
                    self._sample_sql(face, emb, images, source, now),
                    ("UPDATE identities SET updated_at = ? WHERE hash = ?", (now, face)),
                ], ("sample_added", [face]))
            except Conflict:
                raise NotFound(f"no enrolled face with hash {face} (deleted elsewhere a "
                               "moment ago)") from None
            sample = Sample(sid, now, source, images.crop is not None)
            self._identities[face] = replace(ident, samples=(*ident.samples, sample))
            self._embeddings[sid] = emb
            self._owner[sid] = face
            self._changed("sample_added", self._identities[face], face)
            return sample

    async def delete_sample(self, face: str, sample_id: int) -> Identity:
        async with self._lock:
            ident = self._identities.get(face)
            if ident is None or all(s.id != sample_id for s in ident.samples):
                raise NotFound(f"no sample {sample_id} of face {face}")
            if len(ident.samples) == 1:
                raise LastSample(
                    f"sample {sample_id} is the only sample of {ident.name!r}; delete the "
                    "identity instead"
                )
            await self.db.forget([
                ("DELETE FROM samples WHERE id = ? AND identity = ?", (sample_id, face)),
                ("UPDATE identities SET updated_at = ? WHERE hash = ?", (time.time(), face)),
            ], ("sample_deleted", [face]))
            self._embeddings.pop(sample_id, None)
            self._owner.pop(sample_id, None)
            ident = replace(ident, samples=tuple(s for s in ident.samples if s.id != sample_id))
            self._identities[face] = ident
            self._changed("sample_deleted", ident, face)
            return ident

    async def merge(self, target: str, source: str) -> Identity:
        """"These are the same person": move ``source``'s samples to ``target`` (which keeps
        its hash, name and email) and remove ``source``."""
        if target == source:
            raise GalleryError("cannot merge an identity into itself")
        async with self._lock:
            into, other = self._identities.get(target), self._identities.get(source)
            if into is None or other is None:
                missing = target if into is None else source
                raise NotFound(f"no enrolled face with hash {missing}")
            now = time.time()
            await self.db.write([
                ("UPDATE samples SET identity = ? WHERE identity = ?", (target, source)),
                (("UPDATE identities SET updated_at = ?, email_hmac = "
                 "COALESCE(email_hmac, (SELECT email_hmac FROM identities WHERE hash = ?)) "
                 "WHERE hash = ?"), (now, source, target)),
                ("DELETE FROM identities WHERE hash = ?", (source,)),
                ("UPDATE visits SET person = ?, name = ? WHERE person = ?",
                 (target, into.name, source)),
            ], ("merged", [target, source]))
            for sample in other.samples:
                self._owner[sample.id] = target
            merged = replace(
                into,
                samples=tuple(sorted((*into.samples, *other.samples), key=lambda s: s.id)),
                has_email=into.has_email or other.has_email,
            )
            del self._identities[source]
            self._identities[target] = merged
            self._changed("merged", merged, source, target)
            return merged

    async def rename(self, face: str, name: str) -> Identity:
        name = clean_name(name)
        async with self._lock:
            old = self._identities.get(face)
            if old is None:
                raise NotFound(f"no enrolled face with hash {face}")
            await self.db.write([
                ("UPDATE identities SET name = ?, updated_at = ? WHERE hash = ?",
                 (name, time.time(), face)),
                ("UPDATE visits SET name = ? WHERE person = ?", (name, face)),
            ], ("renamed", [face]))
            ident = replace(old, name=name)
            self._identities[face] = ident
            self._changed("renamed", ident, face)
            return ident

    async def delete(self, face: str) -> Identity:
        async with self._lock:
            ident = self._identities.get(face)
            if ident is None:
                raise NotFound(f"no enrolled face with hash {face}")
            # Their history goes with them: visits, face crops and snapshots.
            await self.db.forget([
                ("DELETE FROM samples WHERE identity = ?", (face,)),
                ("DELETE FROM identities WHERE hash = ?", (face,)),
                ("DELETE FROM visits WHERE person = ?", (face,)),
            ], ("deleted", [face]))
            del self._identities[face]
            self._drop_samples(ident)
            self._changed("deleted", ident, face)
            return ident

    async def replace_embeddings(self, model: str, embeddings: dict[int, Embedding],
                                 drop: Sequence[int] = ()) -> None:
        """Re-embedding: give every sample its embedding by ``model`` in one transaction
        (samples in ``drop``, which have no crop to re-embed, are deleted)."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE samples SET model = ?, dim = ?, embedding = ? WHERE id = ?",
             (model, int(e.shape[0]), _blob(normalize(e)), sid))
            for sid, e in embeddings.items()
        ]
        statements += [("DELETE FROM samples WHERE id = ?", (sid,)) for sid in drop]
        statements.append((("DELETE FROM identities WHERE hash NOT IN "
                           "(SELECT DISTINCT identity FROM samples)"), ()))
        async with self._lock:
            await self.db.write(statements, ("reloaded", []))
            self.model = model
            await self._load()
            self._changed("reloaded", None)

    async def close(self) -> None:
        """Idempotent."""
        await self.db.close()

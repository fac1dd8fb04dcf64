"""The SQLite file in the data dir and the disk under it: what opening refuses, what SQLite's
errors mean in one line, and ``DiskGuard``, which keeps SQLite's memory-mapped -shm file from
ever causing SIGBUS.

A bad disk is a ``StorageError`` with one line saying what to do: opening refuses a data dir
it cannot write or with little free space, and an empty, foreign, truncated or damaged file;
a write that meets a full disk raises ``StorageFull`` and changes nothing.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Final

from .base import StorageError, StorageFull

#: The database's file in the data dir (users know it as the gallery).
DB_FILE: Final = "gallery.sqlite3"
#: How much of ``gallery.sqlite3-shm`` is given its disk blocks up front (see DiskGuard):
#: 32 of SQLite's 32 KiB index regions, a write-ahead log of about 130,000 pages.
SHM_RESERVE: Final = 1 << 20
#: Opening refuses a disk with less free space: SQLite's first writes into a new -shm (before
#: it can be reserved) and the reservation itself must find room.
MIN_FREE_BYTES: Final = 2 * SHM_RESERVE
RESTORE_HINT: Final = "bring a backup back with `python -m facestream gallery restore BACKUP`"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


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


"""``facestream gallery``: the gallery file itself, for operators:

    facestream gallery check               integrity and foreign keys (read-only); exit 1
                                           on problems
    facestream gallery backup FILE         SQLite's online backup: safe while serving
    facestream gallery restore FILE        checks the backup, keeps the current file
    facestream gallery migrate --to URL    a copy into PostgreSQL (see pgmigrate.py)

A backup is the whole gallery file: people, samples with their face images, visits. Emails
are stored as HMACs under the server secret (``secret.key`` in the data dir unless
``storage.secret`` is set); keep that key with the backups, or email look-ups stop matching.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Final, TextIO

from ..config import Config
from ..db.base import StorageError
from ..db.disk import (
    DB_FILE,
    RESTORE_HINT,
    SQLITE_MAGIC,
    DiskGuard,
    check_data_dir,
    read_only,
    storage_error,
)
from ..gallery_types import GalleryError
from ..privacy import SECRET_FILE
from .common import Command, action, actions, add_shared, load_config, prog, require_gallery

#: Every SQLite connection to a WAL database holds a shared lock on this byte of the -shm
#: file while it is open (UNIX_SHM_DMS in SQLite's os_unix.c: (22 + 8) * 4 + 8).
SHM_DMS_BYTE: Final = 128


def problems(conn: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` and ``foreign_key_check`` find, one line each."""
    found: list[str] = []
    try:
        found += [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
        if not found:  # on a damaged file it reads the damage again, and fails
            for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
                found.append(f"{table} row {rowid} refers to a missing {parent} row")
    except sqlite3.DatabaseError as exc:  # too damaged for the checks to finish
        found.append(str(exc))
    return found


def summary(conn: sqlite3.Connection) -> str:
    """``N people, M samples, V visits``; GalleryError if it is not a facestream gallery.
    (A file of a version before 5, which the server upgrades on opening, calls its people
    ``identities``.)"""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    counts = []
    people = "identities" if "identities" in tables else "people"
    for table, shown in ((people, "people"), ("samples", "samples"), ("visits", "visits")):
        if table not in tables:
            raise GalleryError(f"it is not a facestream gallery (it has no {shown} table)")
        counts.append(f"{conn.execute(f'SELECT COUNT(*) FROM {table}').fetchone()[0]} {shown}")
    return ", ".join(counts)


def in_use(db: Path) -> bool:
    """Whether some process (a server, a ``faces`` command) has the gallery open: its
    connection holds a shared lock on the DMS byte of the -shm file."""
    if DiskGuard.holds(db):  # this process: its own locks never conflict with each other
        return True
    try:
        fd = os.open(f"{db}-shm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # SQLite removes it when the last connection closes
    except OSError as exc:
        raise GalleryError(f"cannot tell whether a facestream has {db} open ({db}-shm: "
                           f"{exc.strerror}): stop it, delete {db}-shm, and retry") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, SHM_DMS_BYTE)
    except OSError:
        return True
    finally:
        os.close(fd)  # this process has no connection to it: nothing else is released
    return False


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_check(config: Config, out: TextIO) -> int:
    db = config.data_path / DB_FILE
    try:
        with read_only(db) as conn:
            found = problems(conn)
            counts = summary(conn) if not found else ""
    except StorageError as exc:
        found = [str(exc)]
    except GalleryError as exc:
        found = [f"{db}: {exc}"]
    if found:
        for line in found:
            print(line, file=out)
        print(f"{len(found)} problem{'s' if len(found) > 1 else ''} in {db}: {RESTORE_HINT}",
              file=out)
        return 1
    print(f"ok: {counts}", file=out)
    return 0


def cmd_backup(config: Config, dest: Path, out: TextIO) -> int:
    """Copy the gallery to ``dest`` with SQLite's online backup (one read transaction: a
    consistent copy while the server writes), through a temporary file renamed into place."""
    db = config.data_path / DB_FILE
    dest = dest.absolute()
    if dest.is_dir():
        dest = dest / f"gallery-{time.strftime('%Y%m%d-%H%M%S')}.sqlite3"
    if dest.resolve() in {Path(f"{db}{suffix}").resolve() for suffix in ("", "-wal", "-shm")}:
        raise GalleryError(f"{dest} is the gallery itself: back it up to another file")
    try:
        # mkstemp: mode 0600, as the face images in it are biometric data.
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise GalleryError(f"cannot write a backup into {dest.parent} ({exc.strerror})") from None
    os.close(fd)
    try:
        with read_only(db) as src:
            copy = sqlite3.connect(tmp)
            try:
                src.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                counts = summary(copy)
            except sqlite3.Error as exc:
                # Writing the copy fails on its disk; reading fails on the gallery's.
                writing = (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_FULL,
                                                            sqlite3.SQLITE_IOERR)
                mapped = storage_error(dest if writing else db, exc)
                if mapped is None:
                    raise
                raise mapped from exc
            finally:
                copy.close()
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync(dest.parent)
    finally:
        for suffix in ("", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    print(f"wrote {dest}: {counts} ({dest.stat().st_size} bytes)", file=out)
    if not config.storage.secret and (config.data_path / SECRET_FILE).exists():
        print(f"keep {config.data_path / SECRET_FILE} with your backups: email look-ups "
              "need it", file=out)
    return 0


def cmd_restore(config: Config, source: Path, out: TextIO) -> int:
    """Put the backup ``source`` in place of the gallery: checked first (a copy beside the
    gallery, so the final rename is atomic), refused while a facestream has the gallery
    open, the current file kept as ``gallery.sqlite3.before-restore-<time>``."""
    db = config.data_path / DB_FILE
    if not source.is_file():
        raise GalleryError(f"there is no backup at {source}")
    with open(source, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise GalleryError(f"the backup {source} is not a SQLite database: restore "
                               "another backup")
    config.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_data_dir(config.data_path)
    fd, staged = tempfile.mkstemp(dir=config.data_path, prefix=".gallery-restore-",
                                  suffix=".tmp")
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        conn = sqlite3.connect(staged)
        try:
            found = problems(conn)
            counts = summary(conn) if not found else ""
        except GalleryError as exc:
            raise GalleryError(f"the backup {source} cannot be restored: {exc}") from None
        finally:
            conn.close()
        if found:
            more = f"; {len(found)} problems in all" if len(found) > 1 else ""
            raise GalleryError(f"the backup {source} is damaged ({found[0]}{more}): restore "
                               "another backup")
        if in_use(db):
            raise GalleryError(f"a running facestream (the server or a command) has {db} "
                               "open: stop it, then restore")
        kept = db.with_name(f"{DB_FILE}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
        wal = Path(f"{db}-wal")
        if db.exists():
            try:
                os.link(db, kept)
            except OSError:
                shutil.copy2(db, kept)
        if wal.exists():  # changes a crash left in the log belong to the kept file
            os.replace(wal, f"{kept}-wal")
        Path(f"{db}-shm").unlink(missing_ok=True)
        os.replace(staged, db)
        _fsync(config.data_path)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{staged}{suffix}").unlink(missing_ok=True)
    previous = f"the previous gallery is kept as {kept}" if kept.exists() else \
        "there was no gallery before"
    print(f"restored {source} ({counts}) into {db}; {previous}", file=out)
    if not config.storage.secret and not (config.data_path / SECRET_FILE).exists():
        print(f"copy the {SECRET_FILE} kept with the backup into {config.data_path} before "
              "starting, or email look-ups will not match", file=out)
    return 0


# -- the command ----------------------------------------------------------------------------

USES: Final = ("config", "data_dir")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("gallery"),
        description="Check, back up and restore the gallery file (DATA_DIR/gallery.sqlite3), "
        "or move it into PostgreSQL.",
    )
    add_shared(p, USES)
    sub = actions(p)
    action(sub, "gallery", "check", USES, help="SQLite's integrity and foreign-key checks, "
           "read-only; exit 1 on problems")
    backup = action(sub, "gallery", "backup", USES, help="copy the gallery to FILE (or into "
                    "a folder); safe while the server runs")
    backup.add_argument("file", type=Path)
    restore = action(sub, "gallery", "restore", USES, help="put the backup FILE in place of "
                     "the gallery (stop the server first); the current file is kept beside it")
    restore.add_argument("file", type=Path)
    migrate = action(sub, "gallery", "migrate", USES, help="copy the gallery, visits "
                     "included, into an empty PostgreSQL database (the file stays as it is)")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="postgresql://user@host:5432/database")
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args, model=False)
    if config.storage.url and args.action != "migrate":
        from ..db.postgres import where

        print(f"error: storage.url is set: the gallery is in PostgreSQL at "
              f"{where(config.storage.url)}; check, back up and restore it with PostgreSQL's "
              "tools (pg_dump, pg_restore)", file=sys.stderr)
        return 2
    if args.action == "restore":  # its own line says whether there was a gallery before
        return cmd_restore(config, args.file, sys.stdout)
    require_gallery(config)
    if args.action == "migrate":
        from ..pgmigrate import cmd_migrate

        return asyncio.run(cmd_migrate(config, args.to, sys.stdout, sys.stderr))
    if args.action == "check":
        return cmd_check(config, sys.stdout)
    return cmd_backup(config, args.file, sys.stdout)


COMMAND: Final = Command("gallery", USES, build_parser, run)

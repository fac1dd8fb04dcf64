"""A throwaway PostgreSQL cluster for tests: Debian's PostgreSQL 15 binaries, a temporary data
dir, a free 127.0.0.1 port, its unix socket in the data dir, trust auth on loopback.

initdb and the server refuse to run as root, so as root they run as the ``postgres`` user
(Debian's package makes it) or ``nobody``, owning the temporary dir. ``stop()`` and
``start()`` again keep the data, so a test can take the database away and bring it back.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest

BIN_DIRS: Final = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"),
                   Path("/usr/lib/postgresql/17/bin"))
PREFIX: Final = "facestream-pg-"
#: In each cluster's temporary dir: the pid of the test run that made it.
OWNER: Final = "owner.pid"
MISSING: Final = ("PostgreSQL is not installed: `apt-get install postgresql` (./install.sh "
                  "does it), or put its bin dir (initdb, pg_ctl) on PATH")


def _bin_dir() -> Path | None:
    for d in BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _reap_orphans(bin_dir: Path) -> None:
    """Stop and remove the clusters of test runs that were killed before their clean-up (a
    timeout's SIGTERM runs no fixture finalizer); a live run's clusters are left alone."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / OWNER).read_text())
            os.kill(owner, 0)
            continue  # its run is alive
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge (being made, or another user's)
        if (root / "data" / "postmaster.pid").exists():
            cmd = [str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(root / "data")]
            if os.geteuid() == 0:
                cmd = ["runuser", "-u", pwd.getpwuid(root.stat().st_uid).pw_name, "--", *cmd]
            subprocess.run(cmd, check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One cluster: ``url`` reaches its ``postgres`` database as the superuser ``postgres``."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.fail(MISSING, pytrace=False)
        self.bin = bin_dir
        _reap_orphans(bin_dir)
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / OWNER).write_text(str(os.getpid()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres" if _user_exists("postgres") else "nobody"
            os.chmod(self.root, 0o700)
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--no-sync", "-E", "UTF8", "--locale=C")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "full_page_writes = off\nsynchronous_commit = off\n")

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database ``name``; its URL."""
        psql = [str(self.bin / "psql"), "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c",
                f'CREATE DATABASE "{name}"']
        done = subprocess.run(psql, check=False, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name} failed: {done.stderr.strip()}")
        return self.url_for(name)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60,
                              cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n"
                               f"{log[-2000:]}")

    def start(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data), "-l",
                  str(self.log))

    def stop(self) -> None:
        """Stop now: open connections are cut, as when the database host goes away."""
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", "fast", "-D", str(self.data))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            try:
                self.stop()
            except RuntimeError:
                self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped and removed afterwards."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()

"""Accounts, roles, API tokens and sessions: who is asking, and who did what.

Two roles. A ``viewer`` watches; an ``admin`` may do everything. Which requests each may
make is declared at each route (``facestream/web/``) and enforced by ``web/access.py``,
which also reads the credentials off a request; nothing here speaks HTTP.

People log in to the dashboard with a name and a password (hashed with Argon2id by
argon2-cffi) and get a session (a cookie). Programs send a token; tokens are 256 random
bits, stored as SHA-256 (like sessions: a stolen database gives no usable credential). The
first start with no account creates ``admin`` with a random password and prints it once.
Login attempts are limited per client address and per user name. Every change made through
the API is written to an audit log with who made it.

The accounts live in the gallery database (tables ``users``, ``tokens``, ``sessions``,
``audit``), so ``python -m facestream users|tokens ...`` works beside a running server, which
sees a revoked token within ``CACHE_S``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from .db.base import Schema, StorageError
from .gallery_types import GalleryError, NotFound
from .limits import Window
from .limits import key as _key
from .storage import Gallery

ROLES: Final = ("viewer", "admin")
TOKEN_PREFIX: Final = "fst_"
#: A token or session check is remembered this long (a revoked token stops working then).
CACHE_S: Final = 5.0
#: Login attempts per client address and user name together, in LOGIN_WINDOW_S: an attacker
#: elsewhere cannot use them up for the real user.
LOGIN_FAILURES: Final = 5
LOGIN_WINDOW_S: Final = 60.0
#: Failed logins per client address, whatever the user names (guessing one password for
#: many users), in LOGIN_WINDOW_S.
ADDRESS_FAILURES: Final = 20
#: A user with this many failures from anywhere in USER_WINDOW_S is under attack: every
#: address that has failed for them is held back until the count drops below it. Addresses
#: that have not failed (the real user elsewhere) still get in with the right password.
USER_FAILURES: Final = 10
USER_WINDOW_S: Final = 900.0
#: Password checks (Argon2id: 64 MiB and a fraction of a core each) at once, and logins
#: waiting for one; more are answered 503 with Retry-After.
CHECKS_AT_ONCE: Final = 2
CHECKS_WAITING: Final = 32
#: The longest user name (``_user_name``) and password a login may send; longer ones are
#: refused before anything is checked or remembered.
MAX_USER_NAME: Final = 64
MAX_PASSWORD: Final = 1024
MIN_PASSWORD: Final = 8

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    password    TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    digest      TEXT NOT NULL UNIQUE,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    digest      TEXT PRIMARY KEY,
    "user"      TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    expires_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      INTEGER
);
"""
#: The accounts' tables, in the gallery's database (they go with it in a backup).
SCHEMA: Final = Schema("accounts", 1, tuple(t.strip() for t in _TABLES.split(";") if t.strip()))


class AuthError(GalleryError):
    """A refused account operation (the message says why)."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: ``kind`` user, token or anonymous (with authentication off)."""

    kind: str
    name: str
    role: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS: Final = Principal("anonymous", "(authentication off)", "admin")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class _LoginLimits:
    """Who may try a password now: per address and user together, per address, and a
    backoff for a user under attack that spares addresses which have not failed."""

    def __init__(self) -> None:
        self.pairs = Window(LOGIN_FAILURES, LOGIN_WINDOW_S)
        self.addresses = Window(ADDRESS_FAILURES, LOGIN_WINDOW_S)
        self.users = Window(USER_FAILURES, USER_WINDOW_S)
        #: Address-and-user pairs that failed within USER_WINDOW_S (the backoff's targets).
        self.failed = Window(1, USER_WINDOW_S)

    def reserve(self, client: str, name: str, now: float) -> tuple[bytes, bytes, bytes]:
        """Count this attempt now, before its password is checked; LoginRefused (with the
        seconds to wait) when it is over a limit."""
        pair, address, user = _key("pair", client, name), _key("ip", client), _key("user", name)
        wait = max(self.pairs.wait(pair, now), self.addresses.wait(address, now),
                   self.users.wait(user, now) if self.failed.count(pair, now) else 0.0)
        if wait > 0:
            raise LoginRefused("too many failed logins; try again later", wait)
        self.pairs.add(pair, now)
        self.addresses.add(address, now)
        return pair, address, user

    def succeeded(self, keys: tuple[bytes, bytes, bytes], when: float) -> None:
        pair, address, _ = keys
        self.pairs.clear(pair)
        self.addresses.discard(address, when)
        self.failed.clear(pair)

    def released(self, keys: tuple[bytes, bytes, bytes], when: float) -> None:
        """The attempt could not be checked (the database was away): it does not count."""
        pair, address, _ = keys
        self.pairs.discard(pair, when)
        self.addresses.discard(address, when)

    def failed_now(self, keys: tuple[bytes, bytes, bytes], now: float) -> None:
        pair, _, user = keys
        self.users.add(user, now)
        self.failed.add(pair, now)


class Auth:
    """Accounts and credentials, kept in ``gallery``'s database."""

    def __init__(self, gallery: Gallery, session_days: float = 7.0) -> None:
        from argon2 import PasswordHasher

        #: The gallery's database, where the accounts' own tables live.
        self.db = gallery.db
        self.session_s = session_days * 86400
        self._hasher = PasswordHasher()  # Argon2id, 64 MiB, 3 passes: argon2-cffi's defaults
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._limits = _LoginLimits()
        self._checks = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._waiting = 0

    async def ensure_schema(self) -> None:
        await self.db.apply([SCHEMA])

    # -- accounts ------------------------------------------------------------------------

    async def users(self) -> list[tuple[str, str, float]]:
        rows = await self.db.query("SELECT name, role, created_at FROM users ORDER BY name")
        return [(n, r, c) for n, r, c in rows]

    async def first_admin(self) -> str | None:
        """With no account at all, create ``admin`` with a random password; return it (to be
        shown once) or None when accounts exist."""
        if await self.db.query("SELECT 1 FROM users LIMIT 1"):
            return None
        password = secrets.token_urlsafe(12)
        await self.add_user("admin", "admin", password)
        return password

    async def add_user(self, name: str, role: str, password: str) -> None:
        name = _user_name(name)
        _check_role(role)
        _check_password(password)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        if await self.db.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise AuthError(f"user {name!r} exists already")
        await self.db.write([(("INSERT INTO users (name, role, password, created_at) "
                                    "VALUES (?, ?, ?, ?)"), (name, role, hashed, time.time()))])

    async def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        await self._existing(name)
        # A new password ends every session of that user.
        await self.db.write([
            ("UPDATE users SET password = ? WHERE name = ?", (hashed, name)),
            ('DELETE FROM sessions WHERE "user" = ?', (name,)),
        ])
        self._cache.clear()

    async def delete_user(self, name: str) -> None:
        await self._existing(name)
        admins = await self.db.query(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND name != ?", (name,))
        role = (await self.db.query("SELECT role FROM users WHERE name = ?", (name,)))[0][0]
        if role == "admin" and not admins[0][0]:
            raise AuthError(f"{name!r} is the last admin; add another admin first")
        await self.db.write([
            ('DELETE FROM sessions WHERE "user" = ?', (name,)),
            ("DELETE FROM users WHERE name = ?", (name,)),
        ])
        self._cache.clear()

    async def _existing(self, name: str) -> None:
        if not await self.db.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise NotFound(f"no user {name!r}")

    # -- tokens --------------------------------------------------------------------------

    async def create_token(self, role: str, name: str = "") -> tuple[str, str]:
        """A new API token: (its id, the token itself, which is shown only now)."""
        _check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        tid = secrets.token_hex(4)
        await self.db.write([(("INSERT INTO tokens (id, name, role, digest, created_at) "
                                    "VALUES (?, ?, ?, ?, ?)"),
                                   (tid, name or f"token {tid}", role, _digest(token),
                                    time.time()))])
        return tid, token

    async def tokens(self) -> list[tuple[str, str, str, float]]:
        rows = await self.db.query(
            "SELECT id, name, role, created_at FROM tokens ORDER BY created_at")
        return [(i, n, r, c) for i, n, r, c in rows]

    async def revoke(self, tid: str) -> None:
        if not await self.db.query("SELECT 1 FROM tokens WHERE id = ?", (tid,)):
            raise NotFound(f"no token {tid!r}")
        await self.db.write([("DELETE FROM tokens WHERE id = ?", (tid,))])
        self._cache.clear()

    # -- sessions ------------------------------------------------------------------------

    async def login(self, name: str, password: str, client: str) -> tuple[str, Principal]:
        """A new session for ``name`` if ``password`` is theirs. Raises LoginRefused (with
        the seconds to wait, when rate-limited or when too many checks are under way)."""
        if len(name) > MAX_USER_NAME or len(password) > MAX_PASSWORD:
            # No such account can exist: refused before anything is remembered or checked.
            raise LoginRefused("wrong user name or password", 0.0)
        if self._waiting >= CHECKS_WAITING:
            raise LoginRefused("too many logins are being checked; try again shortly", 1.0,
                               busy=True)
        now = time.monotonic()
        keys = self._limits.reserve(client, name, now)
        self._waiting += 1
        try:
            async with self._checks:
                rows = await self.db.query(
                    "SELECT role, password FROM users WHERE name = ?", (name,))
                if rows:
                    ok = await asyncio.to_thread(self._verify, rows[0][1], password)
                else:  # as slow as a real check, so timing does not say which names exist
                    ok = False
                    await asyncio.to_thread(self._verify, _DUMMY_HASH.get(self._hasher),
                                            password)
        except StorageError:  # not checked: it does not count (a dropped client's does)
            self._limits.released(keys, now)
            raise
        finally:
            self._waiting -= 1
        if not ok:
            self._limits.failed_now(keys, time.monotonic())
            raise LoginRefused("wrong user name or password", 0.0)
        self._limits.succeeded(keys, now)
        session = secrets.token_urlsafe(32)
        await self.db.write([
            ("DELETE FROM sessions WHERE expires_at < ?", (time.time(),)),
            ('INSERT INTO sessions (digest, "user", expires_at) VALUES (?, ?, ?)',
             (_digest(session), name, time.time() + self.session_s)),
        ])
        return session, Principal("user", name, rows[0][0])

    def _verify(self, hashed: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return bool(self._hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False

    async def logout(self, session: str) -> None:
        await self.db.write([("DELETE FROM sessions WHERE digest = ?",
                                   (_digest(session),))])
        self._cache.pop("s" + _digest(session), None)

    # -- who is asking -------------------------------------------------------------------

    async def principal(self, token: str | None, session: str | None) -> Principal | None:
        """Whose ``token`` (when one is given, whatever the session) or ``session`` this is;
        None for neither, or for one that is unknown, revoked or expired."""
        if token is not None:
            return await self._lookup("t", token)
        if session:
            return await self._lookup("s", session)
        return None

    async def _lookup(self, kind: str, secret: str) -> Principal | None:
        key = kind + _digest(secret)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        try:
            if kind == "t":
                rows = await self.db.query("SELECT id, role FROM tokens WHERE digest = ?",
                                                (key[1:],))
                found = Principal("token", rows[0][0], rows[0][1]) if rows else None
            else:
                rows = await self.db.query(
                    'SELECT s."user", u.role FROM sessions s JOIN users u ON u.name = s."user" '
                    "WHERE s.digest = ? AND s.expires_at > ?", (key[1:], time.time()))
                found = Principal("user", rows[0][0], rows[0][1]) if rows else None
        except StorageError:
            # A shared database away: whoever was let in a moment ago still is (nothing can
            # be revoked meanwhile: changes are refused), so viewers keep watching.
            if cached is not None:
                return cached[1]
            raise
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now, found)
        return found

    # -- audit ---------------------------------------------------------------------------

    async def audit(self, actor: str, action: str, status: int | None = None) -> None:
        await self.db.write([(("INSERT INTO audit (at, actor, action, status) VALUES "
                                    "(?, ?, ?, ?)"), (time.time(), actor, action, status))])

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.db.query(
            "SELECT at, actor, action, status FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": a, "actor": who, "action": what, "status": s} for a, who, what, s in rows]


class LoginRefused(Exception):
    """A login refused: wrong (``retry_after`` 0), rate-limited, or ``busy`` (too many
    checks under way; not the caller's fault)."""

    def __init__(self, message: str, retry_after: float, busy: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.busy = busy


class _DummyHash:
    """A hash to verify against for unknown user names (made once, lazily)."""

    def __init__(self) -> None:
        self._hash: str | None = None

    def get(self, hasher: Any) -> str:
        if self._hash is None:
            self._hash = hasher.hash(secrets.token_urlsafe(12))
        return self._hash


_DUMMY_HASH: Final = _DummyHash()


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters")


def _user_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AuthError("a user name is 1-64 letters, digits or . _ - @")
    return name

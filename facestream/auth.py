"""Accounts, roles, API tokens and sessions: who may do what, and who did what.

Two roles. A ``viewer`` watches: the stream, GET /hash, the websocket, the gallery and the
visit history, and may ask who is in a photo (POST /process-frame). An ``admin`` may do
everything, including every change to the gallery and looking people up by email.

People log in to the dashboard with a name and a password (hashed with Argon2id by
argon2-cffi) and get a session cookie (HttpOnly, SameSite=Strict, Secure over TLS). Programs
send ``Authorization: Bearer <token>``; tokens are 256 random bits, stored as SHA-256 (like
sessions: a stolen database gives no usable credential). The first start with no account
creates ``admin`` with a random password and prints it once. Login attempts are limited per
client address and per user name. Every change made through the API is written to an audit
log with who made it.

The accounts live in the gallery database (tables ``users``, ``tokens``, ``sessions``,
``audit``), so ``python -m facestream users|tokens ...`` works beside a running server, which
sees a revoked token within ``CACHE_S``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from .storage import Gallery, GalleryError, NotFound, StorageError

log = logging.getLogger(__name__)

ROLES: Final = ("viewer", "admin")
COOKIE: Final = "facestream_session"
TOKEN_PREFIX: Final = "fst_"
#: A token or session check is remembered this long (a revoked token stops working then).
CACHE_S: Final = 5.0
#: Failed logins allowed per client address, and per user name, in LOGIN_WINDOW_S.
LOGIN_FAILURES: Final = 5
LOGIN_WINDOW_S: Final = 60.0
MIN_PASSWORD: Final = 8

_SCHEMA: Final = """
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
#: Who made a request, for handlers (set by the access middleware).
PRINCIPAL: Final = web.RequestKey("principal", Principal)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class _Limiter:
    """Failed attempts per key in a sliding window; bounded to the most recent keys."""

    def __init__(self, limit: int, window: float, keys: int = 10_000) -> None:
        self.limit, self.window, self.keys = limit, window, keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and now - times[0] > self.window:
            times.popleft()
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def failed(self, key: str, now: float) -> None:
        times = self._failures.setdefault(key, deque(maxlen=self.limit))
        self._failures.move_to_end(key)
        times.append(now)
        while len(self._failures) > self.keys:
            self._failures.popitem(last=False)


class Auth:
    """Accounts and credentials, kept in ``gallery``'s database."""

    def __init__(self, gallery: Gallery, session_days: float = 7.0) -> None:
        from argon2 import PasswordHasher

        self.gallery = gallery
        self.session_s = session_days * 86400
        self._hasher = PasswordHasher()  # Argon2id, 64 MiB, 3 passes: argon2-cffi's defaults
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._limiter = _Limiter(LOGIN_FAILURES, LOGIN_WINDOW_S)

    async def ensure_schema(self) -> None:
        await self.gallery.write([(s.strip(), ()) for s in _SCHEMA.split(";") if s.strip()])

    # -- accounts ------------------------------------------------------------------------

    async def users(self) -> list[tuple[str, str, float]]:
        rows = await self.gallery.query("SELECT name, role, created_at FROM users ORDER BY name")
        return [(n, r, c) for n, r, c in rows]

    async def first_admin(self) -> str | None:
        """With no account at all, create ``admin`` with a random password; return it (to be
        shown once) or None when accounts exist."""
        if await self.gallery.query("SELECT 1 FROM users LIMIT 1"):
            return None
        password = secrets.token_urlsafe(12)
        await self.add_user("admin", "admin", password)
        return password

    async def add_user(self, name: str, role: str, password: str) -> None:
        name = _user_name(name)
        _check_role(role)
        _check_password(password)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        if await self.gallery.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise AuthError(f"user {name!r} exists already")
        await self.gallery.write([(("INSERT INTO users (name, role, password, created_at) "
                                    "VALUES (?, ?, ?, ?)"), (name, role, hashed, time.time()))])

    async def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        await self._existing(name)
        # A new password ends every session of that user.
        await self.gallery.write([
            ("UPDATE users SET password = ? WHERE name = ?", (hashed, name)),
            ('DELETE FROM sessions WHERE "user" = ?', (name,)),
        ])
        self._cache.clear()

    async def delete_user(self, name: str) -> None:
        await self._existing(name)
        admins = await self.gallery.query(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND name != ?", (name,))
        role = (await self.gallery.query("SELECT role FROM users WHERE name = ?", (name,)))[0][0]
        if role == "admin" and not admins[0][0]:
            raise AuthError(f"{name!r} is the last admin; add another admin first")
        await self.gallery.write([
            ('DELETE FROM sessions WHERE "user" = ?', (name,)),
            ("DELETE FROM users WHERE name = ?", (name,)),
        ])
        self._cache.clear()

    async def _existing(self, name: str) -> None:
        if not await self.gallery.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise NotFound(f"no user {name!r}")

    # -- tokens --------------------------------------------------------------------------

    async def create_token(self, role: str, name: str = "") -> tuple[str, str]:
        """A new API token: (its id, the token itself, which is shown only now)."""
        _check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        tid = secrets.token_hex(4)
        await self.gallery.write([(("INSERT INTO tokens (id, name, role, digest, created_at) "
                                    "VALUES (?, ?, ?, ?, ?)"),
                                   (tid, name or f"token {tid}", role, _digest(token),
                                    time.time()))])
        return tid, token

    async def tokens(self) -> list[tuple[str, str, str, float]]:
        rows = await self.gallery.query(
            "SELECT id, name, role, created_at FROM tokens ORDER BY created_at")
        return [(i, n, r, c) for i, n, r, c in rows]

    async def revoke(self, tid: str) -> None:
        if not await self.gallery.query("SELECT 1 FROM tokens WHERE id = ?", (tid,)):
            raise NotFound(f"no token {tid!r}")
        await self.gallery.write([("DELETE FROM tokens WHERE id = ?", (tid,))])
        self._cache.clear()

    # -- sessions ------------------------------------------------------------------------

    async def login(self, name: str, password: str, client: str) -> tuple[str, Principal]:
        """A new session for ``name`` if ``password`` is theirs. Raises LoginRefused (with
        the seconds to wait, when rate-limited)."""
        now = time.monotonic()
        wait = max(self._limiter.retry_after(f"ip:{client}", now),
                   self._limiter.retry_after(f"user:{name}", now))
        if wait > 0:
            raise LoginRefused("too many failed logins; try again later", wait)
        rows = await self.gallery.query("SELECT role, password FROM users WHERE name = ?",
                                        (name,))
        ok = False
        if rows:
            ok = await asyncio.to_thread(self._verify, rows[0][1], password)
        else:  # as slow as a real check, so timing does not say which names exist
            await asyncio.to_thread(self._verify, _DUMMY_HASH.get(self._hasher), password)
        if not ok:
            self._limiter.failed(f"ip:{client}", now)
            self._limiter.failed(f"user:{name}", now)
            raise LoginRefused("wrong user name or password", 0.0)
        session = secrets.token_urlsafe(32)
        await self.gallery.write([
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
        await self.gallery.write([("DELETE FROM sessions WHERE digest = ?",
                                   (_digest(session),))])
        self._cache.pop("s" + _digest(session), None)

    # -- who is asking -------------------------------------------------------------------

    async def principal(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return await self._lookup("t", header[7:].strip())
        session = request.cookies.get(COOKIE)
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
                rows = await self.gallery.query("SELECT id, role FROM tokens WHERE digest = ?",
                                                (key[1:],))
                found = Principal("token", rows[0][0], rows[0][1]) if rows else None
            else:
                rows = await self.gallery.query(
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
        await self.gallery.write([(("INSERT INTO audit (at, actor, action, status) VALUES "
                                    "(?, ?, ?, ?)"), (time.time(), actor, action, status))])

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.gallery.query(
            "SELECT at, actor, action, status FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": a, "actor": who, "action": what, "status": s} for a, who, what, s in rows]


class LoginRefused(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


# -- the HTTP side ------------------------------------------------------------------------

#: Reachable without logging in.
OPEN_ROUTES: Final = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"),
                      ("POST", "/logout")}
OPEN_PREFIXES: Final = ("/static/",)
#: What a viewer may send besides reading (GET/HEAD): asking who is in a photo.
VIEWER_WRITES: Final = {("POST", "/process-frame"), ("POST", "/process-frame/")}
SAFE_METHODS: Final = {"GET", "HEAD", "OPTIONS"}


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site: its Origin names
    another host, or Sec-Fetch-Site says cross-site. Programs send neither."""
    origin = request.headers.get("Origin")
    if origin is not None:
        host = origin.split("://", 1)[-1].rstrip("/")
        if origin == "null" or host.lower() != request.host.lower():
            return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") != "cross-site"


def needs_admin(request: web.Request) -> bool:
    method, path = request.method, request.path
    if method in SAFE_METHODS:
        return (path == "/faces" and "email" in request.query) or path == "/audit"
    return (method, path) not in VIEWER_WRITES


def access_middleware(
    auth: Callable[[], Auth], enabled: bool, metrics_open: bool
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuses cross-site writes and websockets, then requires a principal with the role the
    request needs (with authentication off everybody is an anonymous admin), then audits
    every change that succeeded, with who made it."""

    @web.middleware
    async def access(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        from .webutil import error

        unsafe = request.method not in SAFE_METHODS
        if (unsafe or request.path == "/ws") and not same_origin(request):
            return error(403, "cross-site request refused: it does not come from this "
                              "server's own page")
        if (request.method, request.path) in OPEN_ROUTES or \
                request.path.startswith(OPEN_PREFIXES) or \
                (metrics_open and request.path == "/metrics"):
            return await handler(request)
        checker = auth()
        who = await checker.principal(request) if enabled else ANONYMOUS
        if who is None:
            if request.method == "GET" and request.path == "/":
                raise web.HTTPFound("/login")
            return error(401, "log in first (POST /login), or send Authorization: Bearer "
                              "<token> (python -m facestream tokens create)")
        if needs_admin(request) and not who.admin:
            return error(403, f"this needs an admin; {who.label} is a {who.role}")
        request[PRINCIPAL] = who
        response = await handler(request)
        # A change is audited; asking who is in a photo changes nothing (and would cost a
        # database write per recognition query).
        if unsafe and response.status < 400 and (request.method, request.path) not in \
                VIEWER_WRITES:
            try:
                await checker.audit(who.label, f"{request.method} {request.path}",
                                    response.status)
            except StorageError as exc:  # the change is made: say so, and log the gap
                log.warning("audit entry for %s %s by %s not stored: %s", request.method,
                            request.path, who.label, exc)
        return response

    return access

"""Route tables in which every route says who may use it.

Each handler module keeps one table and declares each handler's routes with it, where the
handler is defined::

    routes = Routes()

    @routes.get("/faces", role=Role.VIEWER, admin_query=("email",))
    async def list_people(request: web.Request) -> web.Response: ...

``Routes.add_to`` puts a table's routes on an application and records each route's
``Access`` in the application's ``RouteAccess``; the access middleware (``web/access.py``)
reads the declaration of the route a request matched, never its path. ``RouteAccess.check``
refuses an application with a route that declares nothing (one added with
``app.router.add_*`` directly): forgetting to say who may use a route stops the server from
starting, where a table of paths elsewhere would have left the route open to every viewer.
(Frigate puts ``Depends(require_role([...]))`` on each route, Home Assistant
``@require_admin`` on each handler: the same idea.)
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from typing import Final, TypeVar

from aiohttp import web

from ..config import AuthConfig

#: Methods that only read; a change (any other method) is audited unless declared otherwise.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


class Role(enum.Enum):
    """Who may use a route."""

    #: Anybody, without logging in.
    OPEN = "open"
    #: Any account or token (a viewer or an admin).
    VIEWER = "viewer"
    #: An admin account or token.
    ADMIN = "admin"


@dataclass(frozen=True)
class Access:
    """A route's declaration: who may use it, and what the access middleware does around it."""

    role: Role
    #: Query parameters that make a request admin-only (GET /faces?email=: who has this
    #: address is not a viewer's to ask). A rule in the declaration rather than a check in
    #: the handler, so that the route says all of who may use it, the refusal is the
    #: middleware's one 403 before the handler runs, and a test can read and probe it.
    admin_query: tuple[str, ...] = ()
    #: Open to everybody when this says so of the [auth] config (GET /metrics with
    #: auth.metrics_open, for a scraper).
    open_if: Callable[[AuthConfig], bool] | None = None
    #: A request that succeeds is written to the audit log with who made it.
    audited: bool = False
    #: Open, but told who is asking when the caller did log in (GET /healthz says more).
    identify: bool = False
    #: Where a caller without credentials is redirected, instead of answered 401.
    strangers_to: str | None = None
    #: Also takes a token as the password of HTTP Basic authentication (any user name), and
    #: answers a caller without credentials with a Basic challenge: for players that can
    #: only put credentials in a URL (VLC, FFmpeg, Home Assistant's cameras). Only on routes
    #: that read (a browser sends Basic credentials it was given to every request to the
    #: server, cross-site ones too).
    basic_auth: bool = False

    def __post_init__(self) -> None:
        if self.role is Role.OPEN and (self.audited or self.strangers_to):
            raise ValueError("an open route has nobody to audit or to redirect")
        if self.identify and self.role is not Role.OPEN:
            raise ValueError("identify is for open routes; the others always know who asks")
        if self.basic_auth and self.role is not Role.VIEWER:
            raise ValueError("basic_auth is for routes that viewers read")

    def role_for(self, query: Container[str], auth: AuthConfig) -> Role:
        """The role a request with these query parameters needs, under this config."""
        if any(key in query for key in self.admin_query):
            return Role.ADMIN
        if self.open_if is not None and self.open_if(auth):
            return Role.OPEN
        return self.role


#: What a request that matches no route (404, 405) needs: the same as a route would, a
#: login to read and an admin to change, so that a stranger learns nothing of what exists.
_UNMATCHED_READ: Final = Access(Role.VIEWER)
_UNMATCHED_CHANGE: Final = Access(Role.ADMIN)


class UndeclaredRoute(RuntimeError):
    """An application has a route that does not say who may use it."""


@dataclass(frozen=True)
class _Entry:
    method: str
    path: str
    access: Access
    handler: Handler | None = None
    directory: str | None = None  # a static route: the folder served under ``path``
    name: str | None = None


class Routes:
    """One handler module's routes, each with its ``Access``."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def get(self, path: str, *, role: Role, **rules: object) -> Callable[[H], H]:
        """A GET route (HEAD too, with the same declaration, as aiohttp's ``add_get``)."""
        return self._route("GET", path, role, rules)

    def post(self, path: str, *, role: Role, **rules: object) -> Callable[[H], H]:
        return self._route("POST", path, role, rules)

    def patch(self, path: str, *, role: Role, **rules: object) -> Callable[[H], H]:
        return self._route("PATCH", path, role, rules)

    def delete(self, path: str, *, role: Role, **rules: object) -> Callable[[H], H]:
        return self._route("DELETE", path, role, rules)

    def static(self, prefix: str, directory: str, *, role: Role, name: str) -> None:
        """The files of ``directory`` under ``prefix`` (GET and HEAD)."""
        self._entries.append(_Entry("GET", prefix, Access(role), directory=directory,
                                    name=name))

    def _route(self, method: str, path: str, role: Role, rules: dict[str, object]
               ) -> Callable[[H], H]:
        rules.setdefault("audited", method not in SAFE_METHODS and role is not Role.OPEN)
        access = Access(role, **rules)  # type: ignore[arg-type]

        def declare(handler: H) -> H:
            self._entries.append(_Entry(method, path, access, handler))
            return handler

        return declare

    def add_to(self, app: web.Application, declared: RouteAccess) -> None:
        """Put these routes on ``app``, each recorded with its declaration in ``declared``."""
        for entry in self._entries:
            if entry.directory is not None:
                resource: web.AbstractResource = app.router.add_static(
                    entry.path, entry.directory, name=entry.name)
                for route in resource:
                    declared.declare(route, entry.access)
                continue
            assert entry.handler is not None
            plain = app.router.add_resource(entry.path, name=entry.name)
            for method in ("HEAD", "GET") if entry.method == "GET" else (entry.method,):
                declared.declare(plain.add_route(method, entry.handler), entry.access)


class RouteAccess:
    """Each route of one application with its declaration (``appkeys.ROUTE_ACCESS``)."""

    def __init__(self) -> None:
        self._by_route: dict[web.AbstractRoute, Access] = {}

    def declare(self, route: web.AbstractRoute, access: Access) -> None:
        self._by_route[route] = access

    def get(self, route: web.AbstractRoute) -> Access | None:
        return self._by_route.get(route)

    def of(self, request: web.Request) -> Access:
        """The declaration of the route ``request`` matched, or what a request that matched
        none needs."""
        access = self._by_route.get(request.match_info.route)
        if access is not None:
            return access
        if request.match_info.http_exception is None:  # matched, yet undeclared: refuse
            raise UndeclaredRoute(f"{request.method} {request.path} has no declaration")
        return _UNMATCHED_READ if request.method in SAFE_METHODS else _UNMATCHED_CHANGE

    def check(self, app: web.Application) -> None:
        """Raise ``UndeclaredRoute`` naming every route of ``app`` that declares nothing."""
        missing = [f"{route.method} {route.resource.canonical if route.resource else '?'}"
                   for route in app.router.routes() if route not in self._by_route]
        if missing:
            raise UndeclaredRoute(
                f"{', '.join(missing)}: a route must say who may use it; declare it in a "
                "route table (facestream/web/routes.py), e.g. @routes.get(path, "
                "role=Role.VIEWER), instead of app.router.add_*")

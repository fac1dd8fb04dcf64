"""Who may make a request: the access middleware, the Host and Origin checks, and the
credentials a request carries (a session cookie or ``Authorization: Bearer <token>``; on the
few routes that declare ``basic_auth``, also a token as a Basic password).

The middleware knows no path: what a request needs comes from the declaration of the route
it matched (``web/routes.py``: ``Role.OPEN``, ``VIEWER`` or ``ADMIN``, and the few rules a
route may add). A request that matches no route (404, 405) needs a login to read and an
admin to change, as a route would, so a stranger learns nothing of what exists.

The session cookie is HttpOnly, SameSite=Strict and Secure over TLS (``web/accounts.py``
sets it); tokens come from ``python -m facestream tokens create``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ..accounts import ANONYMOUS, Auth, Principal
from ..appkeys import ROUTE_ACCESS
from ..config import AuthConfig, ServerConfig
from ..db.base import StorageError
from ..privacy import is_ip_address
from .http import error, refuse_unread, shown
from .routes import SAFE_METHODS, Role

log = logging.getLogger(__name__)

COOKIE: Final = "facestream_session"
#: Who made a request, for handlers (set by the access middleware).
PRINCIPAL: Final = web.RequestKey("principal", Principal)


async def principal(auth: Auth, request: web.Request, basic: bool = False
                    ) -> Principal | None:
    """Who sent ``request``: its bearer token if it has one (with ``basic``, also a token
    given as the password of HTTP Basic authentication), else its session cookie."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if token is None and basic and header.lower().startswith("basic "):
        token = _basic_password(header[6:].strip())
    return await auth.principal(token, request.cookies.get(COOKIE))


def _basic_password(credentials: str) -> str | None:
    """The password of Basic credentials (base64 of ``user:password``), or None."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


#: What Sec-Fetch-Site says of a request the server's own page (or a person typing the
#: address) made; "same-site" is another port or another name of the same site: not ours.
_OWN_FETCH_SITES: Final = {"same-origin", "none"}


def is_websocket(request: web.Request) -> bool:
    """A websocket handshake, on whatever path."""
    return "websocket" in request.headers.get("Upgrade", "").lower()


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another origin: its Origin names
    another host or port (or is "null"), or Sec-Fetch-Site says it is not this origin's own.
    Programs send neither. Compared with the Host header, which ``host_allowed`` vouches for."""
    origin = request.headers.get("Origin")
    if origin is not None:
        host = origin.split("://", 1)[-1].rstrip("/")
        if origin == "null" or host.lower() != request.host.lower():
            return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in _OWN_FETCH_SITES


def host_name(header: str) -> str:
    """The name in a Host header: no port, lower case, no trailing dot."""
    if header.startswith("["):
        name = header[:header.find("]") + 1] if "]" in header else header
    else:
        name, _, port = header.rpartition(":")
        if not name or not port.isdigit():
            name = header
    return name.lower().rstrip(".")


def host_allowed(header: str | None, allowed: tuple[str, ...], enforce: bool) -> bool:
    """Whether a request's Host is one of this server's names. DNS rebinding gives a page
    of the attacker's own name the server's address: its requests carry that name. So when
    ``enforce`` (accounts off, or ``server.allowed_hosts`` set) only loopback names
    (``localhost`` and names under it), IP addresses (which cannot be rebound) and the
    ``allowed`` names are served. No Host at all is not a browser, and is served."""
    if not enforce or header is None:
        return True
    name = host_name(header)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if is_ip_address(name):
        return True
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if name == entry or (entry.startswith(".") and (name == entry[1:]
                                                        or name.endswith(entry))):
            return True
    return False


def access_middleware(
    auth: Callable[[], Auth], server: ServerConfig, config: AuthConfig
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuses requests for a Host that is not this server's (accounts off, or
    ``server.allowed_hosts`` given), cross-origin changes and websockets (on every path),
    then requires a principal with the role that the matched route declares (with
    authentication off everybody is an anonymous admin), then audits every change that
    succeeded on a route that declares it audited, with who made it."""
    enabled = config.enabled
    enforce_host = not enabled or bool(server.allowed_hosts)

    @web.middleware
    async def access(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not host_allowed(host, server.allowed_hosts, enforce_host):
            return refuse_unread(request, error(
                403, f"this server does not answer to the name {shown(host_name(host or ''))}; "
                     "its own names are localhost, its IP addresses and server.allowed_hosts"))
        unsafe = request.method not in SAFE_METHODS
        if (unsafe or is_websocket(request)) and not same_origin(request):
            return refuse_unread(request, error(
                403, "cross-site request refused: it does not come from this server's own "
                     "page"))
        declared = request.app[ROUTE_ACCESS].of(request)
        role = declared.role_for(request.query, config)
        checker = auth()
        if role is Role.OPEN:
            if declared.identify:  # says more to those who may know more
                known = await _quietly(checker, request) if enabled else ANONYMOUS
                if known is not None:
                    request[PRINCIPAL] = known
            return await handler(request)
        basic = declared.basic_auth and not unsafe
        who = await principal(checker, request, basic) if enabled else ANONYMOUS
        if who is None:
            if declared.strangers_to is not None:
                raise web.HTTPFound(declared.strangers_to)
            refusal = error(
                401, "log in first (POST /login), or send Authorization: Bearer <token> "
                     "(python -m facestream tokens create)")
            if basic:  # a player asks again, with the credentials of its URL
                refusal.headers["WWW-Authenticate"] = 'Basic realm="facestream", charset="UTF-8"'
            return refuse_unread(request, refusal)
        if role is Role.ADMIN and not who.admin:
            return refuse_unread(request, error(
                403, f"this needs an admin; {who.label} is a {who.role}"))
        request[PRINCIPAL] = who
        response = await handler(request)
        if declared.audited and response.status < 400:
            try:
                await checker.audit(who.label, f"{request.method} {request.path}",
                                    response.status)
            except StorageError as exc:  # the change is made: say so, and log the gap
                log.warning("audit entry for %s %s by %s not stored: %s", request.method,
                            request.path, who.label, exc)
        return response

    return access


async def _quietly(auth: Auth, request: web.Request) -> Principal | None:
    """Who is asking, or None, also when the database cannot say (a health check must
    answer whatever the database does)."""
    try:
        return await principal(auth, request)
    except StorageError:
        return None

"""Logging in and out, who am I, and the audit log of changes."""

from __future__ import annotations

from aiohttp import web

from ..accounts import LoginRefused
from ..appkeys import AUTH, CONFIG
from .access import COOKIE, PRINCIPAL
from .http import error, json_body, retry_later
from .routes import Role, Routes

routes = Routes()


@routes.post("/login", role=Role.OPEN)
async def login(request: web.Request) -> web.Response:
    """``{"username", "password"}`` -> a session cookie (HttpOnly, SameSite=Strict, Secure
    over TLS) and ``{"user", "role"}``; 401 wrong, 429 too many failures (Retry-After)."""
    body = await json_body(request, '{"username": ..., "password": ...}')
    name, password = body.get("username"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return error(400, 'send {"username": ..., "password": ...}')
    if not request.app[CONFIG].auth.enabled:
        return error(400, "authentication is off (auth.enabled = false): nothing to log in to")
    client = request.remote or "?"
    try:
        session, who = await request.app[AUTH].login(name, password, client)
    except LoginRefused as exc:
        if exc.retry_after > 0:
            return retry_later(503 if exc.busy else 429, str(exc), exc.retry_after)
        return error(401, str(exc))
    resp = web.json_response({"user": who.name, "role": who.role})
    resp.set_cookie(COOKIE, session, httponly=True, samesite="Strict",
                    secure=request.secure, path="/",
                    max_age=int(request.app[CONFIG].auth.session_days * 86400))
    await request.app[AUTH].audit(who.label, "login", 200)
    return resp


@routes.post("/logout", role=Role.OPEN)
async def logout(request: web.Request) -> web.Response:
    session = request.cookies.get(COOKIE)
    if session:
        await request.app[AUTH].logout(session)
    resp = web.json_response({"logged_out": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


@routes.get("/me", role=Role.VIEWER)
async def me(request: web.Request) -> web.Response:
    who = request[PRINCIPAL]
    return web.json_response({"user": who.name, "kind": who.kind, "role": who.role,
                              "auth": request.app[CONFIG].auth.enabled})


@routes.get("/audit", role=Role.ADMIN)
async def audit_log(request: web.Request) -> web.Response:
    """The latest changes made through the API (or by logins), newest first."""
    return web.json_response({"audit": await request.app[AUTH].audit_log()})

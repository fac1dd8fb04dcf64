"""Every route says who may use it, and the access middleware holds each route to what it
says: a walk over every route of the app as a stranger, a viewer and an admin; the roles the
routes declare; and an app with a route that declares nothing, which refuses to start."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from facestream import server
from facestream.appkeys import AUTH, CONFIG, ROUTE_ACCESS
from facestream.config import AuthConfig, Config
from facestream.web.routes import SAFE_METHODS, Access, Role, UndeclaredRoute

from .support import UNAUTHORIZED

Client = TestClient[Any, Any]

#: A plausible value for each path parameter. A route with a parameter not named here
#: fails the walk until it is added.
PATH_VALUES = {
    "hash": "ab" * 32,
    "sample": "1",
    "camera": "camera",  # make_config's camera
    "id": "1",
    "which": "crop",
}
#: A file the static route serves.
STATIC_FILE = "style.css"


def with_accounts(cfg: Config, **auth: Any) -> Config:
    return dataclasses.replace(cfg, auth=AuthConfig(enabled=True, **auth))


def url_of(route: web.AbstractRoute) -> str:
    resource = route.resource
    assert resource is not None
    if isinstance(resource, web.StaticResource):
        return f"{resource.canonical}/{STATIC_FILE}"

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PATH_VALUES, f"{route.method} {resource.canonical}: add a value " \
                                    f"for {{{name}}} to PATH_VALUES"
        return PATH_VALUES[name]

    return re.sub(r"\{(\w+)\}", value, resource.canonical)


def allowed(role: Role, caller: str) -> bool:
    return role is Role.OPEN or caller == "admin" or (caller == "viewer"
                                                       and role is Role.VIEWER)


def expected(declared: Access, role: Role, caller: str, status: int, location: str | None
             ) -> bool:
    """Whether ``status`` is what ``caller`` should get from a route that needs ``role``."""
    if allowed(role, caller):
        return status not in (401, 403)
    if caller == "nobody":
        if declared.strangers_to is not None:
            return status == 302 and location == declared.strangers_to
        return status == 401
    return status == 403  # a viewer on an admin's route


@pytest.fixture(params=[False, True], ids=["metrics-closed", "metrics-open"])
async def client(request: pytest.FixtureRequest, app_client: Any,
                 config_factory: Callable[..., Config]) -> Client:
    """The server without a camera, accounts on; GET /metrics open or not."""
    return await app_client(with_accounts(config_factory(), metrics_open=request.param),
                            live=False)


async def test_every_route_answers_each_caller_as_it_declares(client: Client) -> None:
    app = client.server.app
    _, viewer = await app[AUTH].create_token("viewer", "walking viewer")
    _, admin = await app[AUTH].create_token("admin", "walking admin")
    callers = {"nobody": {}, "viewer": {"Authorization": f"Bearer {viewer}"},
               "admin": {"Authorization": f"Bearer {admin}"}}
    routes = list(app.router.routes())
    # One route per method and path (a second would never be reached), and each role used.
    assert len({(r.method, r.resource.canonical if r.resource else "") for r in routes}) \
        == len(routes)
    assert {app[ROUTE_ACCESS].get(r).role for r in routes} == set(Role)  # type: ignore[union-attr]
    wrong: list[str] = []
    for route in routes:
        declared = app[ROUTE_ACCESS].get(route)
        assert declared is not None, route
        url = url_of(route)
        # Each query that changes the role (GET /faces?email=), and none.
        for query in [{}, *({key: "someone@example.org"} for key in declared.admin_query)]:
            role = declared.role_for(query, app[CONFIG].auth)
            for caller, headers in callers.items():
                resp = await client.request(route.method, url, params=query, headers=headers,
                                            allow_redirects=False)
                status, location = resp.status, resp.headers.get("Location")
                # A stranger refused is told how to get in.
                refusal = await resp.json() if status == 401 and route.method != "HEAD" \
                    else UNAUTHORIZED
                resp.close()  # a stream would never end
                if not expected(declared, role, caller, status, location):
                    wrong.append(f"{caller} {route.method} {url} {query or ''}: {status} "
                                 f"(declared {role.name})")
                elif refusal != UNAUTHORIZED:
                    wrong.append(f"{caller} {route.method} {url} {query or ''}: {refusal}")
    assert wrong == []
    if app[CONFIG].auth.metrics_open:  # a stranger is answered the metrics themselves
        resp = await client.get("/metrics")
        assert resp.status == 200 and "facestream_frames_captured_total 0.0" in await resp.text()


def test_the_routes_declare_the_roles_the_api_documents(
        config_factory: Callable[..., Config]) -> None:
    """Open: the health check, logging in and out, the pages' files (and the login page).
    A viewer may change nothing but ask who is in a photo (not audited); an admin alone
    reads the audit log and looks people up by email; every other change is audited."""
    app = server.create_app(with_accounts(config_factory()), live=False)  # not started
    declared: dict[tuple[str, str], Access] = {}
    for route in app.router.routes():
        access = app[ROUTE_ACCESS].get(route)
        assert access is not None and route.resource is not None
        declared[route.method, route.resource.canonical] = access

    def routes(rule: Callable[[str, Access], bool]) -> set[tuple[str, str]]:
        return {key for key, access in declared.items() if rule(key[0], access)}

    assert routes(lambda _, a: a.role is Role.OPEN) == {
        ("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/login"), ("HEAD", "/login"),
        ("POST", "/login"), ("POST", "/logout"), ("GET", "/static"), ("HEAD", "/static")}
    viewer_changes = {("POST", "/process-frame"), ("POST", "/process-frame/")}
    assert routes(lambda m, a: m not in SAFE_METHODS and a.role is Role.VIEWER) \
        == viewer_changes
    assert routes(lambda m, a: m in SAFE_METHODS and a.role is Role.ADMIN) \
        == {("GET", "/audit"), ("HEAD", "/audit")}
    assert routes(lambda _, a: bool(a.admin_query)) == {("GET", "/faces"), ("HEAD", "/faces")}
    assert declared["GET", "/faces"].admin_query == ("email",)
    assert routes(lambda _, a: a.open_if is not None) == {("GET", "/metrics"),
                                                          ("HEAD", "/metrics")}
    assert routes(lambda _, a: a.audited) == routes(
        lambda m, a: m not in SAFE_METHODS and a.role is Role.ADMIN)
    assert routes(lambda m, _: m not in SAFE_METHODS) == routes(
        lambda _, a: a.audited) | viewer_changes | {("POST", "/login"), ("POST", "/logout")}


async def _stray(request: web.Request) -> web.Response:
    return web.json_response({"reached": True})


def test_a_route_that_declares_nothing_stops_create_app(
        monkeypatch: pytest.MonkeyPatch, config_factory: Callable[..., Config]) -> None:
    declared_routes = server.setup_routes

    def with_a_stray_route(app: web.Application) -> None:
        declared_routes(app)
        app.router.add_post("/stray", _stray)  # past the route tables: says nothing

    monkeypatch.setattr(server, "setup_routes", with_a_stray_route)
    with pytest.raises(UndeclaredRoute, match=r"^POST /stray: a route must say who may "
                                              r"use it; declare it in a route table"):
        server.create_app(config_factory(), live=False)


async def test_a_route_added_after_create_app_stops_the_start(
        config_factory: Callable[..., Config]) -> None:
    app = server.create_app(config_factory(), live=False)  # its own pool: never started
    app.router.add_get("/stray", _stray)
    runner = web.AppRunner(app)
    with pytest.raises(UndeclaredRoute, match=r"^HEAD /stray, GET /stray: a route must"):
        await runner.setup()

"""Accounts, roles, tokens, sessions, cross-site refusals and the audit log, on the real app
(no camera) with authentication on, as it is by default."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from facestream.appkeys import AUTH, CONFIG, GALLERY
from facestream.auth import LOGIN_FAILURES
from facestream.config import AuthConfig, Config, ConfigError, ServerConfig, from_mapping
from facestream.server import create_app

from .conftest import BIDEN, OBAMA, PG_SECRET, sqlite_only, upload

Client = TestClient[Any, Any]
ADMIN_PASSWORD = "correct horse battery"
VIEWER_PASSWORD = "viewer staple 42"


def with_auth(cfg: Config, **auth: Any) -> Config:
    return dataclasses.replace(cfg, auth=AuthConfig(enabled=True, **auth))


@pytest.fixture
async def client(aiohttp_client: Any, config_factory: Callable[..., Config],
                 storage_url: str) -> Client:
    """The server without a camera, its accounts in SQLite or in PostgreSQL."""
    c = await aiohttp_client(create_app(with_auth(config_factory(storage_url=storage_url)),
                                        live=False))
    auth = c.server.app[AUTH]
    await auth.set_password("admin", ADMIN_PASSWORD)  # the first start made one; choose it
    await auth.add_user("vera", "viewer", VIEWER_PASSWORD)
    return c


async def log_in(client: Client, user: str, password: str) -> Any:
    return await client.post("/login", json={"username": user, "password": password})


UNAUTHORIZED = {"error": "log in first (POST /login), or send Authorization: Bearer <token> "
                         "(python -m facestream tokens create)"}


@sqlite_only
async def test_nothing_but_health_and_login_without_credentials(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/login")).status == 200
    assert (await client.get("/static/login.js")).status == 200
    for method, path in (("GET", "/hash"), ("GET", "/faces"), ("GET", "/visits"),
                         ("GET", "/metrics"), ("GET", "/streaming"), ("GET", "/events"),
                         ("POST", "/process-frame"), ("DELETE", f"/faces/{'0' * 64}")):
        resp = await client.request(method, path)
        assert (resp.status, await resp.json()) == (401, UNAUTHORIZED), (method, path)
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/login")
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"))
    assert resp.status == 401
    assert client.server.app[GALLERY].list() == []


async def test_first_start_creates_one_admin_and_prints_its_password_once(
    aiohttp_client: Any, config_factory: Callable[..., Config],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = with_auth(config_factory())
    first = await aiohttp_client(create_app(cfg, live=False))
    printed = capsys.readouterr().err
    match = re.search(r"user 'admin', password (\S+)", printed)
    assert match is not None
    resp = await log_in(first, "admin", match.group(1))
    assert (resp.status, await resp.json()) == (200, {"user": "admin", "role": "admin"})
    await first.close()
    again = await aiohttp_client(create_app(cfg, live=False))  # same data dir
    assert "password" not in capsys.readouterr().err
    assert [u[:2] for u in await again.server.app[AUTH].users()] == [("admin", "admin")]


async def test_login_sets_a_strict_http_only_session_cookie(client: Client) -> None:
    resp = await log_in(client, "vera", VIEWER_PASSWORD)
    assert (resp.status, await resp.json()) == (200, {"user": "vera", "role": "viewer"})
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("facestream_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
    me = await (await client.get("/me")).json()
    assert me == {"user": "vera", "kind": "user", "role": "viewer", "auth": True}
    await client.post("/logout")
    assert (await client.get("/me")).status == 401


async def test_a_viewer_watches_and_an_admin_changes(client: Client) -> None:
    await log_in(client, "vera", VIEWER_PASSWORD)
    for path in ("/hash", "/faces", "/visits", "/unknowns", "/events", "/metrics"):
        assert (await client.get(path)).status == 200, path
    resp = await client.post("/process-frame", data=upload("frame", OBAMA))
    assert resp.status == 200  # asking who is in a photo changes nothing
    refused = {"error": "this needs an admin; user vera is a viewer"}
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"))
    assert (resp.status, await resp.json()) == (403, refused)
    resp = await client.get("/faces?email=someone@example.org")  # who has this email: admin
    assert (resp.status, await resp.json()) == (403, refused)
    assert (await (await client.get("/faces")).json())["faces"] == []
    await log_in(client, "admin", ADMIN_PASSWORD)
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"))
    assert resp.status == 201
    face = (await resp.json())["hash"]
    resp = await client.patch(f"/faces/{face}", json={"name": "Barack Obama"})
    assert resp.status == 200
    audit = (await (await client.get("/audit")).json())["audit"]
    assert [(a["actor"], a["action"], a["status"]) for a in audit[:3]] == [
        ("user admin", f"PATCH /faces/{face}", 200),
        ("user admin", "POST /faces", 201),
        ("user admin", "login", 200),
    ]


async def test_tokens_from_the_command_line_work_and_can_be_revoked(
    client: Client, tmp_path: Path, storage_url: str
) -> None:
    data_dir = client.server.app[CONFIG].storage.data_dir
    config = tmp_path / "config.toml"  # the server's database, for the command line too
    config.write_text(f'[storage]\nurl = "{storage_url}"\nsecret = "{PG_SECRET}"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "facestream", "tokens", "--config",
                               str(config), "--data-dir", data_dir, *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              cwd=tmp_path)

    made = cli("create", "--role", "admin", "--name", "door script")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"fst_[A-Za-z0-9_-]{43}", token)
    listed = cli("list").stdout.split()
    tid = listed[0]
    assert listed[1] == "admin" and listed[-2:] == ["door", "script"]
    bearer = {"Authorization": f"Bearer {token}"}
    resp = await client.post("/faces", data=upload("image", BIDEN, name="Joe"), headers=bearer)
    assert resp.status == 201
    assert (await client.get("/hash", headers={"Authorization": "Bearer fst_wrong"})).status \
        == 401
    assert cli("revoke", tid).returncode == 0
    client.server.app[AUTH]._cache.clear()  # what CACHE_S seconds would do
    assert (await client.get("/hash", headers=bearer)).status == 401
    # The token is stored only as a digest.
    if storage_url:
        conn = await asyncpg.connect(storage_url)
        try:
            assert token not in repr(await conn.fetch("SELECT * FROM tokens"))
            assert await conn.fetchval("SELECT COUNT(*) FROM tokens") == 0  # revoked
        finally:
            await conn.close()
    else:
        db = (tmp_path / "data" / "gallery.sqlite3").read_bytes()
        assert token.encode() not in db


@sqlite_only
async def test_failed_logins_are_rate_limited(client: Client) -> None:
    for _ in range(LOGIN_FAILURES):
        resp = await log_in(client, "admin", "not the password")
        assert (resp.status, await resp.json()) == (401, {"error":
                                                          "wrong user name or password"})
    resp = await log_in(client, "admin", ADMIN_PASSWORD)  # right, but too late
    body = await resp.json()
    assert resp.status == 429 and body["error"] == "too many failed logins; try again later"
    assert 55 <= int(resp.headers["Retry-After"]) <= 60
    # Another name from the same address is limited too (per address as well as per name).
    assert (await log_in(client, "vera", VIEWER_PASSWORD)).status == 429


@sqlite_only
async def test_cross_site_writes_and_websockets_are_refused(client: Client) -> None:
    await log_in(client, "admin", ADMIN_PASSWORD)
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"))
    face = (await resp.json())["hash"]
    refused = {"error": "cross-site request refused: it does not come from this server's own "
                        "page"}
    evil = {"Origin": "http://evil.example"}
    for method, path, kwargs in (
            ("DELETE", f"/faces/{face}", {}),
            ("PATCH", f"/faces/{face}", {"json": {"name": "Mallory"}}),
            ("POST", "/faces", {"data": upload("image", BIDEN, name="Joe")}),
    ):
        resp = await client.request(method, path, headers=evil, **kwargs)
        assert (resp.status, await resp.json()) == (403, refused), (method, path)
    resp = await client.delete(f"/faces/{face}", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403
    # A form or text/plain body (which another site can send without asking) is not JSON.
    resp = await client.patch(f"/faces/{face}", data='{"name": "Mallory"}',
                              headers={"Content-Type": "text/plain"})
    assert (resp.status, await resp.json()) == (
        415, {"error": 'send Content-Type: application/json with {"name": "..."}'})
    with pytest.raises(Exception) as exc:
        await client.ws_connect("/ws", headers=evil)
    assert "403" in str(exc.value)
    own = f"http://{client.host}:{client.port}"
    ws = await client.ws_connect("/ws", headers={"Origin": own})
    assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    await ws.close()
    faces = (await (await client.get("/faces")).json())["faces"]
    assert [(f["hash"], f["name"]) for f in faces] == [(face, "Barack")]


def test_authentication_off_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping({"server": {"host": "0.0.0.0"}, "auth": {"enabled": False}})
    assert str(exc.value) == ("auth.enabled: false is only allowed when server.host is a "
                              "loopback address (127.0.0.1, ::1, localhost); it is '0.0.0.0'")
    cfg = from_mapping({"server": {"host": "::1"}, "auth": {"enabled": False}})
    assert cfg.server == ServerConfig(host="::1")


async def test_metrics_can_be_opened_by_config(
    aiohttp_client: Any, config_factory: Callable[..., Config]
) -> None:
    c = await aiohttp_client(create_app(with_auth(config_factory(), metrics_open=True),
                                        live=False))
    resp = await c.get("/metrics")
    assert resp.status == 200 and "facestream_frames_captured_total 0.0" in await resp.text()
    assert (await c.get("/hash")).status == 401

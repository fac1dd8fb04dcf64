"""Accounts, roles, tokens, sessions, cross-site refusals and the audit log, on the real app
(no camera) with authentication on, as it is by default."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from facestream.accounts import ADDRESS_FAILURES, LOGIN_FAILURES, USER_FAILURES
from facestream.appkeys import AUTH, CONFIG, GALLERY
from facestream.config import AuthConfig, Config, ConfigError, ServerConfig, from_mapping

from .conftest import BIDEN, OBAMA, PG_SECRET, sqlite_only, upload
from .support import UNAUTHORIZED

Client = TestClient[Any, Any]
ADMIN_PASSWORD = "correct horse battery"
VIEWER_PASSWORD = "viewer staple 42"


def with_auth(cfg: Config, **auth: Any) -> Config:
    return dataclasses.replace(cfg, auth=AuthConfig(enabled=True, **auth))


@pytest.fixture
async def client(app_client: Any, config_factory: Callable[..., Config],
                 storage_url: str) -> Client:
    """The server without a camera, its accounts in SQLite or in PostgreSQL."""
    c = await app_client(with_auth(config_factory(storage_url=storage_url)),
                                        live=False)
    auth = c.server.app[AUTH]
    await auth.set_password("admin", ADMIN_PASSWORD)  # the first start made one; choose it
    await auth.add_user("vera", "viewer", VIEWER_PASSWORD)
    return c


async def log_in(client: Client, user: str, password: str) -> Any:
    return await client.post("/login", json={"username": user, "password": password})


@sqlite_only
async def test_nothing_but_health_and_login_without_credentials(client: Client) -> None:
    """(Every other route's 401 to a stranger, with UNAUTHORIZED: test_access.py's walk.)"""
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/login")).status == 200
    assert (await client.get("/static/login.js")).status == 200
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/login")
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"))
    assert (resp.status, await resp.json()) == (401, UNAUTHORIZED)
    assert client.server.app[GALLERY].list() == []


async def test_first_start_creates_one_admin_and_prints_its_password_once(
    app_client: Any, config_factory: Callable[..., Config],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = with_auth(config_factory())
    first = await app_client(cfg, live=False)
    printed = capsys.readouterr().err
    match = re.search(r"user 'admin', password (\S+)", printed)
    assert match is not None
    resp = await log_in(first, "admin", match.group(1))
    assert (resp.status, await resp.json()) == (200, {"user": "admin", "role": "admin"})
    await first.close()
    again = await app_client(cfg, live=False)  # same data dir
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


@contextlib.asynccontextmanager
async def from_address(client: Client, address: str) -> AsyncIterator[Callable[..., Any]]:
    """Log in to ``client``'s server from another loopback ``address``: a function
    (user, password) -> (status, Retry-After or None)."""
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session:
        async def attempt(user: str, password: str) -> tuple[int, str | None]:
            async with session.post(client.make_url("/login"),
                                    json={"username": user, "password": password}) as r:
                await r.read()
                return r.status, r.headers.get("Retry-After")

        yield attempt


@sqlite_only
async def test_failed_logins_are_limited_per_address_and_user(client: Client) -> None:
    """Five failures lock that user out from that address only: the real user logs in from
    elsewhere, and another user from the same address."""
    for _ in range(LOGIN_FAILURES):
        resp = await log_in(client, "admin", "not the password")
        assert (resp.status, await resp.json()) == (401, {"error":
                                                          "wrong user name or password"})
    resp = await log_in(client, "admin", ADMIN_PASSWORD)  # right, but too late from here
    body = await resp.json()
    assert resp.status == 429 and body["error"] == "too many failed logins; try again later"
    assert 55 <= int(resp.headers["Retry-After"]) <= 60
    assert (await log_in(client, "vera", VIEWER_PASSWORD)).status == 200
    async with from_address(client, "127.0.0.2") as elsewhere:
        assert await elsewhere("admin", ADMIN_PASSWORD) == (200, None)


@sqlite_only
async def test_concurrent_guesses_cannot_outrun_the_limit(client: Client) -> None:
    """60 wrong passwords at once for one user from one address: each attempt is counted
    before its password is checked, so only the first five are checked (401) and the rest
    are refused at once (429 with Retry-After). The right password still works from an
    address that has not failed."""
    async with from_address(client, "127.0.0.3") as attacker:
        answers = await asyncio.gather(*(attacker("vera", f"guess {i}") for i in range(60)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [401] * LOGIN_FAILURES + [429] * (60 - LOGIN_FAILURES)
    assert all(wait is not None and 1 <= int(wait) <= 60 for status, wait in answers
               if status == 429)
    assert (await log_in(client, "vera", VIEWER_PASSWORD)).status == 200


@sqlite_only
async def test_one_address_guessing_many_users_is_stopped(client: Client) -> None:
    """Password spraying: one address trying a password on many names is stopped after
    ADDRESS_FAILURES, for every name; other addresses are not."""
    async with from_address(client, "127.0.0.4") as sprayer:
        for i in range(ADDRESS_FAILURES):
            assert (await sprayer(f"user{i}", "Winter2026!"))[0] == 401
        assert (await sprayer("vera", VIEWER_PASSWORD))[0] == 429
    assert (await log_in(client, "vera", VIEWER_PASSWORD)).status == 200


@sqlite_only
async def test_a_user_under_attack_is_held_back_only_where_it_failed(client: Client) -> None:
    """Failures for one user from many addresses (USER_FAILURES in all): every address that
    failed is held back, even with the right password; an address that has not failed
    still gets in."""
    for i in range(USER_FAILURES):
        async with from_address(client, f"127.0.1.{i + 1}") as bot:
            assert (await bot("vera", "wrong guess"))[0] == 401
    async with from_address(client, "127.0.1.1") as bot:
        status, wait = await bot("vera", VIEWER_PASSWORD)
        assert status == 429 and wait is not None and int(wait) > 60
    async with from_address(client, "127.0.2.1") as real_user:
        assert await real_user("vera", VIEWER_PASSWORD) == (200, None)


@sqlite_only
async def test_huge_logins_are_refused_unread_and_remember_nothing(client: Client) -> None:
    """A 12 MB user name is refused (413) from its Content-Length, before it is read; a
    name longer than any account's is refused before it is checked, and counts against no
    user. Neither costs the real user anything."""
    huge = io.BytesIO(json.dumps({"username": "x" * (12 << 20), "password": "x"}).encode())
    resp = await client.post("/login", data=huge, headers={"Content-Type": "application/json"})
    assert (resp.status, await resp.json()) == (413, {
        "error": "the request body is larger than 64 KiB, the most a JSON request may send"})
    for i in range(3 * LOGIN_FAILURES):
        resp = await log_in(client, "admin" + "x" * (60 + i), "not the password")
        assert resp.status == 401
    assert (await log_in(client, "admin", ADMIN_PASSWORD)).status == 200


@sqlite_only
async def test_cross_site_writes_are_refused(client: Client) -> None:
    """(Websockets from another origin: test_no_websocket_on_any_path_from_another_origin.)"""
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
    faces = (await (await client.get("/faces")).json())["faces"]
    assert [(f["hash"], f["name"]) for f in faces] == [(face, "Barack")]


async def test_no_websocket_on_any_path_from_another_origin(
    app_client: Any, config_factory: Callable[..., Config]
) -> None:
    """The origin check is the handshake's, whatever the path: /ws and every camera's
    /cameras/{name}/ws refuse another site and another port of this host (same-site: the
    SameSite=Strict cookie is sent), and accept the server's own page."""
    cfg = with_auth(config_factory())
    cfg = dataclasses.replace(cfg, cameras=(dataclasses.replace(cfg.camera, name="door"),
                                            dataclasses.replace(cfg.camera, name="hall")))
    client = await app_client(cfg, live=False)
    await client.server.app[AUTH].set_password("admin", ADMIN_PASSWORD)
    await log_in(client, "admin", ADMIN_PASSWORD)
    own = f"http://{client.host}:{client.port}"
    foreign = ("http://evil.example", f"http://{client.host}:{client.port + 1}", "null")
    for path in ("/ws", "/cameras/door/ws", "/cameras/hall/ws", "/cameras/nosuch/ws"):
        for origin in foreign:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await client.ws_connect(path, headers={"Origin": origin})
            assert exc.value.status == 403, (path, origin)
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await client.ws_connect(path, headers={"Sec-Fetch-Site": "same-site"})
        assert exc.value.status == 403, path
    for path in ("/ws", "/cameras/door/ws", "/cameras/hall/ws"):
        ws = await client.ws_connect(path, headers={"Origin": own})
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot", path
        await ws.close()


async def test_with_accounts_off_only_the_servers_own_names_are_served(
    app_client: Any, config_factory: Callable[..., Config]
) -> None:
    """DNS rebinding: a page of the attacker's name, resolved to 127.0.0.1, sends that name
    as Host and Origin. With accounts off (nothing else stands in its way) every request
    for a name that is not the server's is refused; loopback names, IP addresses and
    server.allowed_hosts are served."""
    cfg = config_factory()  # accounts off
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(
        cfg.server, allowed_hosts=("cams.example.org", ".home.example")))
    client = await app_client(cfg, live=False)
    port = client.port
    resp = await client.post("/faces", data=upload("image", OBAMA, name="Barack"))
    face = (await resp.json())["hash"]
    evil = f"rebind.attacker.example:{port}"
    attacks = (("POST", "/faces", {"data": upload("image", BIDEN, name="Mallory")}),
               ("POST", "/cameras", {"json": {"name": "spy", "source": "rtsp://10.0.0.9/"}}),
               ("PATCH", f"/faces/{face}", {"json": {"name": "Mallory"}}),
               ("GET", "/visits", {}), ("GET", "/hash", {}), ("GET", "/", {}))
    for method, path, kwargs in attacks:
        resp = await client.request(method, path, headers={
            "Host": evil, "Origin": f"http://{evil}"}, **kwargs)
        assert (resp.status, await resp.json()) == (403, {
            "error": "this server does not answer to the name 'rebind.attacker.example'; its "
                     "own names are localhost, its IP addresses and server.allowed_hosts"}), \
            (method, path)
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect("/ws", headers={"Host": evil, "Origin": f"http://{evil}"})
    assert exc.value.status == 403
    faces = (await (await client.get("/faces")).json())["faces"]
    assert [f["name"] for f in faces] == ["Barack"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "cams.example.org",
                 f"CAMS.example.org.:{port}", f"pi.home.example:{port}", "home.example"):
        resp = await client.patch(f"/faces/{face}", json={"name": "Barack"}, headers={
            "Host": host, "Origin": f"http://{host}"})
        assert resp.status == 200, host
    for host in ("home.example.attacker.example", "xcams.example.org", "localhost.evil"):
        assert (await client.get("/hash", headers={"Host": host})).status == 403, host


@sqlite_only
async def test_health_says_only_ok_or_degraded_to_anonymous_callers(client: Client) -> None:
    """Sources, counters and receivers would tell an anonymous poller what the server sees
    and when someone arrives; a viewer gets all of it."""
    resp = await client.get("/healthz")
    assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    resp = await client.get("/healthz", headers={"Authorization": "Bearer fst_wrong"})
    assert await resp.json() == {"status": "ok"}
    await log_in(client, "vera", VIEWER_PASSWORD)
    full = await (await client.get("/healthz")).json()
    assert full["status"] == "ok" and {"camera", "gallery", "workers", "webhooks",
                                       "mqtt", "upload_workers"} <= set(full)


@sqlite_only
async def test_every_answer_forbids_framing_and_sniffing(client: Client) -> None:
    """A page of another site (or another port of this one) must not frame the dashboard,
    nor embed its images; scripts run only from the server's own files."""
    await log_in(client, "admin", ADMIN_PASSWORD)
    for path in ("/", "/login", "/static/js/main.js", "/hash", "/healthz", "/faces/nosuch",
                 "/metrics"):
        resp = await client.get(path)
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, path
        assert "unsafe-inline" not in csp, path
        assert resp.headers.get("X-Frame-Options") == "DENY", path
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
        assert resp.headers.get("Referrer-Policy") == "no-referrer", path
        assert resp.headers.get("Cross-Origin-Resource-Policy") == "same-origin", path


def test_authentication_off_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping({"server": {"host": "0.0.0.0"}, "auth": {"enabled": False}})
    assert str(exc.value) == ("auth.enabled: false is only allowed when server.host is a "
                              "loopback address (127.0.0.1, ::1, localhost); it is '0.0.0.0'")
    cfg = from_mapping({"server": {"host": "::1"}, "auth": {"enabled": False}})
    assert cfg.server == ServerConfig(host="::1")

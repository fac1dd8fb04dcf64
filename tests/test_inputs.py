"""Bad input answers a clear 4xx ``{"error": ...}`` and changes nothing.

Each test sends one kind of malformed request to the real app (``live=False``: the REST API,
the real worker pool and SQLite, no camera) and checks the exact status and body, then that
the gallery is as it was. Multipart bodies are built by hand here, byte for byte, because
the point is to send what a well-behaved client library never would."""

from __future__ import annotations

import asyncio
import base64
import io
import sqlite3
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from aiohttp.test_utils import TestClient

from facestream.commands.common import gallery_of
from facestream.commands.faces import cmd_list
from facestream.config import Config
from facestream.db.disk import DB_FILE

from .conftest import OBAMA
from .support import unit

Client = TestClient[Any, Any]

BOUNDARY = "facestreamtestboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
#: Far deeper than Python's parser recurses, within the 64 KiB a JSON request may send.
DEEP = "[" * 60_000
TOO_DEEP = {"error": "JSON nested too deep (more than 32 levels)"}
JSON_TOO_LARGE = {"error": "the request body is larger than 64 KiB, the most a JSON request "
                           "may send"}
NOT_UTF8 = {"error": "form field 'name' is not valid utf-8 text"}
SQLITE_MAX = 2**63 - 1


@pytest.fixture
async def client(app_client: Any, config_factory: Callable[..., Config]) -> Client:
    return await app_client(config_factory(), live=False)


@pytest.fixture
async def enrolled(client: Client) -> dict[str, Any]:
    """Obama, enrolled from a photo; the gallery every test checks is left as it was."""
    resp = await client.post("/faces", data=multipart(
        text_part("name", "Barack Obama"), file_part("image", OBAMA.read_bytes())),
        headers={"Content-Type": MULTIPART})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def text_part(name: str, value: bytes | str, headers: str = "") -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n{headers}\r\n'
            .encode("ascii") + data + b"\r\n")


def file_part(name: str, data: bytes) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            'filename="face.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode("ascii") \
        + data + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode("ascii")


async def gallery(client: Client) -> Any:
    """What a bad request must not change: every person with their name and samples."""
    resp = await client.get("/faces")
    assert resp.status == 200
    return await resp.json()


async def answer(resp: Any) -> tuple[int, Any]:
    return resp.status, await resp.json()


# -- multipart ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/faces", "/process-frame"])
async def test_multipart_without_a_boundary_is_400(client: Client, path: str) -> None:
    before = await gallery(client)
    body = multipart(text_part("name", "Ada"), file_part("image", OBAMA.read_bytes()))
    resp = await client.post(path, data=body, headers={"Content-Type": "multipart/form-data"})
    assert await answer(resp) == (400, {
        "error": "multipart/form-data without a boundary: send Content-Type: "
                 "multipart/form-data; boundary=..."})
    assert await gallery(client) == before


@pytest.mark.parametrize("path", ["/faces", "/process-frame"])
async def test_truncated_multipart_is_400(client: Client, path: str) -> None:
    before = await gallery(client)
    whole = multipart(text_part("name", "Ada"), file_part("image", OBAMA.read_bytes()),
                      text_part("frame", "x"))
    # Cut in the middle of the image part; Content-Length is the cut body's.
    cut = whole[:len(whole) // 2]
    resp = await client.post(path, data=cut, headers={"Content-Type": MULTIPART})
    assert resp.request_info.headers["Content-Length"] == str(len(cut))
    assert await answer(resp) == (400, {
        "error": "the multipart form is truncated: the body ends inside a part, before the "
                 "closing boundary"})
    assert await gallery(client) == before


@pytest.mark.parametrize("junk", ["this is not a header", ": no name", "Bad Name: value"])
@pytest.mark.parametrize("path", ["/faces", "/process-frame"])
async def test_junk_part_headers_are_400(client: Client, path: str, junk: str) -> None:
    before = await gallery(client)
    body = (f"--{BOUNDARY}\r\n{junk}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n"
            f"Ada\r\n").encode("ascii") + multipart(file_part("image", OBAMA.read_bytes()))
    resp = await client.post(path, data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, {
        "error": "a part of the multipart form has a malformed header line (each must be "
                 "'Name: value')"})
    assert await gallery(client) == before


async def test_a_body_that_does_not_start_with_the_boundary_is_400(client: Client) -> None:
    before = await gallery(client)
    resp = await client.post("/faces", data=b"--other\r\n\r\nabc\r\n--other--\r\n",
                             headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, {
        "error": "the body does not start with the boundary that its Content-Type names"})
    assert await gallery(client) == before


@pytest.mark.parametrize("parts,message", [
    ([f'--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nAda\r\n'.encode()],
     ("a part of the multipart form has no name (Content-Disposition: form-data; name=...), "
      "or the body is truncated")),
    ([text_part("name", "Ada"), text_part("name", "Bob")], "form field 'name' is sent twice"),
    ([text_part(f"f{i}", "x") for i in range(17)], "the form has more than 16 fields"),
    ([text_part("name", b"--inner\r\n\r\nx\r\n--inner--",
                "Content-Type: multipart/mixed; boundary=inner\r\n")],
     "a part of the form is itself multipart; send plain fields"),
])
async def test_a_malformed_form_structure_is_400(
    client: Client, parts: list[bytes], message: str
) -> None:
    before = await gallery(client)
    body = multipart(*parts, file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, {"error": message})
    assert await gallery(client) == before


async def test_an_unknown_transfer_encoding_in_a_part_is_400(client: Client) -> None:
    before = await gallery(client)
    body = multipart(text_part("name", "Ada", "Content-Transfer-Encoding: rot13\r\n"),
                     file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, {
        "error": "the multipart form cannot be parsed: unknown content transfer encoding: "
                 "rot13"})
    assert await gallery(client) == before


@pytest.mark.parametrize("charset", ["bogus", "zlib"])
async def test_a_part_charset_that_is_no_text_encoding_is_400(
    client: Client, charset: str
) -> None:
    before = await gallery(client)
    body = multipart(text_part("name", "Ada", f"Content-Type: text/plain; charset={charset}\r\n"),
                     file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    status, payload = await answer(resp)
    reason = {"bogus": "unknown encoding: bogus",
              "zlib": "'zlib' is not a text encoding; use codecs.decode() to handle "
                      "arbitrary codecs"}[charset]
    assert (status, payload) == (400, {
        "error": f"form field 'name' names an unusable charset ({reason})"})
    assert await gallery(client) == before


async def test_an_image_part_without_a_filename_is_the_image(client: Client) -> None:
    """A part with an image type but no filename (``curl -F 'frame=<a.jpg;type=image/jpeg'``)
    arrives as bytes: it is the image, not a failed base64 string."""
    body = multipart(text_part("frame", OBAMA.read_bytes(), "Content-Type: image/jpeg\r\n"))
    resp = await client.post("/process-frame", data=body, headers={"Content-Type": MULTIPART})
    assert resp.status == 200
    assert len((await resp.json())["faces"]) == 1


# -- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("POST", "/faces"),
    ("PATCH", "/faces/{h}"),
    ("POST", "/faces/{h}/merge"),
    ("POST", "/live/not"),
    ("POST", "/faces/{h}/samples"),
])
async def test_json_nested_too_deep_is_400_on_every_json_endpoint(
    client: Client, enrolled: dict[str, Any], method: str, path: str
) -> None:
    before = await gallery(client)
    url = path.format(h=enrolled["hash"])
    resp = await client.request(method, url, data=DEEP,
                                headers={"Content-Type": "application/json"})
    assert await answer(resp) == (400, TOO_DEEP)
    # Deeper and longer than any JSON request may be: refused from its length, unread.
    resp = await client.request(method, url, data="[" * 100_000,
                                headers={"Content-Type": "application/json"})
    assert await answer(resp) == (413, JSON_TOO_LARGE)
    # Deeper than a body needs but well within Python's recursion limit: the same answer.
    nested: Any = "a"
    for _ in range(40):
        nested = [nested]
    resp = await client.request(method, url, json={"name": "x", "from": nested})
    assert await answer(resp) == (400, TOO_DEEP)
    assert await gallery(client) == before


async def test_a_lone_surrogate_in_a_json_name_is_400(
    client: Client, enrolled: dict[str, Any]
) -> None:
    before = await gallery(client)
    message = {"error": "field 'name' contains an unpaired surrogate (U+D800); send valid "
                        "Unicode text"}
    resp = await client.patch(f"/faces/{enrolled['hash']}", data='{"name": "Ada\\ud800"}',
                              headers={"Content-Type": "application/json"})
    assert await answer(resp) == (400, message)
    resp = await client.post("/faces", data='{"from_live": true, "name": "\\ud800"}',
                             headers={"Content-Type": "application/json"})
    assert await answer(resp) == (400, message)
    # A surrogate pair is a real character (U+1F600) and is kept.
    resp = await client.patch(f"/faces/{enrolled['hash']}",
                              data='{"name": "Ada \\ud83d\\ude00"}',
                              headers={"Content-Type": "application/json"})
    assert resp.status == 200 and (await resp.json())["name"] == "Ada \U0001F600"
    before["faces"][0]["name"] = "Ada \U0001F600"
    assert await gallery(client) == before


async def test_a_json_body_that_is_not_in_its_charset_is_400(client: Client) -> None:
    hint = '{"from_live": true, "name": ...}'
    resp = await client.post("/faces", data=b'{"from_live": true, "name": "\xff\xfe"}',
                             headers={"Content-Type": "application/json"})
    assert await answer(resp) == (400, {
        "error": f"request body is not utf-8 text; send UTF-8 JSON: {hint}"})
    resp = await client.post("/faces", data=b'{"from_live": true, "name": "x"}',
                             headers={"Content-Type": "application/json; charset=bogus"})
    assert await answer(resp) == (400, {
        "error": f"unknown charset 'bogus'; send UTF-8 JSON: {hint}"})
    assert (await gallery(client))["faces"] == []


# -- names ----------------------------------------------------------------------------------


async def test_a_lone_surrogate_in_a_multipart_name_is_400(client: Client) -> None:
    before = await gallery(client)
    # As UTF-8 would spell U+D800 if it could: not UTF-8, refused while reading the form.
    body = multipart(text_part("name", "Ada\ud800".encode("utf-8", "surrogatepass")),
                     file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, NOT_UTF8)
    # A charset that can spell it (unicode_escape): refused by the name rule.
    body = multipart(text_part("name", b"Ada\\ud800",
                               "Content-Type: text/plain; charset=unicode_escape\r\n"),
                     file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, {
        "error": "name contains an unpaired surrogate (U+D800); send valid Unicode text"})
    assert await gallery(client) == before


async def test_a_non_utf8_multipart_name_is_400(client: Client) -> None:
    before = await gallery(client)
    body = multipart(text_part("name", b"\xff\xfe"), file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, NOT_UTF8)
    # The same bytes in a part typed as binary: named, not dropped as "missing".
    body = multipart(text_part("name", b"\xff\xfe", "Content-Type: application/octet-stream\r\n"),
                     file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, NOT_UTF8)
    # A raw byte that is not UTF-8 in an urlencoded body.
    resp = await client.post("/faces", data=b"name=Ada\xff&image=x",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert await answer(resp) == (400, {"error": "the form is not utf-8 text"})
    # Percent-escapes in an urlencoded form are decoded with replacement characters by
    # aiohttp; a name with U+FFFD in it is refused for what it is.
    resp = await client.post("/faces", data=b"name=Ada%ff&image=" + _b64(OBAMA.read_bytes()),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert await answer(resp) == (400, {
        "error": "name contains U+FFFD, the replacement character: it was not valid UTF-8 "
                 "text when it was sent"})
    assert await gallery(client) == before


def _b64(data: bytes) -> bytes:
    return quote_from_bytes(base64.b64encode(data)).encode("ascii")


@pytest.mark.parametrize("name,only", [
    ("\u200b", "U+200B"),
    ("\u200c", "U+200C"),
    ("\u200d", "U+200D"),
    ("\ufeff", "U+FEFF"),
    ("\u2060", "U+2060"),
    (" \u200b\u200c \t\u200d\ufeff\u2060 ", "U+200B, U+200C, U+200D, U+2060, U+FEFF"),
    ("\u00ad\u2063", "U+00AD, U+2063"),  # soft hyphen, invisible separator
    ("\u3164", "U+3164"),  # Hangul filler: a "letter" that shows nothing
])
async def test_a_name_of_only_invisible_characters_is_400(
    client: Client, enrolled: dict[str, Any], name: str, only: str
) -> None:
    before = await gallery(client)
    resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": name})
    assert await answer(resp) == (400, {"error": f"name has no visible characters (only {only})"})
    assert await gallery(client) == before


async def test_enrolling_with_an_invisible_name_is_400(client: Client) -> None:
    body = multipart(text_part("name", "\u2060\u200b"), file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, {
        "error": "name has no visible characters (only U+200B, U+2060)"})
    assert (await gallery(client))["faces"] == []


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x07", "\x7f", "\x9b"])
async def test_a_name_with_a_control_character_is_400(
    client: Client, enrolled: dict[str, Any], char: str
) -> None:
    before = await gallery(client)
    message = {"error": f"name contains a control character (U+{ord(char):04X})"}
    resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": f"Ada{char}[2J"})
    assert await answer(resp) == (400, message)
    body = multipart(text_part("name", f"Grace{char}Hopper"),
                     file_part("image", OBAMA.read_bytes()))
    resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
    assert await answer(resp) == (400, message)
    assert await gallery(client) == before


async def test_a_name_with_a_bidirectional_control_is_400(
    client: Client, enrolled: dict[str, Any]
) -> None:
    """"Ada\u202eevil" would show as "Adalive": text that reorders what follows it is
    refused, in a rename and in an enrollment; right-to-left names need none of it."""
    before = await gallery(client)
    for char in ("\u202e", "\u202d", "\u202a", "\u2066", "\u2067", "\u2068", "\u2069",
                 "\u200f", "\u061c"):
        message = {"error": f"name contains a bidirectional control character "
                            f"(U+{ord(char):04X}), which changes how the text around it "
                            "displays; right-to-left names need none"}
        resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": f"Ada{char}evil"})
        assert await answer(resp) == (400, message)
        body = multipart(text_part("name", f"{char}Bob"), file_part("image", OBAMA.read_bytes()))
        resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
        assert await answer(resp) == (400, message)
    assert await gallery(client) == before
    resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": "דוד לוי"})
    assert resp.status == 200 and (await resp.json())["name"] == "דוד לוי"


async def test_names_are_trimmed_and_whitespace_runs_collapsed(
    client: Client, enrolled: dict[str, Any]
) -> None:
    """Whitespace (tab and newline too) trims and collapses; zero-width characters at the
    ends go, those inside stay (a joiner builds an emoji; ZWNJ spells Persian)."""
    face = f"/faces/{enrolled['hash']}"
    resp = await client.patch(face, json={"name": " \u200b Ada \t\n  Lovelace\u200d\r\n"})
    assert resp.status == 200 and (await resp.json())["name"] == "Ada Lovelace"
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    resp = await client.patch(face, json={"name": f"  {family}  "})
    assert resp.status == 200 and (await resp.json())["name"] == family
    assert (await (await client.get(face)).json())["name"] == family


async def test_a_name_that_is_not_a_string_is_400(
    client: Client, enrolled: dict[str, Any]
) -> None:
    before = await gallery(client)
    for value in (5, ["Ada"], {"first": "Ada"}, True):
        resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": value})
        assert await answer(resp) == (400, {"error": "name must be a string"}), value
    resp = await client.patch(f"/faces/{enrolled['hash']}", json={"name": None})
    assert await answer(resp) == (400, {"error": "name is required"})
    assert await gallery(client) == before


def test_faces_list_escapes_control_characters(config_factory: Callable[..., Config]) -> None:
    """A name an older version stored with ESC, NUL, a newline or a bidi override prints
    escaped: it cannot recolour the terminal, clear it, or forge a line of output."""
    config = config_factory()

    async def enroll() -> str:
        async with gallery_of(config) as g:
            return (await g.add("placeholder", unit(1, 128))).hash

    face = asyncio.run(enroll())
    stored = "Ada\x1b[2J\x00\nfake line\u202eevil\\"
    with sqlite3.connect(f"{config.storage.data_dir}/{DB_FILE}") as db:
        db.execute("UPDATE people SET name = ? WHERE hash = ?", (stored, face))
    out = io.StringIO()
    assert asyncio.run(cmd_list(config, out)) == 0
    line = out.getvalue().splitlines()[0]
    assert line.endswith("  Ada\\x1b[2J\\x00\\nfake line\\u202eevil\\\\")
    assert not any(ch in line for ch in "\x1b\x00\n\u202e")


# -- emails, hashes, visit ids --------------------------------------------------------------


async def test_an_email_that_is_not_a_string_is_400(client: Client) -> None:
    for value in (5, ["a@b.example"], {"a": 1}, True):
        resp = await client.post("/faces", json={"from_live": True, "name": "Ada",
                                                 "email": value})
        assert await answer(resp) == (400, {"error": "email must be a string"}), value
    assert (await gallery(client))["faces"] == []


async def test_an_email_with_control_characters_is_400(client: Client) -> None:
    for value in ("ada@example.org\x00", "ada\x1b@example.org", "ada @example.org",
                  "ada@exa\u200bmple.org"):
        body = multipart(text_part("name", "Ada"), text_part("email", value),
                         file_part("image", OBAMA.read_bytes()))
        resp = await client.post("/faces", data=body, headers={"Content-Type": MULTIPART})
        assert await answer(resp) == (400, {"error": "email is not a valid address"}), value
    assert (await gallery(client))["faces"] == []


async def test_a_hash_that_is_not_hex_is_400(client: Client) -> None:
    for value in ("zz", "A" * 64, "a" * 64 + "\n", "a" * 63, 5):
        resp = await client.post("/faces", json={"from_live": True, "name": "Ada",
                                                 "hash": value})
        assert await answer(resp) == (400, {
            "error": "hash must be a 64-character hex string"}), value
        resp = await client.post("/faces", json={"from_unknown": value, "name": "Ada"})
        assert await answer(resp) == (400, {
            "error": "from_unknown must be a 64-character hex string"}), value
    resp = await client.get("/visits", params={"person": "a" * 64 + "\n"})
    assert await answer(resp) == (400, {"error": "person must be a 64-character hex string"})
    assert (await gallery(client))["faces"] == []


async def test_a_from_visit_that_is_not_a_string_is_400(
    client: Client, enrolled: dict[str, Any]
) -> None:
    before = await gallery(client)
    for value in (5, ["x"], {"id": "x"}, True):
        resp = await client.post("/faces", json={"from_visit": value, "name": "Ada"})
        assert await answer(resp) == (400, {"error": "from_visit must be a visit id"}), value
        resp = await client.post(f"/faces/{enrolled['hash']}/samples",
                                 json={"from_visit": value})
        assert await answer(resp) == (400, {"error": "from_visit must be a visit id"}), value
    assert await gallery(client) == before


# -- sample ids, paging, cursors ------------------------------------------------------------


@pytest.mark.parametrize("sample", [2**63, 2**64, 10**29])
async def test_a_sample_id_beyond_sqlite_integers_is_404(
    client: Client, enrolled: dict[str, Any], sample: int
) -> None:
    before = await gallery(client)
    face = enrolled["hash"]
    message = {"error": f"no sample {sample} of person {face}"}
    resp = await client.get(f"/faces/{face}/samples/{sample}/crop")
    assert await answer(resp) == (404, message)
    resp = await client.delete(f"/faces/{face}/samples/{sample}")
    assert await answer(resp) == (404, message)
    # The largest id SQLite has is asked for and simply not found.
    resp = await client.delete(f"/faces/{face}/samples/{SQLITE_MAX}")
    assert await answer(resp) == (404, {"error": f"no sample {SQLITE_MAX} of person {face}"})
    assert await gallery(client) == before


@pytest.mark.parametrize("sample", ["-1", "1_0", "\uff11", "1e3", "0x1"])
async def test_a_sample_id_that_is_not_digits_is_404(
    client: Client, enrolled: dict[str, Any], sample: str
) -> None:
    before = await gallery(client)
    resp = await client.delete(f"/faces/{enrolled['hash']}/samples/{sample}")
    assert await answer(resp) == (404, {"error": f"sample ids are whole numbers, got {sample!r}"})
    assert await gallery(client) == before


@pytest.mark.parametrize("path,key", [("/faces", "limit"), ("/faces", "offset"),
                                      ("/unknowns", "limit"), ("/unknowns", "offset"),
                                      ("/visits", "limit")])  # visits page by cursor
async def test_paging_numbers_must_be_whole_numbers_in_range(
    client: Client, path: str, key: str
) -> None:
    cases = [
        ("abc", f"{key} must be a whole number, got 'abc'"),
        ("1.5", f"{key} must be a whole number, got '1.5'"),
        ("1_000", f"{key} must be a whole number, got '1_000'"),
        (" 5", f"{key} must be a whole number, got ' 5'"),
        ("", f"{key} must be a whole number, got ''"),
        ("-1", f"{key} must not be negative, got '-1'"),
        (str(2**63), f"{key} is too large (at most {SQLITE_MAX})"),
        ("9" * 5000, f"{key} is too large (at most {SQLITE_MAX})"),
    ]
    for raw, message in cases:
        resp = await client.get(path, params={key: raw})
        assert await answer(resp) == (400, {"error": message}), raw
    resp = await client.get(path, params={key: str(SQLITE_MAX)})
    assert resp.status == 200


@pytest.mark.parametrize("cursor,shown", [
    *(pytest.param(cursor, repr(cursor), id=cursor) for cursor in [
        "garbage", "nan_0123abcd", "1e999_0123abcd", "inf_ab", "1700000000.0_",
        "1700000000.0_ab\x00", "_ab"]),
    pytest.param("1700000000.0_" + "a" * 65, "'1700000000.0_aaaaaaaaaaaaaaaaaaaaaaaaaaa…'",
                 id="long, quoted cut"),
])
async def test_a_garbage_visits_cursor_is_400(client: Client, cursor: str, shown: str) -> None:
    resp = await client.get("/visits", params={"cursor": cursor})
    assert await answer(resp) == (400, {
        "error": f"not a visits cursor: {shown}; send the \"next\" of the previous page"})


async def test_a_cursor_as_the_server_makes_one_is_accepted(client: Client) -> None:
    for cursor in ("1700000000.25_0123456789abcdef0123456789abcdef", "1e+20_ab"):
        resp = await client.get("/visits", params={"cursor": cursor})
        assert await answer(resp) == (200, {"visits": [], "next": None})

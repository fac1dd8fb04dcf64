"""Secrets and personal data: the server secret, email digests, credential-free source names."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Final

SECRET_FILE: Final = "secret.key"

REDACTED: Final = "***"


#: ``storage.secret = "hex:..."``: the key's bytes in hex, as ``DATA_DIR/secret.key`` has them.
HEX_PREFIX: Final = "hex:"


def load_or_create_secret(data_dir: Path, configured: str = "") -> bytes:
    """The HMAC key for emails: ``storage.secret`` if set (its text, or the bytes of
    ``hex:<hex digits>``: what ``secret.key`` holds), else ``data_dir/secret.key``, generated
    (32 random bytes, mode 0600) on first start."""
    if configured.startswith(HEX_PREFIX):
        return bytes.fromhex(configured[len(HEX_PREFIX):])  # checked with the config
    if configured:
        return configured.encode("utf-8")
    path = data_dir / SECRET_FILE
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ValueError(f"{path}: not a hex secret; delete it to generate a new one") from exc
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    return key


def email_digest(secret: bytes, email: str) -> str:
    """HMAC-SHA256 of a normalised (trimmed, lower-cased) email: the only form ever stored."""
    canonical = email.strip().lower().encode("utf-8")
    return hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole, readable by its owner only (0600, whatever the umask), as a new
    file that replaces the old one at once: an export or a report holds people's data."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def redact_source(source: str) -> str:
    """A camera source fit for logs, ``/healthz``, ``/cameras`` and the "no signal" frame: the
    URL's userinfo and every parameter value replaced by ``***``. A source without ``://``
    (a webcam index, a file) is kept.

    Camera URLs are often not valid URLs: passwords hold ``@ : / ? #`` and spaces unescaped,
    and ``urlsplit`` then takes part of the password for the host or the path. Parameter
    names are no guide either (``loginpas``, ``psw``, ``pw``, ``p``, ``upw`` all carry
    passwords on some camera). So the rule errs towards hiding too much, never too little:

    1. Userinfo. After ``://``, the userinfo ends at the rightmost ``@`` that is followed by
       something host-like: the text from it to the next ``/``, ``?``, ``#`` (or the end)
       has no whitespace, ``=``, ``&`` or ``@``. Everything between ``://`` and that ``@`` is
       replaced: ``rtsp://admin:p@ss/w?rd#1@cam:554/live`` -> ``rtsp://***@cam:554/live``.
       Since a password precedes the real host's ``@``, taking the rightmost one can only
       hide more: an ``@`` in the path or the last query value (``?mail=a@b.org``) hides
       the host and path before it too. If no ``@`` qualifies but the authority (up to the
       first ``/ ? #``) holds one, it ends at the last ``@`` of the authority.
    2. Query and fragment (after the first ``?`` or ``#``): split at ``&``, every piece
       ``name=value`` becomes ``name=***`` and every bare piece ``***``; a value runs to the
       next ``&`` whatever ``/ ? # ;`` it holds.
    3. The path keeps its segments but for ``name=value`` pieces (some cameras take their
       credentials there: ``/user=admin&password=1&channel=1``, Xiongmai's
       ``/user=admin_password=x_channel=1``): the value is hidden up to the next ``&``, or
       to the end of the path.
    """
    scheme_end = source.find("://")
    if scheme_end < 0:
        return source
    head, rest = source[:scheme_end + 3], source[scheme_end + 3:]
    cut = _userinfo_end(rest)
    if cut is not None:
        head, rest = head + REDACTED + "@", rest[cut + 1:]
    host_end = len(re.match(r"[^/?#]*", rest).group())  # type: ignore[union-attr]
    return head + rest[:host_end] + _redact_params(rest[host_end:])


def redact_receiver(url: str) -> str:
    """A receiver's URL (a webhook) fit for ``/healthz`` and logs: the scheme, the host's
    domain and port; every label before the domain, the path and the query hidden. Webhook
    URLs carry their token anywhere (Slack's and Home Assistant's in the path, some in a
    short or digit-free path segment, tunnels and request bins in the host name), so only
    what names the receiver's owner is kept:
    ``https://u:p@a1b2.hooks.example.org:8443/T0/abc?code=1`` ->
    ``https://***.example.org:8443/***?***``. IP addresses and one-label hosts are shown."""
    safe = redact_source(url)
    scheme, sep, rest = safe.partition("://")
    if not sep:
        return REDACTED
    rest = rest.removeprefix(REDACTED + "@")
    authority = re.match(r"[^/?#]*", rest).group()  # type: ignore[union-attr]
    tail = rest[len(authority):]
    host, port = authority, ""
    if not authority.endswith("]") and authority.count(":") == 1:
        host, _, number = authority.partition(":")
        port = f":{number}"
    labels = host.split(".")
    if not is_ip_address(host) and len(labels) > 2:
        host = ".".join([REDACTED, *labels[-2:]])
    shown = f"{scheme}://{host}{port}"
    path, query = re.match(r"([^?#]*)(.*)", tail, re.DOTALL).groups()  # type: ignore[union-attr]
    if path.strip("/"):
        shown += "/" + REDACTED
    if query:
        shown += "?" + REDACTED
    return shown


def is_ip_address(host: str) -> bool:
    """An IP address, v4 or v6 (in brackets or not, with a zone or not): not a DNS name."""
    try:
        ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return False
    return True


def _userinfo_end(rest: str) -> int | None:
    """Where the userinfo of ``rest`` (a URL after ``://``) ends: the index of its ``@``."""
    at = rest.rfind("@")
    while at >= 0:
        host = re.match(r"[^/?#]*", rest[at + 1:]).group()  # type: ignore[union-attr]
        if not re.search(r"[\s=&@]", host):
            return at
        at = rest.rfind("@", 0, at)
    authority = re.match(r"[^/?#]*", rest).group()  # type: ignore[union-attr]
    return authority.rfind("@") if "@" in authority else None


def _redact_params(tail: str) -> str:
    """``tail`` (path, query, fragment) with every parameter value redacted."""
    path, query = re.match(r"([^?#]*)(.*)", tail, re.DOTALL).groups()  # type: ignore[union-attr]
    out: list[str] = []
    hiding = False
    for piece in re.split(r"([/;&])", path):
        if hiding:  # a value runs to the next "&"
            if piece == "&":
                hiding = False
                out.append(piece)
            continue
        name, eq, _ = piece.partition("=")
        out.append(f"{name}={REDACTED}" if eq else piece)
        hiding = bool(eq)
    if query:
        pieces = (p.partition("=") for p in query[1:].split("&"))
        out.append(query[0] + "&".join(f"{name}={REDACTED}" if eq else (REDACTED if name else "")
                                       for name, eq, _ in pieces))
    return "".join(out)

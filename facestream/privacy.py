"""Secrets and personal data: the server secret, email digests, credential-free source names."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Final
from urllib.parse import unquote_plus

SECRET_FILE: Final = "secret.key"

#: Parameter names (or words in them: ``access_token``, ``X-Amz-Signature``, ``apiKey``) that
#: carry a credential; their values are redacted.
SECRET_PARAMS: Final = frozenset({
    "user", "username", "login", "pass", "password", "pwd", "passwd", "passcode",
    "passphrase", "token", "key", "apikey", "auth", "authorization", "secret", "sig",
    "signature", "credential", "credentials",
})
REDACTED: Final = "***"
_WORD_RE: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


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


def redact_source(source: str) -> str:
    """A camera source fit for logs, ``/healthz`` and the "no signal" frame: every credential
    in a URL replaced by ``***``. A source without ``://`` (a webcam index, a file) is kept.

    Camera URLs are often not valid URLs: passwords hold ``@ : / ? #`` and spaces unescaped,
    and ``urlsplit`` then takes part of the password for the host or the path. So the rule
    errs towards hiding too much, never too little:

    1. Userinfo. After ``://``, the userinfo ends at the rightmost ``@`` that is followed by
       something host-like: the text from it to the next ``/``, ``?``, ``#`` (or the end)
       has no whitespace, ``=``, ``&`` or ``@``. Everything between ``://`` and that ``@`` is
       replaced: ``rtsp://admin:p@ss/w?rd#1@cam:554/live`` -> ``rtsp://***@cam:554/live``.
       Since a password precedes the real host's ``@``, taking the rightmost one can only
       hide more: an ``@`` in the path or the last query value (``?mail=a@b.org``) hides
       the host and path before it too. If no ``@`` qualifies but the authority (up to the
       first ``/ ? #``) holds one, it ends at the last ``@`` of the authority.
    2. Parameters. After the host, in the path, query and fragment alike, a ``name=value``
       piece (pieces are split at ``? & ; / #``) whose name is, or has a word that is, one
       of ``SECRET_PARAMS`` (any case; ``api_key``, ``X-Amz-Signature``, ``accessToken``)
       keeps its name and gets ``***`` for a value. The value runs to the next ``&`` or the
       end, whatever ``/ ? # ;`` it holds (a token with a ``/``, or Xiongmai's
       ``/user=admin_password=x_channel=1``); other parameters are kept as they are.
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


def _secret_param(name: str) -> bool:
    name = unquote_plus(name)
    words = {w.lower() for w in _WORD_RE.findall(name)}
    return bool(re.sub(r"[^a-z0-9]", "", name.lower()) in SECRET_PARAMS
                or words & SECRET_PARAMS)


def _redact_params(tail: str) -> str:
    """``tail`` (path, query, fragment) with the values of credential parameters redacted."""
    out: list[str] = []
    in_secret = False
    for piece in re.split(r"([?&;/#])", tail):
        if in_secret:  # a secret value runs to the next "&"
            if piece == "&":
                in_secret = False
                out.append(piece)
            continue
        name, eq, _ = piece.partition("=")
        if eq and _secret_param(name):
            out.append(f"{name}={REDACTED}")
            in_secret = True
        else:
            out.append(piece)
    return "".join(out)

"""Secrets and personal data: the server secret, email digests, credential-free source names."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

SECRET_FILE: Final = "secret.key"


def load_or_create_secret(data_dir: Path, configured: str = "") -> bytes:
    """The HMAC key for emails: ``storage.secret`` if set, else ``data_dir/secret.key``,
    generated (32 random bytes, mode 0600) on first start."""
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
    """A camera source fit for logs and the "no signal" frame: URL credentials removed."""
    try:
        parts = urlsplit(source)
    except ValueError:
        return source
    if not parts.scheme or "@" not in parts.netloc:
        return source
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))

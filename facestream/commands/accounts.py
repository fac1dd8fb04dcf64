"""``facestream users list|add|passwd|delete`` and ``facestream tokens list|create|revoke``:
dashboard accounts and API tokens, kept in the gallery database (see auth.py); safe while
the server runs. Two commands with one parser and one ``run``, told apart by ``kind``."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from typing import Final

from ..gallery_types import GalleryError
from ..storage import Gallery
from .common import (
    Command,
    action,
    actions,
    add_shared,
    announce_new_gallery,
    load_config,
    prog,
    require_gallery,
)

USES: Final = ("config", "data_dir")


def build_parser(kind: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog(kind),
        description="Dashboard accounts (users) and API tokens (tokens), kept in the gallery "
        "database; safe while the server runs.")
    add_shared(p, USES)
    sub = actions(p)
    action(sub, kind, "list", USES, help=f"list {kind}")
    if kind == "users":
        add = action(sub, kind, "add", USES, help="add a user (asks for the password)")
        add.add_argument("name")
        add.add_argument("--role", choices=("viewer", "admin"), default="viewer")
        add.add_argument("--password-stdin", action="store_true",
                         help="read the password from standard input (for scripts)")
        pw = action(sub, kind, "passwd", USES,
                    help="set a user's password (ends their sessions)")
        pw.add_argument("name")
        pw.add_argument("--password-stdin", action="store_true")
        delete = action(sub, kind, "delete", USES, help="delete a user")
        delete.add_argument("name")
    else:
        create = action(sub, kind, "create", USES,
                        help="print a new API token (shown only once)")
        create.add_argument("--role", choices=("viewer", "admin"), required=True)
        create.add_argument("--name", default="", help="what it is for")
        revoke = action(sub, kind, "revoke", USES, help="revoke a token by its id")
        revoke.add_argument("id")
    return p


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise GalleryError("the two passwords differ")
    return first


def run(kind: str, args: argparse.Namespace) -> int:
    from ..accounts import Auth

    config = load_config(args, model=False)
    creates = args.action in ("add", "create")  # users add, tokens create
    if not creates:
        require_gallery(config)

    async def change() -> int:
        gallery = await Gallery.for_config(config, check_model=False)
        try:
            auth = Auth(gallery, config.auth.session_days)
            await auth.ensure_schema()
            if kind == "users":
                if args.action == "list":
                    for name, role, _ in await auth.users():
                        print(f"{name}  {role}")
                elif args.action == "add":
                    await auth.add_user(args.name, args.role, _password(args.password_stdin))
                    print(f"added {args.role} {args.name}")
                elif args.action == "passwd":
                    await auth.set_password(args.name, _password(args.password_stdin))
                    print(f"password of {args.name} changed; their sessions ended")
                else:
                    await auth.delete_user(args.name)
                    print(f"deleted user {args.name}")
            elif args.action == "list":
                for tid, name, role, created in await auth.tokens():
                    print(f"{tid}  {role:<6}  {time.strftime('%Y-%m-%d', time.localtime(created))}"
                          f"  {name}")
            elif args.action == "create":
                tid, token = await auth.create_token(args.role, args.name)
                print(token)
                print(f"token {tid} ({args.role}): shown only now; send it as "
                      "'Authorization: Bearer <token>'", file=sys.stderr)
            else:
                await auth.revoke(args.id)
                print(f"revoked token {args.id}")
            await auth.audit("cli", f"{kind} {args.action}", None)
        finally:
            await gallery.close()
        return 0

    if not creates:
        return asyncio.run(change())
    with announce_new_gallery(config):
        return asyncio.run(change())


USERS: Final = Command("users", USES, functools.partial(build_parser, "users"),
                       functools.partial(run, "users"))
TOKENS: Final = Command("tokens", USES, functools.partial(build_parser, "tokens"),
                        functools.partial(run, "tokens"))

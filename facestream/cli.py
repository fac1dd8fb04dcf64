"""Command line: ``facestream [serve options]`` (or ``python -m facestream``) serves;
``facestream COMMAND [ACTION] ...`` runs a command (faces, gallery, users, tokens, ...).

This module only parses and dispatches: each command, its parser and its work are in
``facestream/commands/`` (one module each), listed in :data:`COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

from .commands import accounts, evaluate, faces, gallery, import_pickle, reembed, serve, weights
from .commands.common import Command, refuse_unused
from .config import ConfigError
from .gallery_types import GalleryError
from .weights import WeightsError

#: The commands besides serving, in the order usage messages list them; ``python -m
#: facestream`` alone serves (:data:`SERVE`).
COMMANDS: Final[dict[str, Command]] = {c.name: c for c in (
    faces.COMMAND,
    reembed.COMMAND,
    evaluate.COMMAND,
    gallery.COMMAND,
    accounts.USERS,
    accounts.TOKENS,
    import_pickle.COMMAND,
    weights.COMMAND,
)}
SERVE: Final = serve.COMMAND


def _command_first(argv: list[str]) -> tuple[list[str], argparse.Namespace | None]:
    """``argv`` with the shared options given before a command put right after the command
    word, where the command's own parser takes them (a later one wins); for serving (no
    command), the parsed options instead."""
    if argv and argv[0] in COMMANDS:
        return argv, None
    parser = SERVE.parser()
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.command:
        return argv, args
    command = args.command[0]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r} (commands: {', '.join(COMMANDS)})")
    defaults = vars(parser.parse_args([]))
    lead: list[str] = []
    for dest, value in vars(args).items():
        if dest == "command" or value == defaults[dest]:
            continue
        flag = "--" + dest.replace("_", "-")
        if dest not in COMMANDS[command].uses:
            parser.error(f"{command} does not use {flag}")
        lead += [flag, str(value)]
    return [command, *lead, *args.command[1:]], None


def _run(command: Command, argv: list[str]) -> int:
    parser = command.parser()
    args = parser.parse_args(argv)
    refuse_unused(parser, args)
    return command.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: this process's) and return the exit code;
    a usage error exits through argparse (SystemExit 2), --help and --version too (0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, serving = _command_first(argv)
        if serving is not None:
            return SERVE.run(serving)
        return _run(COMMANDS[argv[0]], argv[1:])
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (WeightsError, GalleryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

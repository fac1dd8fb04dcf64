"""What the commands share: the :class:`Command` record ``cli.py`` dispatches on; the shared
options (``--config``, ``--data-dir``, ``--model``, ``--workers``), taken before or after the
command word and its action; the config they override; the data dir's checks (an existing
gallery, or a new one said aloud); and the gallery and worker pool opened for a command."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from ..config import MODELS, Config, load, override
from ..db.disk import DB_FILE
from ..gallery_types import GalleryError
from ..storage import Gallery
from ..workers import PoolSettings, WorkerPool

DEFAULT_CONFIG: Final = Path("config.toml")
#: The options commands share, by their ``dest``. Each command takes those it uses, before
#: the command word, after it, and after its action (``faces list --data-dir X``); given in
#: two places, the later one wins.
SHARED: Final = ("config", "data_dir", "model", "workers")


@dataclass(frozen=True)
class Command:
    """``facestream NAME ...``: ``cli.main`` parses the arguments after NAME with ``parser()``
    and returns ``run(args)`` as the exit code."""

    name: str
    #: The shared options it takes (dests); any other is refused, and not shown in --help.
    uses: tuple[str, ...]
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]


# -- the shared options ---------------------------------------------------------------------


def prog(command: str = "") -> str:
    """How the user ran us, for usage lines: ``facestream`` (the installed command) or
    ``python -m facestream``."""
    installed = bool(sys.argv) and Path(sys.argv[0]).name == "facestream"
    return f"{'facestream' if installed else 'python -m facestream'} {command}".strip()


def add_shared(
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


def actions(parser: argparse.ArgumentParser) -> Any:
    return parser.add_subparsers(dest="action", required=True)


def action(sub: Any, command: str, name: str, uses: Sequence[str],
           **kwargs: Any) -> argparse.ArgumentParser:
    """An action's parser, taking the shared options ``uses`` after the action too; any other
    shared option the command takes is refused for this action (:func:`refuse_unused`)."""
    parser: argparse.ArgumentParser = sub.add_parser(name, prog=prog(f"{command} {name}"),
                                                     **kwargs)
    add_shared(parser, uses, action=True)
    parser.set_defaults(action_uses=tuple(uses))
    return parser


def refuse_unused(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An option the command takes but its action ignores (``faces --workers 2 list``) is
    an error, not silently dropped."""
    uses = getattr(args, "action_uses", SHARED)
    for dest in SHARED:
        if dest not in uses and getattr(args, dest, None) is not None:
            flag = "--" + dest.replace("_", "-")
            parser.error(f"{args.action} does not use {flag}")


def load_config(args: argparse.Namespace, model: bool = True, **extra: Any) -> Config:
    """The config file (``--config``, else ./config.toml if present), with the shared options
    given and ``extra`` (``section__field=value``; None leaves the file's value)."""
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


def exists(path: Path) -> bool | None:
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
    otherwise become a new, empty gallery reporting "0 people". A gallery in PostgreSQL
    (storage.url) is there once a node has started on it; opening says if it cannot be."""
    data, db = config.data_path, config.data_path / DB_FILE
    if config.storage.url or exists(db) is not False:
        return
    fix = ("check --data-dir (or storage.data_dir in the config file), or create a gallery "
           "there: start the server once, or enroll someone (faces add NAME PHOTO)")
    if exists(data) is False:
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
    before = True if config.storage.url else exists(db)
    try:
        yield
    finally:
        if before is False and exists(db):
            print(new_gallery_note(config), file=sys.stderr)


# -- the gallery and the worker pool, as a command opens them --------------------------------


@contextlib.asynccontextmanager
async def gallery_of(config: Config, check_model: bool = True) -> AsyncIterator[Gallery]:
    gallery = await Gallery.for_config(config, check_model=check_model)
    try:
        yield gallery
    finally:
        await gallery.close()


@contextlib.asynccontextmanager
async def pool_for(config: Config, model: str | None = None) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(PoolSettings.from_config(config, model))
    await pool.start()
    try:
        yield pool
    finally:
        pool.close()


def progress(total: int, what: str) -> tqdm[Any]:
    # disable=None: no bar when stderr is not a terminal (logs, CI), where it would only
    # print hundreds of carriage-return updates.
    return tqdm(total=total, desc=what, unit="img", file=sys.stderr,
                disable=True if total < 2 else None, leave=False)

"""``facestream import-pickle FILE``: the gallery the original prototype pickled, a list of
(embedding, hash) tuples, imported into the data dir. Loading pickle runs any code in the
file: the command says so before it reads one."""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
from pathlib import Path
from typing import Any, Final

from ..config import MODELS, Config
from ..gallery_types import AlreadyEnrolled, GalleryError
from ..storage import Gallery
from .common import Command, add_shared, announce_new_gallery, load_config, prog

USES: Final = ("config", "data_dir")  # the model is --from-model's


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("import-pickle"),
        description="Import a gallery pickled by the original prototype: a list of "
        "(embedding, hash) tuples. Loading pickle runs any code in the file: import only "
        "files you made yourself.",
    )
    p.add_argument("file", type=Path)
    add_shared(p, USES)
    p.add_argument(
        "--from-model",
        default="Facenet",
        choices=MODELS,
        help="model that made the pickled embeddings (the prototype used Facenet)",
    )
    p.add_argument("--name-prefix", default="imported", help="names given: PREFIX 1, PREFIX 2...")
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args, model=False)
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
                await gallery.add(f"{prefix} {i}", embedding, person=face, source="import")
                added += 1
            except AlreadyEnrolled:
                duplicates += 1
            except (GalleryError, ValueError, TypeError):
                invalid += 1
    finally:
        await gallery.close()
    print(f"imported {added} people into {config.data_path} ({model}); "
          f"{duplicates} already enrolled, {invalid} invalid entries skipped")
    return 0 if invalid == 0 else 1


COMMAND: Final = Command("import-pickle", USES, build_parser, run)

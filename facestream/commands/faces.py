"""``facestream faces list|add|enroll-dir|delete|export|import``: the gallery from the command
line, for scripting:

    facestream faces list
    facestream faces add NAME IMAGE...
    facestream faces enroll-dir DIR        (DIR/Person_Name/*.jpg, like LFW)
    facestream faces delete HASH
    facestream faces export FILE           (JSON; never pickle)
    facestream faces import FILE

They work on the data dir directly and may run while the server is up: the server notices
committed changes within a second. Faces are embedded by the same worker pool and code as the
server's uploads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from ..config import Config
from ..db.base import StorageError
from ..enrollment import Enrolled, enroll_images
from ..gallery_types import AlreadyEnrolled, GalleryError, NotFound, StoredImages
from ..privacy import write_private
from .common import (
    SHARED,
    Command,
    action,
    actions,
    add_shared,
    announce_new_gallery,
    gallery_of,
    load_config,
    pool_for,
    prog,
    progress,
    require_gallery,
)

EXPORT_FORMAT: Final = "facestream-gallery"
#: Version 2 adds each sample's context square and geometry; version 3 calls the list
#: "people" (it was "identities"). Files of every version import.
EXPORT_VERSION: Final = 3
#: What ``enroll-dir`` does with a photo whose face is near-certainly somebody already
#: enrolled under another name.
ON_MATCH: Final = ("skip", "sample", "new")
IMAGE_SUFFIXES: Final = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


#: Bidi embeddings, overrides and isolates: printed raw they reorder the rest of the line.
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _for_terminal(text: str) -> str:
    """``text`` with control characters (ESC sequences, NUL, newlines), line separators,
    unpaired surrogates and bidi overrides escaped as Python would (``\\x1b``), so a name
    stored by an older version cannot drive the terminal or forge lines."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI_CONTROLS
        or ch == "\\" else ch
        for ch in text)


async def cmd_list(config: Config, out: TextIO) -> int:
    async with gallery_of(config) as gallery:
        people = gallery.list()
        for person in people:
            email = "email" if person.has_email else "-"
            print(f"{person.hash}  {len(person.samples):3d} samples  {email:5s}  "
                  f"{_for_terminal(person.name)}", file=out)
        print(f"{len(people)} people ({gallery.model})", file=out)
    return 0


async def cmd_add(config: Config, name: str, images: list[Path], out: TextIO) -> int:
    async with gallery_of(config) as gallery, pool_for(config) as pool:
        with progress(len(images), name) as bar:
            result = await enroll_images(gallery, pool, name, images, out, bar)
    print(f"{name}: {result.added} samples added, {len(result.skipped)} images skipped",
          file=out)
    return 0 if result.added else 1


async def cmd_enroll_dir(config: Config, root: Path, out: TextIO, on_match: str = "skip") -> int:
    """Enroll every ``root/Person_Name/*`` folder as one person, and say at the end how many
    people were enrolled, and which were not and why."""
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        print(f"error: {root} has no Person_Name/ folders of images", file=sys.stderr)
        return 2
    jobs = [(p.name.replace("_", " ").strip(), sorted(
        f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for p in folders]
    total = sum(len(images) for _, images in jobs)
    results: list[Enrolled] = []
    async with gallery_of(config) as gallery, pool_for(config) as pool:
        before = {i.hash for i in gallery.list()}
        with progress(total, "enrolling") as bar:
            for name, images in jobs:
                results.append(await enroll_images(gallery, pool, name, images, out, bar,
                                                   on_match))
        new_people = sum(1 for r in results if r.person is not None
                         and r.person.hash not in before)
        count = len(gallery.list())
    samples = sum(r.added + len(r.given) for r in results)
    skipped = sum(len(r.skipped) for r in results)
    print(f"{len(jobs)} folders: {new_people} new people enrolled, {samples} samples added, "
          f"{skipped} images skipped; the gallery has {count} people", file=out)
    missing = [r for r in results if r.person is None]
    for r in missing:
        reasons = sorted(set(r.skipped.values()))
        reasons += sorted({f"added to {i.name!r} as asked (--on-match sample)"
                           for i in r.given.values()})
        print(f"not enrolled: {r.name}: {'; '.join(reasons) or 'no images'}", file=out)
    return 0


async def cmd_delete(config: Config, person: str, out: TextIO) -> int:
    async with gallery_of(config) as gallery:
        try:
            deleted = await gallery.delete(person)
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"deleted {deleted.name} ({deleted.hash})", file=out)
    return 0


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _imported_images(sample: dict[str, Any]) -> StoredImages:
    def blob(key: str) -> bytes | None:
        return base64.b64decode(sample[key]) if sample.get(key) else None

    geometry = sample.get("geometry")
    return StoredImages(blob("crop"), blob("context"),
                        geometry if isinstance(geometry, dict) else None)


async def cmd_export(config: Config, path: Path, out: TextIO) -> int:
    async with gallery_of(config) as gallery:
        records = await gallery.records()
        doc = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "model": gallery.model,
            "exported_at": time.time(),
            # Email HMACs only mean something under the same server secret.
            "people": [
                {
                    "hash": person.hash,
                    "name": person.name,
                    "email_hmac": email_hmac,
                    "created_at": person.created_at,
                    "samples": [
                        {
                            "embedding": _b64(np.asarray(s.embedding, "<f4").tobytes()),
                            "crop": _b64(s.crop),
                            "context": _b64(s.context),
                            "geometry": s.geometry,
                            "source": s.source,
                            "created_at": s.created_at,
                        }
                        for s in samples
                    ],
                }
                for person, email_hmac, samples in records
            ],
        }
    write_private(path, json.dumps(doc))  # names, email HMACs, embeddings, faces: 0600
    print(f"exported {len(doc['people'])} people to {path}", file=out)
    return 0


async def cmd_import(config: Config, path: Path, out: TextIO) -> int:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        print(f"error: {path} is not a facestream gallery export", file=sys.stderr)
        return 1
    version = doc.get("version", 1)
    if not isinstance(version, int) or version > EXPORT_VERSION:
        print(f"error: {path} is an export of format version {version!r}, from a newer "
              f"facestream (this one reads up to {EXPORT_VERSION}): upgrade facestream",
              file=sys.stderr)
        return 1
    model = doc.get("model")
    added = skipped = 0
    async with gallery_of(config) as gallery:
        if model != gallery.model:
            print(f"error: {path} holds {model} embeddings; this gallery uses {gallery.model}",
                  file=sys.stderr)
            return 1
        # Exports of format version 2 and before listed the people as "identities".
        for entry in doc.get("people", doc.get("identities", [])):
            try:
                samples = entry["samples"]
                embs = [np.frombuffer(base64.b64decode(s["embedding"]), "<f4") for s in samples]
                images = [_imported_images(s) for s in samples]
                # The export's people were distinct there (maybe on purpose: enroll-dir
                # --on-match new): keep them so; only the same hash is the same person.
                first = await gallery.add(entry["name"], embs[0], person=entry["hash"],
                                          images=images[0], source="import",
                                          email_hmac=entry.get("email_hmac"), force=True)
                for emb, imgs in zip(embs[1:], images[1:]):
                    await gallery.add_sample(first.hash, emb, images=imgs, source="import",
                                             force=True)
                added += 1
            except AlreadyEnrolled as exc:
                print(f"skipped {entry.get('name')!r}: already enrolled as {exc.name!r}",
                      file=out)
                skipped += 1
            except StorageError:
                raise  # the disk failed, not the entry: stop with its one line
            except (GalleryError, KeyError, IndexError, TypeError, ValueError) as exc:
                print(f"skipped an invalid entry: {exc}", file=out)
                skipped += 1
    print(f"imported {added} people, skipped {skipped}", file=out)
    return 0


# -- the command ----------------------------------------------------------------------------

#: --workers: add and enroll-dir only (see ACTION_USES).
USES: Final = SHARED
#: Which shared options each action uses; any other is refused.
ACTION_USES: Final[dict[str, tuple[str, ...]]] = {
    "list": ("config", "data_dir", "model"),
    "add": SHARED,
    "enroll-dir": SHARED,
    "delete": ("config", "data_dir", "model"),
    "export": ("config", "data_dir", "model"),
    "import": ("config", "data_dir", "model"),
}
#: Actions that make a gallery if there is none; the others need one.
CREATE: Final = frozenset({"add", "enroll-dir", "import"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("faces"),
        description="Manage the gallery from the command line (safe while the server runs).",
    )
    add_shared(p, USES, workers_help="worker processes for detection and embedding "
               "(add and enroll-dir)")
    sub = actions(p)
    action(sub, "faces", "list", ACTION_USES["list"], help="list enrolled people")
    add = action(sub, "faces", "add", ACTION_USES["add"],
                 help="enroll NAME from one or more photos (or add samples)")
    add.add_argument("name")
    add.add_argument("images", nargs="+", type=Path)
    enroll = action(sub, "faces", "enroll-dir", ACTION_USES["enroll-dir"],
                    help="enroll DIR/Person_Name/*.jpg (LFW layout)")
    enroll.add_argument("dir", type=Path)
    enroll.add_argument(
        "--on-match", choices=ON_MATCH, default="skip",
        help="a photo whose face is near-certainly somebody enrolled under another name: "
        "skip it (default), add it as a sample of that person, or enroll it anyway")
    delete = action(sub, "faces", "delete", ACTION_USES["delete"], help="delete a person")
    delete.add_argument("hash")
    export = action(sub, "faces", "export", ACTION_USES["export"],
                    help="write the gallery to a JSON file")
    export.add_argument("file", type=Path)
    imp = action(sub, "faces", "import", ACTION_USES["import"],
                 help="add people from an exported JSON file")
    imp.add_argument("file", type=Path)
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args, recognition__workers=args.workers)
    out = sys.stdout
    commands = {
        "list": lambda: cmd_list(config, out),
        "add": lambda: cmd_add(config, args.name, args.images, out),
        "enroll-dir": lambda: cmd_enroll_dir(config, args.dir, out, args.on_match),
        "delete": lambda: cmd_delete(config, args.hash, out),
        "export": lambda: cmd_export(config, args.file, out),
        "import": lambda: cmd_import(config, args.file, out),
    }
    if args.action not in CREATE:
        require_gallery(config)
        return asyncio.run(commands[args.action]())
    with announce_new_gallery(config):
        return asyncio.run(commands[args.action]())


COMMAND: Final = Command("faces", USES, build_parser, run)

"""Gallery management from the command line, for scripting:

    python -m facestream faces list
    python -m facestream faces add NAME IMAGE...
    python -m facestream faces enroll-dir DIR        (DIR/Person_Name/*.jpg, like LFW)
    python -m facestream faces delete HASH
    python -m facestream faces export FILE           (JSON; never pickle)
    python -m facestream faces import FILE
    python -m facestream reembed --model NAME

They work on the data dir directly and may run while the server is up: the server notices
committed changes within a second. Faces are embedded by the same worker pool and code as the
server's uploads.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
from tqdm import tqdm

from .config import Config
from .recognition import Face, ImageError
from .storage import AlreadyEnrolled, Gallery, GalleryError, Identity, NotFound
from .workers import PoolSettings, WorkerPool

EXPORT_FORMAT: Final = "facestream-gallery"
EXPORT_VERSION: Final = 1
IMAGE_SUFFIXES: Final = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@asynccontextmanager
async def gallery_of(config: Config, check_model: bool = True) -> AsyncIterator[Gallery]:
    gallery = await Gallery.for_config(config, check_model=check_model)
    try:
        yield gallery
    finally:
        await gallery.close()


@asynccontextmanager
async def pool_for(config: Config, model: str | None = None) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(PoolSettings.from_config(config, model))
    await pool.start()
    try:
        yield pool
    finally:
        pool.close()


def _progress(total: int, what: str) -> tqdm[Any]:
    return tqdm(total=total, desc=what, unit="img", file=sys.stderr,
                disable=total < 2, leave=False)


async def faces_in(pool: WorkerPool, path: Path) -> list[Face] | str:
    """The faces in an image file, or a reason it could not be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    try:
        faces = await pool.analyze_image(data)
    except ImageError as exc:
        return exc.message
    return faces if faces else "no face found"


async def enroll_images(gallery: Gallery, pool: WorkerPool, name: str, images: Iterable[Path],
                        out: TextIO, bar: tqdm[Any] | None = None) -> tuple[int, int]:
    """Enroll ``name`` from ``images``: an identity of that name gets the faces as samples,
    otherwise the first usable image creates it. Returns (samples added, images skipped)."""
    target: Identity | None = next((i for i in gallery.list() if i.name == name), None)
    added = skipped = 0
    for path in images:
        faces = await faces_in(pool, path)
        if bar is not None:
            bar.update(1)
        if isinstance(faces, str):
            print(f"skipped {path}: {faces}", file=out)
            skipped += 1
            continue
        face = faces[0]
        assert face.embedding is not None
        try:
            if target is None:
                target = await gallery.add(name, face.embedding, crop=face.crop_jpeg)
            else:
                await gallery.add_sample(target.hash, face.embedding, crop=face.crop_jpeg)
            added += 1
        except AlreadyEnrolled as exc:
            print(f"skipped {path}: the face matches {exc.name!r} ({exc.hash[:12]})", file=out)
            skipped += 1
    return added, skipped


async def cmd_list(config: Config, out: TextIO) -> int:
    async with gallery_of(config) as gallery:
        faces = gallery.list()
        for ident in faces:
            email = "email" if ident.has_email else "-"
            print(f"{ident.hash}  {len(ident.samples):3d} samples  {email:5s}  {ident.name}",
                  file=out)
        print(f"{len(faces)} identities ({gallery.model})", file=out)
    return 0


async def cmd_add(config: Config, name: str, images: list[Path], out: TextIO) -> int:
    async with gallery_of(config) as gallery, pool_for(config) as pool:
        with _progress(len(images), name) as bar:
            added, skipped = await enroll_images(gallery, pool, name, images, out, bar)
    print(f"{name}: {added} samples added, {skipped} images skipped", file=out)
    return 0 if added else 1


async def cmd_enroll_dir(config: Config, root: Path, out: TextIO) -> int:
    people = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not people:
        print(f"error: {root} has no Person_Name/ folders of images", file=sys.stderr)
        return 2
    jobs = [(p.name.replace("_", " ").strip(), sorted(
        f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for p in people]
    total = sum(len(images) for _, images in jobs)
    added = skipped = 0
    async with gallery_of(config) as gallery, pool_for(config) as pool:
        with _progress(total, "enrolling") as bar:
            for name, images in jobs:
                a, s = await enroll_images(gallery, pool, name, images, out, bar)
                added, skipped = added + a, skipped + s
    print(f"{len(jobs)} people: {added} samples added, {skipped} images skipped", file=out)
    return 0


async def cmd_delete(config: Config, face: str, out: TextIO) -> int:
    async with gallery_of(config) as gallery:
        try:
            ident = await gallery.delete(face)
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"deleted {ident.name} ({ident.hash})", file=out)
    return 0


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


async def cmd_export(config: Config, path: Path, out: TextIO) -> int:
    async with gallery_of(config) as gallery:
        records = await gallery.records()
        doc = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "model": gallery.model,
            "exported_at": time.time(),
            # Email HMACs only mean something under the same server secret.
            "identities": [
                {
                    "hash": ident.hash,
                    "name": ident.name,
                    "email_hmac": email_hmac,
                    "created_at": ident.created_at,
                    "samples": [
                        {
                            "embedding": _b64(np.asarray(s.embedding, "<f4").tobytes()),
                            "crop": _b64(s.crop),
                            "source": s.source,
                            "created_at": s.created_at,
                        }
                        for s in samples
                    ],
                }
                for ident, email_hmac, samples in records
            ],
        }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)
    print(f"exported {len(doc['identities'])} identities to {path}", file=out)
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
    model = doc.get("model")
    added = skipped = 0
    async with gallery_of(config) as gallery:
        if model != gallery.model:
            print(f"error: {path} holds {model} embeddings; this gallery uses {gallery.model}",
                  file=sys.stderr)
            return 1
        for entry in doc.get("identities", []):
            try:
                samples = entry["samples"]
                embs = [np.frombuffer(base64.b64decode(s["embedding"]), "<f4") for s in samples]
                crops = [base64.b64decode(s["crop"]) if s.get("crop") else None for s in samples]
                first = await gallery.add(entry["name"], embs[0], face=entry["hash"],
                                          crop=crops[0], source="import",
                                          email_hmac=entry.get("email_hmac"))
                for emb, crop in zip(embs[1:], crops[1:]):
                    await gallery.add_sample(first.hash, emb, crop=crop, source="import")
                added += 1
            except AlreadyEnrolled as exc:
                print(f"skipped {entry.get('name')!r}: already enrolled as {exc.name!r}",
                      file=out)
                skipped += 1
            except (GalleryError, KeyError, IndexError, TypeError, ValueError) as exc:
                print(f"skipped an invalid entry: {exc}", file=out)
                skipped += 1
    print(f"imported {added} identities, skipped {skipped}", file=out)
    return 0


async def cmd_reembed(config: Config, model: str, drop_uncropped: bool, out: TextIO) -> int:
    """Rebuild every embedding with ``model`` from the stored crops; hashes stay the same."""
    async with gallery_of(config, check_model=False) as gallery:
        records = await gallery.records()
        samples = [s for _, _, ss in records for s in ss]
        uncropped = [s for s in samples if s.crop is None]
        if uncropped and not drop_uncropped:
            names = sorted({i.name for i, _, ss in records for s in ss if s.crop is None})
            print(f"error: {len(uncropped)} samples have no stored face crop (imported "
                  f"embeddings) and cannot be re-embedded: {', '.join(names[:10])}. "
                  "Re-run with --drop-uncropped to remove them.", file=sys.stderr)
            return 1
        todo = [s for s in samples if s.crop is not None]
        new: dict[int, Any] = {}
        failed: list[int] = []
        async with pool_for(config, model) as pool:
            with _progress(len(todo), f"re-embedding with {model}") as bar:
                for start in range(0, len(todo), 16):
                    batch = todo[start:start + 16]
                    embs = await pool.embed_crops([s.crop or b"" for s in batch])
                    for s, emb in zip(batch, embs):
                        if emb is None:
                            failed.append(s.id)
                        else:
                            new[s.id] = emb
                    bar.update(len(batch))
        await gallery.replace_embeddings(model, new, drop=[s.id for s in uncropped] + failed)
        left = len(gallery.list())
    print(f"re-embedded {len(new)} samples with {model}; {len(uncropped) + len(failed)} "
          f"dropped; {left} identities. Set recognition.model = \"{model}\" (or --model "
          f"{model}) to serve with it.", file=out)
    return 0

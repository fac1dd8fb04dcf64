"""``facestream reembed --model NAME``: rebuild every gallery embedding with another model from
the stored face crops (nobody re-enrolls; hashes stay). Stop the server first."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final, TextIO

from ..config import Config
from ..gallery_types import SampleRecord
from ..recognition import StoredFace
from .common import (
    SHARED,
    Command,
    add_shared,
    gallery_of,
    load_config,
    pool_for,
    prog,
    progress,
    require_gallery,
)

USES: Final = SHARED


def _stored(sample: SampleRecord) -> StoredFace:
    return StoredFace(sample.context, sample.geometry, sample.crop)


async def cmd_reembed(config: Config, model: str, drop_uncropped: bool, out: TextIO) -> int:
    """Rebuild every embedding with ``model`` from the stored crops; hashes stay the same."""
    async with gallery_of(config, check_model=False) as gallery:
        records = await gallery.records()
        samples = [s for _, _, ss in records for s in ss]
        uncropped = [s for s in samples if s.crop is None and s.context is None]
        if uncropped and not drop_uncropped:
            names = sorted({i.name for i, _, ss in records for s in ss if s.crop is None})
            print(f"error: {len(uncropped)} samples have no stored face crop (imported "
                  f"embeddings) and cannot be re-embedded: {', '.join(names[:10])}. "
                  "Re-run with --drop-uncropped to remove them.", file=sys.stderr)
            return 1
        todo = [(s.id, _stored(s)) for s in samples
                if s.crop is not None or s.context is not None]
        # "Not X" faces too, from their crops: a negative left with the old model would
        # no longer keep its face from being named X.
        negatives = [(n, StoredFace(None, None, crop))
                     for n, crop in await gallery.negative_crops() if crop is not None]
        new: dict[int, Any] = {}
        new_negatives: dict[int, Any] = {}
        failed: list[int] = []
        async with pool_for(config, model) as pool:
            with progress(len(todo) + len(negatives), f"re-embedding with {model}") as bar:
                for rows, done, lost in ((todo, new, failed), (negatives, new_negatives, [])):
                    for start in range(0, len(rows), 16):
                        batch = rows[start:start + 16]
                        embs = await pool.embed_stored([face for _, face in batch])
                        for (row, _), emb in zip(batch, embs):
                            if emb is None:
                                lost.append(row)
                            else:
                                done[row] = emb
                        bar.update(len(batch))
        await gallery.replace_embeddings(model, new, drop=[s.id for s in uncropped] + failed,
                                         negatives=new_negatives)
        left = len(gallery.list())
    kept = f"; {len(new_negatives)} \"not this person\" faces" if new_negatives else ""
    print(f"re-embedded {len(new)} samples with {model}; {len(uncropped) + len(failed)} "
          f"dropped{kept}; {left} people. Set recognition.model = \"{model}\" (or --model "
          f"{model}) to serve with it.", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("reembed"),
        description="Rebuild every gallery embedding with another model from the stored face "
        "crops (nobody re-enrolls; hashes stay). Stop the server first.",
    )
    add_shared(p, USES, model_required=True, model_help="the model to embed with")
    p.add_argument("--drop-uncropped", action="store_true",
                   help="remove samples without a stored crop instead of refusing")
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args, recognition__workers=args.workers, model=False)
    require_gallery(config)
    return asyncio.run(cmd_reembed(config, args.model, args.drop_uncropped, sys.stdout))


COMMAND: Final = Command("reembed", USES, build_parser, run)

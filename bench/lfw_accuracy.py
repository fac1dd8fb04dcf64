"""Verification accuracy on LFW-format pairs through the server's own upload path.

Every image goes through ``WorkerPool.analyze_image`` exactly as a ``POST /process-frame``
upload does (decode, dlib HOG detection, 5-point alignment, DeepFace embedding), using all
worker processes. A pair whose image has no detected face counts as "different". Prints
accuracy at the configured threshold, the best threshold with 10-fold cross-validation (the
threshold is picked on 9 folds and scored on the tenth), and time per image.

    python bench/lfw_accuracy.py [--lfw ../shared/data/faces/lfw] [--model Dlib] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np

from facestream import weights
from facestream.config import Config
from facestream.workers import PoolSettings, WorkerPool

ROOT = Path(__file__).resolve().parents[1]


def read_pairs(lfw: Path) -> list[tuple[str, int, str, int, bool]]:
    pairs = []
    for line in (lfw / "pairs.txt").read_text().strip().splitlines()[1:]:
        p = line.split("\t")
        if len(p) == 3:
            pairs.append((p[0], int(p[1]), p[0], int(p[2]), True))
        elif len(p) == 4:
            pairs.append((p[0], int(p[1]), p[2], int(p[3]), False))
    return pairs


async def embed_all(pool: WorkerPool, paths: list[Path]) -> dict[Path, np.ndarray | None]:
    out: dict[Path, np.ndarray | None] = {}
    sem = asyncio.Semaphore(pool.size)

    async def one(path: Path) -> None:
        async with sem:
            faces = await pool.analyze_image(path.read_bytes())
        out[path] = faces[0].embedding if faces else None

    await asyncio.gather(*(one(p) for p in paths))
    return out


def accuracy(sims: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((sims >= threshold) == same).mean())


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    candidates = np.unique(sims)
    scores = [accuracy(sims, same, t) for t in candidates]
    return float(candidates[int(np.argmax(scores))])


def cross_validated(sims: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """Mean accuracy over folds of a threshold chosen on the other folds; mean threshold."""
    idx = np.random.default_rng(0).permutation(len(sims))
    accs, ths = [], []
    for k in range(folds):
        test = idx[k::folds]
        train = np.setdiff1d(idx, test)
        t = best_threshold(sims[train], same[train])
        accs.append(accuracy(sims[test], same[test], t))
        ths.append(t)
    return float(np.mean(accs)), float(np.mean(ths))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, default=ROOT.parent / "shared/data/faces/lfw")
    ap.add_argument("--model", default="Dlib")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/lfw.json")
    args = ap.parse_args()

    weights.provision()
    weights.check(args.model)
    threshold = Config().recognition.threshold(args.model)
    pairs = read_pairs(args.lfw)
    paths = sorted({args.lfw / n / f"{n}_{i:04d}.jpg" for a, i, b, j, _ in pairs
                    for n, i in ((a, i), (b, j))})
    pool = WorkerPool(PoolSettings(args.model, args.workers, 640, 0, 40_000_000))
    await pool.start()
    try:
        t0 = time.perf_counter()
        emb = await embed_all(pool, paths)
        elapsed = time.perf_counter() - t0
    finally:
        pool.close()

    sims, same = [], []
    for a, i, b, j, s in pairs:
        ea = emb[args.lfw / a / f"{a}_{i:04d}.jpg"]
        eb = emb[args.lfw / b / f"{b}_{j:04d}.jpg"]
        sims.append(float(ea @ eb) if ea is not None and eb is not None else -1.0)
        same.append(s)
    sims_a, same_a = np.array(sims), np.array(same)
    cv_acc, cv_th = cross_validated(sims_a, same_a)
    report = {
        "model": args.model,
        "pairs": len(pairs),
        "images": len(paths),
        "no_face": sorted(p.name for p, e in emb.items() if e is None),
        "threshold": threshold,
        "accuracy_at_threshold": accuracy(sims_a, same_a, threshold),
        "cv10_accuracy": cv_acc,
        "cv10_mean_threshold": cv_th,
        "seconds_per_image": elapsed / len(paths),
        "workers": args.workers,
        "total_seconds": elapsed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"model {args.model}, {len(pairs)} pairs, {len(paths)} images "
          f"({len(report['no_face'])} without a detected face)")
    print(f"accuracy at threshold {threshold}: {report['accuracy_at_threshold']:.2%}")
    print(f"10-fold cross-validated accuracy: {cv_acc:.2%} (mean threshold {cv_th:.3f})")
    print(f"{elapsed:.1f} s for {len(paths)} images with {args.workers} workers: "
          f"{report['seconds_per_image'] * 1000:.0f} ms per image")


if __name__ == "__main__":
    asyncio.run(main())

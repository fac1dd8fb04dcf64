"""``python -m facestream evaluate PATH``: measure verification accuracy on labelled faces and
suggest a threshold, through exactly the server's detection, alignment and embedding code.

PATH is an LFW-format folder (``pairs.txt`` plus ``Person/Person_NNNN.jpg``) or a folder of
identities (``Person/*.jpg``): then every same-person pair is used, with as many different-
person pairs drawn at random (seeded), so accuracy is not dominated by easy negatives.

Every image goes through the worker pool the server uses for uploads. A pair with an image in
which no face was found counts as "different" (the system could not verify it), and those
images are listed. The report has accuracy at the configured threshold, the best threshold
with its k-fold cross-validated accuracy (chosen on k-1 folds, scored on the k-th), ROC AUC,
TAR at FAR 1e-2 and 1e-3, and time per image; it is printed, written to ``report.json`` and
drawn as ``roc.png`` and ``histogram.png``. ``--apply`` writes the suggested threshold into
the config file, for the evaluated model only.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from .config import Config
from .manage import faces_in, pool_for
from .workers import WorkerPool

FOLDS: Final = 10
FARS: Final = (1e-2, 1e-3)


class DatasetError(ValueError):
    pass


@dataclass
class Dataset:
    kind: str  # "lfw" or "folders"
    images: list[Path]
    pairs: list[tuple[int, int, bool]]  # image index, image index, same person


def load_dataset(root: Path, limit: int | None = None, seed: int = 0) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    rng = random.Random(seed)
    index: dict[Path, int] = {}
    images: list[Path] = []

    def idx(path: Path) -> int:
        if path not in index:
            index[path] = len(images)
            images.append(path)
        return index[path]

    pairs_file = root / "pairs.txt"
    raw: list[tuple[Path, Path, bool]] = []
    if pairs_file.is_file():
        kind = "lfw"
        for line in pairs_file.read_text().strip().splitlines()[1:]:
            p = line.split()
            if len(p) == 3:
                a, b = (p[0], int(p[1])), (p[0], int(p[2]))
            elif len(p) == 4:
                a, b = (p[0], int(p[1])), (p[2], int(p[3]))
            else:
                continue
            raw.append((root / a[0] / f"{a[0]}_{a[1]:04d}.jpg",
                        root / b[0] / f"{b[0]}_{b[1]:04d}.jpg", len(p) == 3))
    else:
        kind = "folders"
        people = {
            d.name: sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
            for d in sorted(root.iterdir()) if d.is_dir()
        }
        people = {k: v for k, v in people.items() if v}
        if len(people) < 2:
            raise DatasetError(f"{root} needs pairs.txt or at least two Person/ folders")
        same = [(a, b, True) for files in people.values()
                for i, a in enumerate(files) for b in files[i + 1:]]
        names = list(people)
        different: set[tuple[Path, Path]] = set()
        wanted = min(len(same) or 1, sum(len(v) for v in people.values()) ** 2)
        for _ in range(wanted * 20):
            if len(different) >= wanted:
                break
            x, y = rng.sample(names, 2)
            different.add((rng.choice(people[x]), rng.choice(people[y])))
        raw = same + [(a, b, False) for a, b in sorted(different)]
    if not raw:
        raise DatasetError(f"no pairs found in {root}")
    if limit is not None and limit < len(raw):
        pos = [r for r in raw if r[2]]
        neg = [r for r in raw if not r[2]]
        k = limit // 2
        raw = rng.sample(pos, min(k, len(pos))) + rng.sample(neg, min(limit - k, len(neg)))
    pairs = [(idx(a), idx(b), same) for a, b, same in raw]
    return Dataset(kind, images, pairs)


async def embed_images(
    pool: WorkerPool, images: Sequence[Path], show_progress: bool = True
) -> tuple[list[NDArray[np.float32] | None], dict[str, str], float]:
    """Embedding of each image's largest face (None if none), failures by path, seconds."""
    out: list[NDArray[np.float32] | None] = [None] * len(images)
    failures: dict[str, str] = {}
    sem = asyncio.Semaphore(pool.size * 2)
    bar = tqdm(total=len(images), desc="embedding", unit="img", file=sys.stderr,
               disable=not show_progress, leave=False)

    async def one(i: int, path: Path) -> None:
        async with sem:
            faces = await faces_in(pool, path)
        if isinstance(faces, str):
            failures[str(path)] = faces
        else:
            out[i] = faces[0].embedding
        bar.update(1)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, p) for i, p in enumerate(images)))
    bar.close()
    return out, failures, time.perf_counter() - t0


def similarities(embs: Sequence[NDArray[np.float32] | None],
                 pairs: Sequence[tuple[int, int, bool]]) -> tuple[NDArray[Any], NDArray[Any]]:
    sims = np.array([
        float(embs[a] @ embs[b]) if embs[a] is not None and embs[b] is not None else -np.inf
        for a, b, _ in pairs
    ])
    return sims, np.array([same for _, _, same in pairs], dtype=bool)


def accuracy(sims: NDArray[Any], same: NDArray[Any], threshold: float) -> float:
    return float(((sims >= threshold) == same).mean())


def best_threshold(sims: NDArray[Any], same: NDArray[Any]) -> float:
    """The threshold of highest accuracy: midpoints between observed similarities; among
    equally good ones, the middle one (the most margin on both sides)."""
    finite = np.unique(sims[np.isfinite(sims)])
    if finite.size == 0:
        return 1.0
    candidates = np.concatenate([[finite[0] - 1e-6], (finite[:-1] + finite[1:]) / 2,
                                 [finite[-1] + 1e-6]])
    scores = np.array([accuracy(sims, same, t) for t in candidates])
    best = np.flatnonzero(scores == scores.max())
    return float(candidates[best[len(best) // 2]])


def cross_validated(sims: NDArray[Any], same: NDArray[Any], folds: int = FOLDS,
                    seed: int = 0) -> tuple[float, list[float]]:
    folds = max(2, min(folds, len(sims) // 2))
    order = np.random.default_rng(seed).permutation(len(sims))
    accs, ths = [], []
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        t = best_threshold(sims[train], same[train])
        accs.append(accuracy(sims[test], same[test], t) * len(test))
        ths.append(t)
    return float(sum(accs) / len(sims)), ths


def roc(sims: NDArray[Any], same: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any], float]:
    """False and true positive rates at every threshold (descending), and the area under."""
    order = np.argsort(-sims, kind="stable")
    labels = same[order]
    pos, neg = max(1, int(labels.sum())), max(1, int((~labels).sum()))
    tpr = np.concatenate([[0.0], np.cumsum(labels) / pos])
    fpr = np.concatenate([[0.0], np.cumsum(~labels) / neg])
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def tar_at_far(fpr: NDArray[Any], tpr: NDArray[Any], far: float) -> float:
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def plot(out: Path, sims: NDArray[Any], same: NDArray[Any], fpr: NDArray[Any],
         tpr: NDArray[Any], configured: float, suggested: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.plot(np.maximum(fpr, 1e-4), tpr, lw=2)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC: {title}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "roc.png")
    plt.close(fig)

    finite = np.isfinite(sims)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    bins = np.linspace(float(sims[finite].min()), 1.0, 60) if finite.any() else 10
    ax.hist(sims[finite & same], bins=bins, alpha=0.6, label="same person")
    ax.hist(sims[finite & ~same], bins=bins, alpha=0.6, label="different people")
    ax.axvline(configured, color="k", ls="--", label=f"configured {configured:.3f}")
    ax.axvline(suggested, color="r", ls=":", label=f"suggested {suggested:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.set_title(f"Similarity of pairs: {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "histogram.png")
    plt.close(fig)


def apply_threshold(config_path: Path, model: str, threshold: float) -> None:
    """Set ``[recognition.thresholds] MODEL`` in the config file, keeping everything else
    (comments, order, other models) as it was."""
    import tomlkit

    doc = tomlkit.parse(config_path.read_text(encoding="utf-8")) if config_path.is_file() \
        else tomlkit.document()
    recognition = doc.get("recognition")
    if recognition is None:
        recognition = tomlkit.table()
        doc["recognition"] = recognition
    thresholds = recognition.get("thresholds")
    if thresholds is None:
        thresholds = tomlkit.table()
        recognition["thresholds"] = thresholds
    thresholds[model] = round(threshold, 4)
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    tmp.replace(config_path)


async def run(config: Config, root: Path, out_dir: Path, limit: int | None, seed: int,
              show_progress: bool, stream: TextIO) -> dict[str, Any]:
    r = config.recognition
    data = load_dataset(root, limit, seed)
    async with pool_for(config) as pool:
        embs, failures, seconds = await embed_images(pool, data.images, show_progress)
    sims, same = similarities(embs, data.pairs)
    configured = r.threshold()
    suggested = best_threshold(sims, same)
    cv_acc, cv_ths = cross_validated(sims, same, seed=seed)
    fpr, tpr, auc = roc(sims, same)
    negatives = int((~same).sum())
    report: dict[str, Any] = {
        "dataset": str(root),
        "kind": data.kind,
        "model": r.model,
        "detector": r.detector,
        "pairs": len(data.pairs),
        "same_pairs": int(same.sum()),
        "different_pairs": negatives,
        "images": len(data.images),
        "configured_threshold": configured,
        "accuracy_at_configured": accuracy(sims, same, configured),
        "best_threshold": round(suggested, 4),
        "accuracy_at_best": accuracy(sims, same, suggested),
        "cv_folds": len(cv_ths),
        "cv_accuracy": cv_acc,
        "cv_thresholds": [round(t, 4) for t in cv_ths],
        "roc_auc": auc,
        "tar_at_far": {f"{far:g}": tar_at_far(fpr, tpr, far) for far in FARS},
        "far_resolution": 1.0 / negatives if negatives else None,
        "pairs_unverifiable": int((~np.isfinite(sims)).sum()),
        "images_failed": failures,
        "seconds": seconds,
        "seconds_per_image": seconds / max(1, len(data.images)),
        "workers": r.workers,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot(out_dir, sims, same, fpr, tpr, configured, suggested, f"{r.model} + {r.detector}")
    print_report(report, out_dir, stream)
    return report


def print_report(rep: dict[str, Any], out_dir: Path, stream: TextIO) -> None:
    def line(label: str, value: str) -> None:
        print(f"  {label:<38} {value}", file=stream)

    print(f"{rep['model']} + {rep['detector']} on {rep['dataset']} ({rep['kind']}): "
          f"{rep['pairs']} pairs ({rep['same_pairs']} same, {rep['different_pairs']} "
          f"different), {rep['images']} images", file=stream)
    line(f"accuracy at threshold {rep['configured_threshold']:.4f}",
         f"{rep['accuracy_at_configured']:.2%}")
    line(f"best threshold {rep['best_threshold']:.4f}", f"{rep['accuracy_at_best']:.2%}")
    line(f"{rep['cv_folds']}-fold cross-validated accuracy", f"{rep['cv_accuracy']:.2%}")
    line("ROC AUC", f"{rep['roc_auc']:.4f}")
    res = rep["far_resolution"]
    for far, tar in rep["tar_at_far"].items():
        note = " (fewer negatives than 1/FAR: coarse)" if res and res > float(far) else ""
        line(f"TAR at FAR {far}", f"{tar:.2%}{note}")
    line("images without a usable face", str(len(rep["images_failed"])))
    line("time per image", f"{rep['seconds_per_image'] * 1000:.0f} ms "
                           f"({rep['workers']} workers, {rep['seconds']:.1f} s in all)")
    for path, why in sorted(rep["images_failed"].items())[:20]:
        print(f"    {path}: {why}", file=stream)
    if len(rep["images_failed"]) > 20:
        print(f"    ... and {len(rep['images_failed']) - 20} more in report.json", file=stream)
    print(f"  wrote {out_dir / 'report.json'}, roc.png, histogram.png", file=stream)

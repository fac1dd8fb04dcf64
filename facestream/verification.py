"""Face verification measured on labelled photos: the pairs of a dataset (an LFW-format
folder, or ``Person/*.jpg`` folders) and the numbers ``facestream evaluate`` reports on their
similarities: accuracy at a threshold, the best threshold, its k-fold cross-validated
accuracy, the ROC curve and TAR at a FAR. Plain numpy, no models: the command embeds the
photos with the server's pipeline; bench/recognition_compare.py uses these functions too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

FOLDS: Final = 10


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

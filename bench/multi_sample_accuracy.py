"""Open-set identification with several enrollment samples per identity: best-of vs centroid.

Every labelled single-person image under ../shared/data/faces (deepface, face_recognition,
facenet_pytorch, lfw) is embedded once through the production path (``decode_image``, then
``Recognizer.analyze_image``, largest face) and cached in bench/results/. facenet_pytorch's
Angelina Jolie is merged into deepface_id01. Files of one photograph (the Obama portrait's
resolution ladder and crops, img11 and its reflection, a facenet aligned crop and its original)
form one "shot"; a split uses one file per shot, so no probe has a copy of itself enrolled.

Each random split (fixed seed) enrolls G random identities out of those with >= 2 shots. Each
holds out one random shot as its probe; of its other shots, in random order, the first k = 1,
2, 3 or all ("all-1") are enrolled (fewer if it has fewer). Identities not enrolled, and every
LFW person with one image, are strangers: all their images are stranger probes. Strategies:
  best      an identity scores the maximum cosine similarity over its samples;
  mean      it scores the mean similarity of its samples (the server's "centroid" matching:
            the dot product with the plain mean of their embeddings);
  centroid  it scores the similarity to the L2-normalised mean of its samples;
  robust    like centroid, but with >= 3 samples the one farthest from the mean is dropped.
Only probes of identities with >= 4 shots count, so every k is scored on the same probes.
correct: top identity right and score >= threshold; wrong: top identity another enrolled person
and score >= threshold; FAR: a stranger's best score >= threshold; pairFAR: share of (stranger,
enrolled identity) scores >= threshold (to 1e-4), independent of G: FAR ~ 1 - (1 - pairFAR)^G.
Rates are given at the configured open-set policy's threshold for G people (for "best", G
times the samples, as the server counts them) and at each row's own threshold for a 1% FAR.

    python bench/multi_sample_accuracy.py [--model SFace|Dlib] [--splits 1000] [--gallery 10 70]
                                          [--seed 0] [--refresh]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from facestream.config import Config

Vectors = NDArray[np.float32]
People = dict[str, list[list[Vectors]]]  # identity -> its shots -> each file's embedding

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "multi_sample_embeddings.npz"
MODEL = "SFace"  # --model
DETECTOR = {"SFace": "yunet", "Dlib": "hog"}
MERGE = {"Angelina Jolie": "deepface_id01"}
#: Files that are one photograph (resized, cropped, mirrored or re-aligned) -> shot name.
SAME_SHOT = {
    r"face_recognition/(examples/knn_examples/train/obama/obama|examples/obama(-\d+p|_small)"
    r"|tests/test_images/obama_partial_face2?)\.jpg": "obama-portrait",
    r"deepface/img11(_reflection)?\.jpg": "deepface-img11",
    r"facenet_pytorch/test_images(_aligned)?/(\w+)/1\.(jpg|png)": r"facenet-\2",
}
KS = {"1": 1, "2": 2, "3": 3, "all-1": 10**6}
STRATEGIES = ("best", "mean", "centroid", "robust")
CORE_SHOTS = 4
TARGET_FAR = 0.01
BINS = 20_000  # histogram of (stranger, identity) scores over [-1, 1]


def load_labels() -> dict[str, str]:
    """Relative image path -> identity, for every labelled single-person image."""
    labels: dict[str, str] = {}
    for source in ("deepface", "face_recognition", "facenet_pytorch"):
        with (FACES / source / "identities.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                who = row["identity"]
                if who != "UNLABELED" and not who.startswith("MULTI"):
                    labels[f"{source}/{row['file']}"] = MERGE.get(who, who)
    for person in sorted(p for p in (FACES / "lfw").iterdir() if p.is_dir()):
        for image in sorted(person.glob("*.jpg")):
            labels[f"lfw/{person.name}/{image.name}"] = f"lfw:{person.name}"
    return labels


def shot_key(rel: str) -> str:
    for pattern, name in SAME_SHOT.items():
        if m := re.fullmatch(pattern, rel):
            return m.expand(name)
    return rel


def embed(paths: list[str], refresh: bool) -> dict[str, Vectors | None]:
    """Embedding of each image's largest face (None: no face), cached in an .npz."""
    cached: dict[str, Vectors | None] = {}
    if CACHE.exists() and not refresh:
        data = np.load(CACHE)
        if str(data["model"]) == MODEL:  # a row of NaN: no face found
            for rel, emb in zip(data["paths"], data["emb"]):
                cached[str(rel)] = None if np.isnan(emb).any() else emb
    todo = [p for p in paths if p not in cached]
    if todo:
        from facestream import weights
        from facestream.images import decode_image
        from facestream.recognition import Recognizer, configure_environment

        configure_environment()
        weights.provision()
        rec = Recognizer(MODEL, detector=DETECTOR[MODEL])
        for i, rel in enumerate(todo, 1):
            faces = rec.analyze_image(decode_image((FACES / rel).read_bytes(), 40_000_000))
            cached[rel] = faces[0].embedding if faces else None
            print(f"embedded {i}/{len(todo)}", end="\r" if i < len(todo) else "\n", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        keys = sorted(cached)
        emb = [np.full(128, np.nan, np.float32) if (e := cached[k]) is None else e for k in keys]
        np.savez(CACHE, model=np.array(MODEL), paths=np.array(keys), emb=np.stack(emb))
    return {p: cached[p] for p in paths}


def load_people(refresh: bool) -> tuple[People, list[str]]:
    """Embeddings grouped by identity and shot, and the images with no face found."""
    labels = load_labels()
    embs = embed(sorted(labels), refresh)
    shots: dict[str, dict[str, list[Vectors]]] = {}
    for rel, who in labels.items():
        if (e := embs[rel]) is not None:
            shots.setdefault(who, {}).setdefault(shot_key(rel), []).append(e)
    people = {w: list(s.values()) for w, s in sorted(shots.items())}
    return people, sorted(p for p, e in embs.items() if e is None)


def template(samples: Vectors, strategy: str) -> Vectors:
    """The rows that stand for one identity under ``strategy``."""
    if strategy == "best" or len(samples) == 1:
        return samples
    mean = samples.mean(axis=0)
    if strategy == "mean":
        return mean[None, :]
    if strategy == "robust" and len(samples) >= 3:
        keep = np.argsort(samples @ (mean / np.linalg.norm(mean)))[1:]
        mean = samples[keep].mean(axis=0)
    centroid: Vectors = (mean / np.linalg.norm(mean))[None, :]
    return centroid


def identify(gallery: list[Vectors], probes: Vectors, strategy: str) -> Vectors:
    """Score of every probe (axis 0) for every gallery identity (axis 1)."""
    rows = [template(g, strategy) for g in gallery]
    starts = np.cumsum([0] + [len(r) for r in rows[:-1]])
    scores: Vectors = np.maximum.reduceat(probes @ np.concatenate(rows).T, starts, axis=1)
    return scores


@dataclass
class Tally:
    """Outcomes of one (strategy, k) over all splits."""

    right: list[NDArray[np.bool_]] = field(default_factory=list)
    score: list[Vectors] = field(default_factory=list)
    stranger: list[Vectors] = field(default_factory=list)
    pairs: NDArray[np.int64] = field(default_factory=lambda: np.zeros(BINS + 1, np.int64))

    def add(self, scores: Vectors, truth: NDArray[np.int64], strangers: Vectors) -> None:
        self.right.append(scores.argmax(axis=1) == truth)
        self.score.append(scores.max(axis=1))
        self.stranger.append(strangers.max(axis=1))
        bins = np.clip(((strangers.ravel() + 1) * BINS / 2).astype(np.int64), 0, BINS)
        self.pairs += np.bincount(bins, minlength=BINS + 1)

    def rates(self, threshold: float) -> dict[str, float]:
        right, accepted = np.concatenate(self.right), np.concatenate(self.score) >= threshold
        first_bin = int(np.ceil((threshold + 1) * BINS / 2 - 1e-6))
        return {
            "threshold": round(threshold, 4),
            "correct": float((right & accepted).mean()),
            "wrong": float((~right & accepted).mean()),
            "far": float((np.concatenate(self.stranger) >= threshold).mean()),
            "pair_far": float(self.pairs[first_bin:].sum() / self.pairs.sum()),
        }

    def threshold_at_far(self, far: float) -> float:
        """The lowest threshold at which at most ``far`` of the strangers are accepted."""
        s = np.sort(np.concatenate(self.stranger))[::-1]
        return float(np.nextafter(s[int(far * len(s))], np.float32(np.inf)))


@dataclass
class Row:
    strategy: str
    k: str
    configured: dict[str, float]
    far_1pct: dict[str, float]
    rank1: float  # top identity right, whatever the score


def evaluate(people: People, size: int, splits: int, seed: int) -> list[Row]:
    """Rates per strategy and k with ``size`` identities enrolled in every split."""
    multi = [w for w, s in people.items() if len(s) >= 2]
    singles = [e for s in people.values() if len(s) == 1 for shot in s for e in shot]
    rng = np.random.default_rng(seed)
    tallies = {(st, k): Tally() for st in STRATEGIES for k in KS}
    for _ in range(splits):
        order = rng.permutation(len(multi))
        others = [e for i in order[size:] for shot in people[multi[i]] for e in shot]
        strangers = np.stack(singles + others)
        pools, probes, truth = [], [], []
        for i, who in enumerate(multi[j] for j in order[:size]):
            picks = [shot[rng.integers(len(shot))] for shot in people[who]]
            perm = rng.permutation(len(picks))
            pools.append(np.stack([picks[j] for j in perm[1:]]))
            if len(picks) >= CORE_SHOTS:
                probes.append(picks[perm[0]])
                truth.append(i)
        probe_mat = np.stack(probes) if probes else np.zeros((0, 128), np.float32)
        for (strategy, k), tally in tallies.items():
            gallery = [pool[: KS[k]] for pool in pools]
            tally.add(
                identify(gallery, probe_mat, strategy),
                np.array(truth, np.int64),
                identify(gallery, strangers, strategy),
            )
    policy = Config().recognition.policy(MODEL)

    def configured(strategy: str, k: str) -> float:
        comparisons = size * (min(KS[k], 3) if strategy == "best" else 1)
        return policy.identify_threshold(comparisons)

    return [
        Row(
            strategy,
            k,
            tally.rates(configured(strategy, k)),
            tally.rates(tally.threshold_at_far(TARGET_FAR)),
            float(np.concatenate(tally.right).mean()),
        )
        for (strategy, k), tally in tallies.items()
    ]


def print_table(size: int, rows: list[Row]) -> None:
    head = f"at the policy ({rows[0].configured['threshold']})"
    print(f"\n{size} identities enrolled | {head:<31}| at stranger FAR 1%")
    print(f"{'strategy':>14} {'k':>6} | correct wrong  FAR    pairFAR | ", end="")
    print("thresh correct wrong  pairFAR | rank-1")
    for r in rows:
        c, f = r.configured, r.far_1pct
        print(
            f"{r.strategy:>14} {r.k:>6} | {c['correct']:6.1%} {c['wrong']:5.2%} {c['far']:6.2%} "
            f"{c['pair_far']:6.3%} | {f['threshold']:.4f} {f['correct']:6.1%} {f['wrong']:5.2%} "
            f"{f['pair_far']:6.3%} | {r.rank1:6.1%}"
        )


def main() -> None:
    global MODEL, CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=1000, help="random splits per gallery size")
    parser.add_argument("--gallery", type=int, nargs="+", default=[10, 70], help="enrolled ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refresh", action="store_true", help="re-embed every image")
    parser.add_argument("--model", choices=sorted(DETECTOR), default=MODEL)
    args = parser.parse_args()
    MODEL = args.model
    CACHE = RESULTS / f"multi_sample_embeddings_{MODEL}.npz"
    people, no_face = load_people(args.refresh)
    shots = [len(s) for s in people.values()]
    images = sum(len(shot) for s in people.values() for shot in s) + len(no_face)
    print(
        f"{images} images, no face found in {len(no_face)} {no_face}; identities with >= 2 "
        f"shots: {sum(n >= 2 for n in shots)}, of which >= {CORE_SHOTS} (probes): "
        f"{sum(n >= CORE_SHOTS for n in shots)}; with one: {shots.count(1)}; {args.splits} splits"
    )
    result: dict[str, object] = {
        "model": MODEL,
        "seed": args.seed,
        "splits": args.splits,
        "images": images,
        "no_face": no_face,
        "probe_identities": [w for w, s in people.items() if len(s) >= CORE_SHOTS],
    }
    for size in args.gallery:
        rows = evaluate(people, size, args.splits, args.seed)
        print_table(size, rows)
        result[f"gallery_{size}"] = [asdict(r) for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"multi_sample_{MODEL}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

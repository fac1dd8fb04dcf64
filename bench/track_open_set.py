#!/usr/bin/env python3
"""Open set over a track: does deciding on several far looks keep strangers strangers?

A far face gives a track many poor looks. facestream names a track on the quality-weighted
mean of its best looks, not renormalised (``tracking.Track.evidence``): its score is the
weighted mean of the looks' own similarities. This measures, with the real model on the
shared LFW subset, how often strangers are named and enrolled people are named right when
deciding on one look, on that evidence, on the renormalised mean of the looks (what
facestream did before), and as Frigate does (each look's best match; the name with the most
face area behind it, if its area-weighted mean score passes; no answer on a tie).

Method: people with two or more photos are enrolled from their first photo, and half of
the one-photo people too (a gallery of a few hundred); the other one-photo people are the
strangers. A "track" of a person is ``--looks`` looks of one photo the gallery does not
hold (enrolled people: their second photo; strangers: their only one), each scaled so the
face is 24-48 px wide (random), shifted by a pixel or two and re-encoded as a JPEG of
quality 70, put on a dark canvas and found by YuNet, upsampled as facestream's tracked-face
regions do. Each look is embedded by SFace with its quality (recognition.look_quality).
The open-set policy is the server's (recognition.stranger_far 1%) for the gallery's size.

    .venv/bin/python bench/track_open_set.py [--looks 8] [--seed 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestream.config import Config
from facestream.matching import GalleryIndex, face_hash, normalize
from facestream.recognition import Recognizer, RegionImage, look_quality
from facestream.regions import TRACK_FACE_PX

LFW = REPO.parent / "shared" / "data" / "faces" / "lfw"
#: LFW deep-funneled faces are about this wide in their 250 px photos.
LFW_FACE_PX = 100


def far_look(recognizer: Recognizer, photo: np.ndarray, rng: random.Random
             ) -> tuple[np.ndarray, float, float] | None:
    """One far look of ``photo``: (embedding, quality, face width), or None if no face is
    found."""
    face_px = rng.uniform(24, 48)
    s = face_px / LFW_FACE_PX
    small = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    _, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    pad = round(face_px * 0.7)
    dx, dy = rng.randint(0, 2), rng.randint(0, 2)
    canvas = cv2.copyMakeBorder(small, pad + dy, pad, pad + dx, pad, cv2.BORDER_CONSTANT,
                                value=(28, 28, 28))
    region = RegionImage(canvas, 0, 0, max(1.0, TRACK_FACE_PX / face_px))
    dets = recognizer._detect_region(region)
    if not dets:
        return None
    det = max(dets, key=lambda d: d.score)
    chip = recognizer.aligned(canvas, det)
    if chip is None:
        return None
    (emb,) = recognizer.embed_chips([chip])
    if emb is None:
        return None
    side = max(det.box[2], det.box[3])
    return emb, look_quality(det, side, chip), side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--looks", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/track_open_set.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    recognizer = Recognizer("SFace")
    people: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(LFW.glob("*/*.jpg")):
        people[path.parent.name].append(path)
    multi = sorted(p for p, v in people.items() if len(v) >= 2)
    single = sorted(p for p, v in people.items() if len(v) == 1)
    rng.shuffle(single)
    strangers, extra = single[: len(single) // 2], single[len(single) // 2:]

    samples = []
    for person in multi + extra:
        faces = recognizer.analyze_image(cv2.imread(str(people[person][0])))
        if faces and faces[0].embedding is not None:
            samples.append((face_hash(faces[0].embedding), person, [faces[0].embedding]))
    policy = Config().recognition.policy("SFace")
    index = GalleryIndex.from_samples(samples, "centroid", policy)
    hash_of = {name: h for h, name, _ in samples}
    print(f"gallery: {len(samples)} people; identify threshold "
          f"{policy.identify_threshold(index.comparisons):.3f}")

    sizes: dict[int, float] = {}

    def track(photo: Path) -> list[tuple[np.ndarray, float]]:
        image = cv2.imread(str(photo))
        looks = []
        for _ in range(args.looks):
            look = far_look(recognizer, image, rng)
            if look is not None:
                sizes[id(look[0])] = look[2]
                looks.append(look[:2])
        return looks

    def areas(looks: list[tuple[np.ndarray, float]]) -> list[float]:
        return [sizes[id(e)] ** 2 for e, _ in looks]

    def decisions(looks: list[tuple[np.ndarray, float]]) -> dict[str, list[str | None]]:
        weights = np.array([max(0.02, q) for _, q in looks], dtype=np.float32)
        kept = np.argsort(-weights)[:8]
        stacked = np.stack([looks[i][0] for i in kept])
        evidence = (weights[kept] @ stacked) / float(weights[kept].sum())
        vectors = {"one look": [e for e, _ in looks], "evidence": [evidence],
                   "renormalised mean": [normalize(stacked.mean(axis=0))]}
        for way, vs in vectors.items():
            best[way] += [m.similarity for v in vs if (m := index.best(v)) is not None]
        named = {way: [m.hash if (m := index.identify(v)) else None for v in vs]
                 for way, vs in vectors.items()}
        # Frigate's way: each look's best match, the name with the most face area behind
        # it, named if its area-weighted mean score passes (no answer on a tie).
        votes: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for (e, _), area in zip(looks, areas(looks)):
            if (m := index.best(e)) is not None:
                votes[m.hash].append((area, m.similarity))
        weight = {h: sum(a for a, _ in v) for h, v in votes.items()}
        ranked = sorted(weight, key=lambda h: -weight[h])
        winner = None
        if ranked and (len(ranked) == 1 or weight[ranked[0]] > weight[ranked[1]]):
            score = sum(a * sim for a, sim in votes[ranked[0]]) / weight[ranked[0]]
            if score >= policy.identify_threshold(index.comparisons):
                winner = ranked[0]
        named["area-weighted vote"] = [winner]
        return named

    results: dict[str, dict[str, list[bool]]] = {
        "stranger named": defaultdict(list), "enrolled named right": defaultdict(list)}
    best: dict[str, list[float]] = defaultdict(list)
    for person in strangers:
        looks = track(people[person][0])
        if looks:
            for way, named in decisions(looks).items():
                results["stranger named"][way] += [h is not None for h in named]
    strangers_best = {way: {"mean": float(np.mean(v)), "p99": float(np.percentile(v, 99)),
                            "max": float(np.max(v))} for way, v in best.items()}
    for person in multi:
        if person not in hash_of:
            continue
        looks = track(people[person][1])
        if looks:
            for way, named in decisions(looks).items():
                results["enrolled named right"][way] += [h == hash_of[person] for h in named]

    table = {what: {way: {"rate": float(np.mean(v)), "n": len(v)} for way, v in ways.items()}
             for what, ways in results.items()}
    print("| | one look | track evidence (weighted, not renormalised) | renormalised mean "
          "| area-weighted vote (Frigate) |")
    print("|---|---|---|---|---|")
    for what, ways in table.items():
        cells = [f"{100 * ways[w]['rate']:.1f}% (n={ways[w]['n']})"
                 for w in ("one look", "evidence", "renormalised mean", "area-weighted vote")]
        print(f"| {what} | " + " | ".join(cells) + " |")
    print("| a stranger's best similarity: mean / 99th percentile / max | " + " | ".join(
        "{mean:.3f} / {p99:.3f} / {max:.3f}".format(**strangers_best[w])
        for w in ("one look", "evidence", "renormalised mean")) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"gallery": len(samples), "looks": args.looks,
                                    "seed": args.seed, "results": table,
                                    "strangers_best_similarity": strangers_best}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
""""Not X" negatives: do they cost true matches, and do they keep the marked face off X?

With the real model (SFace) on the shared LFW subset: every person with two or more photos
is enrolled from their first photo (the rest are their probes). Then each enrolled person X
gets a negative, the face a user would most likely have marked "not X": of all other
people's photos, the one most like X (the hardest case for X's own faces). Measured with
the server's open-set policy for the gallery's size, without negatives and with them:

- X's own probes named X (true matches; a negative must not cost any);
- the marked face named X (after "not X" it must never be);
- the marked person's other photos named X (faces "near-certainly the same" as the marked
  one should not be, when they were);
- strangers (the one-photo people not used as negatives) named as anybody.

    .venv/bin/python bench/negatives_benchmark.py [--out bench/results/negatives.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestream.config import Config  # noqa: E402
from facestream.matching import GalleryIndex, Negatives, face_hash  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw"


def embeddings() -> dict[str, list[np.ndarray]]:
    from facestream import weights
    from facestream.recognition import Recognizer, configure_environment

    configure_environment()
    weights.provision()
    recognizer = Recognizer("SFace")
    people: dict[str, list[np.ndarray]] = defaultdict(list)
    for folder in sorted(p for p in LFW.iterdir() if p.is_dir()):
        for photo in sorted(folder.glob("*.jpg")):
            faces = recognizer.analyze_image(cv2.imread(str(photo)))
            if faces and faces[0].embedding is not None:
                people[folder.name].append(faces[0].embedding)
    return people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/negatives.json")
    args = parser.parse_args()
    people = embeddings()
    enrolled = [p for p, embs in people.items() if len(embs) >= 2]
    policy = Config().recognition.policy("SFace")
    hashes = [face_hash(people[p][0]) for p in enrolled]
    index = GalleryIndex(hashes, enrolled, np.stack([people[p][0] for p in enrolled]), policy)
    others = [(p, i, e) for p, embs in people.items() for i, e in enumerate(embs)]
    marked: dict[str, tuple[str, int]] = {}
    rows = {}
    for p, h in zip(enrolled, hashes):
        q, i, e = max((o for o in others if o[0] != p), key=lambda o: float(o[2] @ people[p][0]))
        marked[p] = (q, i)
        rows[h] = e[None, :]
    with_negatives = index.with_negatives(Negatives(rows, policy.threshold))
    used = {q for q, _ in marked.values()}
    strangers = [embs[0] for p, embs in people.items() if len(embs) == 1 and p not in used]

    def count(idx: GalleryIndex) -> dict[str, float]:
        own = [idx.identify(e) for p in enrolled for e in people[p][1:]]
        truth = [p for p in enrolled for _ in people[p][1:]]
        marked_face = [idx.identify(people[q][i]) for q, i in marked.values()]
        same = [(p, idx.identify(e)) for p, (q, i) in marked.items()
                for j, e in enumerate(people[q]) if j != i]
        return {
            "true_matches": sum(m is not None and m.name == t for m, t in zip(own, truth)),
            "own_probes": len(own),
            "marked_face_named_x": sum(m is not None and m.name == p for m, p in
                                       zip(marked_face, marked)),
            "same_person_named_x": sum(m is not None and m.name == p for p, m in same),
            "same_person_probes": len(same),
            "strangers_named": sum(idx.identify(e) is not None for e in strangers),
            "strangers": len(strangers),
        }

    out = {"enrolled": len(enrolled), "threshold": policy.threshold,
           "without": count(index), "with": count(with_negatives)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

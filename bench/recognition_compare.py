#!/usr/bin/env python3
"""SFace + YuNet against Dlib + HOG, side by side in one run, on the shared LFW subset.

Every image of ``../shared/data/faces/lfw`` (567 images, 342 people) is analysed in this
process, one image at a time, by each model's production path (``Recognizer.analyze_image``:
detection, alignment, embedding), measuring the thread's CPU time: per image, and for one
embedded face (the same crop embedded again). Then, from those embeddings:

* LFW pairs (``pairs.txt``, 360 pairs): accuracy at the configured 1:1 threshold, at the best
  threshold, and 10-fold cross-validated (``facestream.verification``).
* Open set, the issue's protocol: the first photo of each person with two or more photos is
  enrolled (123 people), their other photos are probes (225), the 219 people with one photo
  are strangers. At the configured policy (``recognition.stranger_far`` 1%): strangers named,
  enrolled people named correctly / wrongly; and at the threshold that names 1% of strangers.
* Calibration held out: the policy's calibration fitted on the different-person pairs of a
  random half of the people only, and scored on the protocol restricted to the other half
  (``--splits`` random halves), so no stranger's or probe's pairs were used to fit it.
* Gallery size: for G = 1 .. 123 enrolled people drawn at random (``--draws`` each), the share
  of strangers named, with the policy and with one fixed threshold (the policy's at G = 10):
  the policy keeps it near 1%, a fixed threshold lets it grow with G.
* Margin: identification at 1% stranger FAR with a best-to-second-best margin of 0 to 0.1.
* Duplicates: with the configured ``duplicate_far``, the share of strangers (new people) that
  "already enrolled" would refuse, and of probes (people enrolled again) it catches.

    python bench/recognition_compare.py [--splits 200] [--draws 200] [--seed 0]

Writes bench/results/recognition_compare.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "faces" / "lfw"
RESULTS = REPO / "bench" / "results"
MODELS = (("SFace", "yunet"), ("Dlib", "hog"))
GALLERY_SIZES = (1, 3, 10, 30, 60, 100, 123)
MARGINS = (0.0, 0.01, 0.02, 0.05, 0.1)


def embed_all(model: str, detector: str, paths: list[Path]) -> dict[str, Any]:
    """Embeddings of each image's largest face, and CPU seconds per image and per face."""
    from facestream.images import decode_image
    from facestream.recognition import Recognizer

    rec = Recognizer(model, detector=detector, threads=1)
    embs: list[np.ndarray | None] = []
    image_cpu, face_cpu, chips = [], [], []
    for path in paths:
        image = decode_image(path.read_bytes(), 10**8)
        t0 = time.thread_time()
        faces = rec.analyze_image(image)
        image_cpu.append(time.thread_time() - t0)
        embs.append(faces[0].embedding if faces else None)
        if faces:
            # One embedded face alone: align + embed the largest face again.
            dets = rec.detect(image, 1280 if detector == "yunet" else 800, 1, still=True)
            t1 = time.thread_time()
            chip = rec.aligned(image, dets[0])
            rec.embed_chips([chip])  # type: ignore[list-item]
            face_cpu.append(time.thread_time() - t1)
            chips.append(chip)
    # The model alone, on the aligned crops (what a tracked face costs when re-embedded).
    t2 = time.thread_time()
    for chip in chips[:200]:
        rec.embed_chips([chip])
    embed_only = (time.thread_time() - t2) / min(200, len(chips))
    return {"embs": embs, "cpu_ms_per_image": 1000 * statistics.median(image_cpu),
            "cpu_ms_per_face": 1000 * statistics.median(face_cpu),
            "cpu_ms_embed_only": 1000 * embed_only,
            "no_face": sum(e is None for e in embs)}


def pairs_accuracy(embs: dict[Path, np.ndarray | None], threshold: float) -> dict[str, float]:
    from facestream.verification import accuracy, best_threshold, cross_validated, load_dataset

    data = load_dataset(LFW)
    vec = [embs.get(p) for p in data.images]
    sims = np.array([float(vec[a] @ vec[b]) if vec[a] is not None and vec[b] is not None
                     else -np.inf for a, b, _ in data.pairs])
    same = np.array([s for _, _, s in data.pairs])
    best = best_threshold(sims, same)
    cv, _ = cross_validated(sims, same)
    return {"at_default": accuracy(sims, same, threshold), "best_threshold": best,
            "at_best": accuracy(sims, same, best), "cross_validated": cv}


def open_set(gallery: dict[str, np.ndarray], probes: list[tuple[str, np.ndarray]],
             strangers: list[np.ndarray], policy: Any, matching: str,
             duplicate_far: float) -> dict[str, float]:
    from facestream.matching import GalleryIndex

    index = GalleryIndex.from_samples([(p, p, [e]) for p, e in gallery.items()], matching,
                                      policy)
    named = [index.identify(e) for _, e in probes]
    best_p = [index.best(e) for _, e in probes]
    best_s = np.array([index.best(e).similarity for e in strangers])  # type: ignore[union-attr]
    right = np.array([b is not None and b.hash == p for (p, _), b in zip(probes, best_p)])
    sims_p = np.array([b.similarity for b in best_p])  # type: ignore[union-attr]
    k = int(np.floor(0.01 * len(best_s)))
    t1 = float(np.sort(best_s)[::-1][k]) + 1e-6 if k < len(best_s) else -1.0
    dup = policy.identify_threshold(index.comparisons, duplicate_far)
    return {
        "threshold": policy.identify_threshold(index.comparisons),
        "strangers_named": float(np.mean([index.identify(e) is not None for e in strangers])),
        "identified": float(np.mean([m is not None and m.hash == p
                                     for (p, _), m in zip(probes, named)])),
        "misidentified": float(np.mean([m is not None and m.hash != p
                                        for (p, _), m in zip(probes, named)])),
        "identified_at_1pct_far": float(np.mean(right & (sims_p >= t1))),
        "threshold_at_1pct_far": t1,
        "duplicate_threshold": dup,
        "strangers_refused_as_enrolled": float(np.mean(best_s >= dup)),
        "probes_caught_as_enrolled": float(np.mean(right & (sims_p >= dup))),
    }


def top2(index: Any, embedding: np.ndarray) -> tuple[str, float, float]:
    first, second = index.ranked(embedding, top=2)
    return first.hash, first.similarity, second.similarity


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "recognition_compare.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="facestream-bench-") as home:
        os.environ["DEEPFACE_HOME"] = home
        from facestream import weights
        from facestream.config import Config
        from facestream.matching import Calibration, GalleryIndex, OpenSetPolicy
        from facestream.recognition import configure_environment

        configure_environment()
        weights.provision()
        import cv2

        cv2.setNumThreads(1)
        people: dict[str, list[Path]] = {
            d.name: sorted(d.glob("*.jpg")) for d in sorted(LFW.iterdir()) if d.is_dir()}
        paths = [f for files in people.values() for f in files]
        cfg = Config().recognition
        rng = np.random.default_rng(args.seed)
        results: dict[str, Any] = {"images": len(paths), "people": len(people)}
        for model, detector in MODELS:
            print(f"embedding {len(paths)} images with {model} + {detector} ...",
                  file=sys.stderr)
            run = embed_all(model, detector, paths)
            embs = dict(zip(paths, run.pop("embs")))
            policy = cfg.policy(model)
            out: dict[str, Any] = {**run, "pairs": pairs_accuracy(embs, cfg.threshold(model))}
            several = [n for n, f in people.items() if len(f) >= 2 and embs[f[0]] is not None]
            gallery = {n: embs[people[n][0]] for n in several}
            probes = [(n, e) for n in several for f in people[n][1:]
                      if (e := embs[f]) is not None]
            strangers = [e for n, f in people.items() if len(f) == 1
                         and (e := embs[f[0]]) is not None]
            out["open_set"] = open_set(gallery, probes, strangers, policy, cfg.matching,
                                       cfg.duplicate_far)

            # Calibration fitted on one half of the people, scored on the other half.
            names = sorted(people)
            held: dict[str, list[float]] = defaultdict(list)
            for _ in range(args.splits):
                half = set(rng.permutation(names)[: len(names) // 2])
                fit = [embs[f] for n in half for f in people[n] if embs[f] is not None]
                fit_owner = np.array([n for n in half for f in people[n]
                                      if embs[f] is not None])
                m = np.stack(fit) @ np.stack(fit).T
                iu = np.triu_indices(len(fit), 1)
                calib = Calibration.fit(m[iu][fit_owner[iu[0]] != fit_owner[iu[1]]])
                pol = OpenSetPolicy(policy.threshold, calib, policy.stranger_far,
                                    policy.margin)
                g = {n: e for n, e in gallery.items() if n not in half}
                r = open_set(g, [(n, e) for n, e in probes if n in g],
                             [e for n, f in people.items() if len(f) == 1 and n not in half
                              and (e := embs[f[0]]) is not None], pol, cfg.matching,
                             cfg.duplicate_far)
                for key in ("strangers_named", "identified", "misidentified"):
                    held[key].append(r[key])
                held["gallery"].append(len(g))
            out["held_out_calibration"] = {k: float(np.mean(v)) for k, v in held.items()}

            # Gallery size: the policy against one fixed threshold.
            fixed = policy.identify_threshold(10)
            everyone = {n: embs[f[0]] for n, f in people.items() if embs[f[0]] is not None}
            sizes: dict[str, Any] = {}
            for size in GALLERY_SIZES:
                named_policy, named_fixed = [], []
                for _ in range(args.draws):
                    chosen = set(rng.choice(several, size, replace=False))
                    g = {n: gallery[n] for n in chosen}
                    others = [e for n, e in everyone.items() if n not in chosen]
                    index = GalleryIndex.from_samples([(n, n, [e]) for n, e in g.items()],
                                                      cfg.matching, policy)
                    best = np.array([index.best(e).similarity for e in others])  # type: ignore[union-attr]
                    named_policy.append(float(np.mean(
                        best >= policy.identify_threshold(index.comparisons))))
                    named_fixed.append(float(np.mean(best >= fixed)))
                sizes[str(size)] = {"policy_threshold": policy.identify_threshold(size),
                                    "strangers_named_policy": float(np.mean(named_policy)),
                                    "strangers_named_fixed": float(np.mean(named_fixed))}
            out["gallery_sizes"] = {"fixed_threshold": fixed, "by_size": sizes}

            # Margin: identification at 1% stranger FAR for each margin.
            index = GalleryIndex.from_samples([(n, n, [e]) for n, e in gallery.items()],
                                              cfg.matching, policy)

            tp = [(n, *top2(index, e)) for n, e in probes]
            ts = [top2(index, e) for e in strangers]
            margins = {}
            for margin in MARGINS:
                ok_s = sorted((s1 for _, s1, s2 in ts if s1 - s2 >= margin), reverse=True)
                k = int(np.floor(0.01 * len(ts)))
                t = ok_s[k] + 1e-6 if k < len(ok_s) else -1.0
                margins[str(margin)] = float(np.mean([
                    h == n and s1 >= t and s1 - s2 >= margin for n, h, s1, s2 in tp]))
            out["margin_identified_at_1pct_far"] = margins
            results[model] = out
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    show(results)
    print(f"wrote {args.out}")
    return 0


def show(results: dict[str, Any]) -> None:
    models = [m for m, _ in MODELS]
    rows = [
        ("CPU per image (detect + align + embed), ms", lambda r: f"{r['cpu_ms_per_image']:.1f}"),
        ("CPU per embedded face (align + embed), ms", lambda r: f"{r['cpu_ms_per_face']:.1f}"),
        ("CPU per embedding (model alone), ms", lambda r: f"{r['cpu_ms_embed_only']:.1f}"),
        ("LFW pairs at default threshold", lambda r: f"{r['pairs']['at_default']:.2%}"),
        ("LFW pairs, 10-fold cross-validated", lambda r: f"{r['pairs']['cross_validated']:.2%}"),
        ("open set: policy threshold (123 enrolled)",
         lambda r: f"{r['open_set']['threshold']:.4f}"),
        ("open set: strangers named", lambda r: f"{r['open_set']['strangers_named']:.2%}"),
        ("open set: enrolled named correctly", lambda r: f"{r['open_set']['identified']:.2%}"),
        ("open set: enrolled named as another", lambda r: f"{r['open_set']['misidentified']:.2%}"),
        ("open set: identified at 1% stranger FAR",
         lambda r: f"{r['open_set']['identified_at_1pct_far']:.2%}"),
        ("held-out calibration: strangers named",
         lambda r: f"{r['held_out_calibration']['strangers_named']:.2%}"),
        ("held-out calibration: named correctly",
         lambda r: f"{r['held_out_calibration']['identified']:.2%}"),
        ("'already enrolled': new people refused",
         lambda r: f"{r['open_set']['strangers_refused_as_enrolled']:.2%}"),
        ("'already enrolled': re-enrollments caught",
         lambda r: f"{r['open_set']['probes_caught_as_enrolled']:.2%}"),
    ]
    print(f"{'':<46}" + "".join(f"{m:>12}" for m in models))
    for label, cell in rows:
        print(f"{label:<46}" + "".join(f"{cell(results[m]):>12}" for m in models))
    print("strangers named by gallery size (policy / one fixed threshold):")
    for size in GALLERY_SIZES:
        cells = "".join(
            f"{results[m]['gallery_sizes']['by_size'][str(size)]['strangers_named_policy']:>7.2%}"
            f" / {results[m]['gallery_sizes']['by_size'][str(size)]['strangers_named_fixed']:<7.2%}"
            for m in models)
        print(f"  G = {size:<4}{cells}")
    print("identified at 1% stranger FAR by margin:",
          {m: results[m]["margin_identified_at_1pct_far"] for m in models})


if __name__ == "__main__":
    sys.exit(main())

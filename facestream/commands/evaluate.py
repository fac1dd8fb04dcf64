"""``facestream evaluate PATH``: measure verification accuracy on labelled faces and
suggest a threshold, through exactly the server's detection, alignment and embedding code.

PATH is an LFW-format folder (``pairs.txt`` plus ``Person/Person_NNNN.jpg``) or a folder of
people (``Person/*.jpg``): then every same-person pair is used, with as many different-
person pairs drawn at random (seeded), so accuracy is not dominated by easy negatives.

Every image goes through the worker pool the server uses for uploads. A pair with an image in
which no face was found counts as "different" (the system could not verify it), and those
images are listed. The report has accuracy at the configured threshold, the best threshold
with its k-fold cross-validated accuracy (chosen on k-1 folds, scored on the k-th), ROC AUC,
TAR at FAR 1e-2 and 1e-3 (computed by verification.py), and time per image; it is printed,
written to ``report.json`` and drawn as ``roc.png`` and ``histogram.png``. ``--apply`` writes
the suggested threshold into the config file, for the evaluated model only.

``--open-set`` asks instead "who is this, or nobody?" as the server does, against everybody
enrolled at once, on a folder of people (``Person/*.jpg``; an LFW folder's ``pairs.txt`` is
ignored). The first photo of each person with several photos is enrolled (``--gallery-size N``
of them, drawn at random); their other photos are probes; people with one photo, and those not
drawn, are strangers. The report has, at the configured open-set policy, how many strangers
are named as somebody and how many enrolled people are named correctly (or wrongly); the
identification rate at the thresholds that name 1% and 0.1% of strangers; how often the
"already enrolled" check would refuse a stranger (a new person) or catch a probe (a person
enrolled twice); and the calibration of this data's different-person similarities, which
``--apply`` writes into the config file for the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from ..config import DETECTORS, Config
from ..enrollment import faces_in
from ..matching import Calibration, GalleryIndex
from ..privacy import write_private
from ..verification import (
    DatasetError,
    accuracy,
    best_threshold,
    cross_validated,
    load_dataset,
    roc,
    similarities,
    tar_at_far,
)
from ..workers import WorkerPool
from .common import DEFAULT_CONFIG, Command, add_shared, load_config, pool_for, prog

USES: Final = ("config", "model", "workers")
FARS: Final = (1e-2, 1e-3)


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
    _edit_recognition(config_path, "thresholds", model, round(threshold, 4))


def _edit_recognition(config_path: Path, table: str, model: str, value: Any) -> None:
    import tomlkit

    doc = tomlkit.parse(config_path.read_text(encoding="utf-8")) if config_path.is_file() \
        else tomlkit.document()
    recognition = doc.get("recognition")
    if recognition is None:
        recognition = tomlkit.table()
        doc["recognition"] = recognition
    section = recognition.get(table)
    if section is None:
        section = tomlkit.table()
        recognition[table] = section
    if isinstance(value, dict):
        inline = tomlkit.inline_table()
        inline.update(value)
        section[model] = inline
    else:
        section[model] = value
    # The file may hold secrets (an MQTT password, webhook secrets): it keeps its mode.
    mode = stat.S_IMODE(config_path.stat().st_mode) if config_path.exists() else 0o600
    write_private(config_path, tomlkit.dumps(doc))
    os.chmod(config_path, mode)


async def run_pairs(config: Config, root: Path, out_dir: Path, limit: int | None, seed: int,
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
        **_run_facts(failures, seconds, len(data.images), r.workers),
    }
    _write(out_dir / "report.json", report)
    plot(out_dir, sims, same, fpr, tpr, configured, suggested, f"{r.model} + {r.detector}")
    print_report(report, out_dir, stream)
    return report


def _run_facts(failures: dict[str, str], seconds: float, images: int, workers: int
               ) -> dict[str, Any]:
    return {"images_failed": failures, "seconds": seconds,
            "seconds_per_image": seconds / max(1, images), "workers": workers}


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(report, indent=2))  # it names the photos (people)


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


# -- open-set identification ----------------------------------------------------------------


@dataclass
class OpenSetData:
    gallery: list[tuple[str, Path]]  # enrolled: person, photo
    probes: list[tuple[str, Path]]  # other photos of enrolled people
    strangers: list[tuple[str, Path]]  # photos of people never enrolled
    images: list[Path]  # every photo, for the different-person calibration
    people: list[str]  # the person of each of ``images``


def load_open_set(root: Path, gallery_size: int | None, seed: int) -> OpenSetData:
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    people = {
        d.name: sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
        for d in sorted(root.iterdir()) if d.is_dir()
    }
    people = {k: v for k, v in people.items() if v}
    several = [p for p, files in people.items() if len(files) >= 2]
    if not several:
        raise DatasetError(f"{root} needs Person/ folders, some with two or more photos")
    enrolled = several
    if gallery_size is not None:
        if gallery_size > len(several):
            raise DatasetError(f"--gallery-size {gallery_size}: only {len(several)} people in "
                               f"{root} have two or more photos")
        enrolled = sorted(random.Random(seed).sample(several, gallery_size))
    chosen = set(enrolled)
    gallery = [(p, people[p][0]) for p in enrolled]
    probes = [(p, f) for p in enrolled for f in people[p][1:]]
    strangers = [(p, people[p][0]) for p in people if p not in chosen]
    images = [f for files in people.values() for f in files]
    owners = [p for p, files in people.items() for _ in files]
    return OpenSetData(gallery, probes, strangers, images, owners)


def _identification(best: NDArray[Any], correct: NDArray[Any], threshold: float) -> float:
    return float(((best >= threshold) & correct).mean()) if best.size else 0.0


async def run_open_set(config: Config, root: Path, out_dir: Path, gallery_size: int | None,
                       seed: int, show_progress: bool, stream: TextIO) -> dict[str, Any]:
    r = config.recognition
    data = load_open_set(root, gallery_size, seed)
    async with pool_for(config) as pool:
        embs, failures, seconds = await embed_images(pool, data.images, show_progress)
    by_path = dict(zip(data.images, embs))

    def usable(items: list[tuple[str, Path]]) -> list[tuple[str, NDArray[np.float32]]]:
        return [(p, e) for p, f in items if (e := by_path.get(f)) is not None]

    gallery, probes, strangers = usable(data.gallery), usable(data.probes), \
        usable(data.strangers)
    policy = r.policy()
    index = GalleryIndex.from_samples([(p, p, [e]) for p, e in gallery], r.matching, policy)

    def decide(items: list[tuple[str, NDArray[np.float32]]]) -> tuple[list[Any], NDArray[Any]]:
        named = [index.identify(e) for _, e in items]
        best = np.array([m.similarity for _, e in items if (m := index.best(e)) is not None])
        return named, best

    probe_named, probe_best = decide(probes)
    stranger_named, stranger_best = decide(strangers)
    probe_right = np.array([index.best(e).hash == p for p, e in probes])  # type: ignore[union-attr]
    policy_threshold = policy.identify_threshold(index.comparisons)
    at_far: dict[str, Any] = {}
    for far in FARS:
        # The threshold that names at most `far` of the strangers seen here.
        allowed = int(np.floor(far * len(stranger_best)))
        ranked = np.sort(stranger_best)[::-1]
        t = float(ranked[allowed]) + 1e-6 if allowed < len(ranked) else -1.0
        at_far[f"{far:g}"] = {"threshold": round(t, 4),
                              "identification": _identification(probe_best, probe_right, t),
                              "coarse": len(stranger_best) < 1 / far}
    duplicate = policy.identify_threshold(index.comparisons, r.duplicate_far)
    valid = [i for i, e in enumerate(embs) if e is not None]
    matrix = np.stack([embs[i] for i in valid]) if valid else np.zeros((0, 1), np.float32)
    owners = np.array([data.people[i] for i in valid])
    sims = matrix @ matrix.T
    upper = np.triu_indices(len(valid), 1)
    different = sims[upper][owners[upper[0]] != owners[upper[1]]]
    fitted = Calibration.fit(different) if different.size >= 1000 else None
    report: dict[str, Any] = {
        "dataset": str(root),
        "model": r.model,
        "detector": r.detector,
        "matching": r.matching,
        "gallery": len(gallery),
        "probes": len(probes),
        "strangers": len(strangers),
        "stranger_far_target": r.stranger_far,
        "policy_threshold": round(policy_threshold, 4),
        "strangers_named": sum(m is not None for m in stranger_named) / max(1, len(strangers)),
        "identified": sum(m is not None and m.hash == p for (p, _), m in
                          zip(probes, probe_named)) / max(1, len(probes)),
        "misidentified": sum(m is not None and m.hash != p for (p, _), m in
                             zip(probes, probe_named)) / max(1, len(probes)),
        "at_stranger_far": at_far,
        "duplicate_threshold": round(duplicate, 4),
        "strangers_refused_as_enrolled": float((stranger_best >= duplicate).mean())
        if stranger_best.size else 0.0,
        "probes_caught_as_enrolled": float(((probe_best >= duplicate) & probe_right).mean())
        if probe_best.size else 0.0,
        "different_pairs": int(different.size),
        "calibration_configured": None if policy.calibration is None else
        {"mean": policy.calibration.mean, "std": policy.calibration.std},
        "calibration_measured": None if fitted is None else
        {"mean": fitted.mean, "std": fitted.std},
        **_run_facts(failures, seconds, len(data.images), r.workers),
    }
    _write(out_dir / "open_set.json", report)
    print_open_set(report, out_dir, stream)
    return report


def print_open_set(rep: dict[str, Any], out_dir: Path, stream: TextIO) -> None:
    def line(label: str, value: str) -> None:
        print(f"  {label:<46} {value}", file=stream)

    print(f"{rep['model']} + {rep['detector']} open-set on {rep['dataset']}: {rep['gallery']} "
          f"people enrolled (one photo each), {rep['probes']} probes of them, "
          f"{rep['strangers']} strangers", file=stream)
    line(f"policy threshold (stranger FAR {rep['stranger_far_target']:g})",
         f"{rep['policy_threshold']:.4f}")
    line("strangers named as somebody", f"{rep['strangers_named']:.2%}")
    line("enrolled people named correctly", f"{rep['identified']:.2%}")
    line("enrolled people named as somebody else", f"{rep['misidentified']:.2%}")
    for far, row in rep["at_stranger_far"].items():
        note = " (fewer strangers than 1/FAR: coarse)" if row["coarse"] else ""
        line(f"identified at stranger FAR {far} (threshold {row['threshold']:.4f})",
             f"{row['identification']:.2%}{note}")
    line(f"'already enrolled' threshold {rep['duplicate_threshold']:.4f}: strangers refused",
         f"{rep['strangers_refused_as_enrolled']:.2%}")
    line("  ... re-enrolled people caught", f"{rep['probes_caught_as_enrolled']:.2%}")
    measured = rep["calibration_measured"]
    if measured is not None:
        line(f"calibration from {rep['different_pairs']} different-person pairs",
             f"mean {measured['mean']}, std {measured['std']}")
    line("images without a usable face", str(len(rep["images_failed"])))
    line("time per image", f"{rep['seconds_per_image'] * 1000:.0f} ms "
                           f"({rep['workers']} workers, {rep['seconds']:.1f} s in all)")
    print(f"  wrote {out_dir / 'open_set.json'}", file=stream)


def apply_calibration(config_path: Path, model: str, calibration: dict[str, float]) -> None:
    """Set ``[recognition.calibration.MODEL]`` in the config file, keeping everything else."""
    _edit_recognition(config_path, "calibration", model,
                      {"mean": calibration["mean"], "std": calibration["std"]})


# -- the command ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("evaluate"),
        description="Measure verification accuracy on labelled faces (an LFW-format folder "
        "with pairs.txt, or Person/*.jpg folders) with the server's own pipeline, and "
        "suggest a threshold; or, with --open-set, identification of enrolled people and "
        "strangers against a whole gallery.",
    )
    p.add_argument("path", type=Path)
    add_shared(p, USES)
    p.add_argument("--detector", choices=DETECTORS, help="face detector")
    p.add_argument("--pairs", type=int, help="use at most this many pairs (half same, half "
                   "different)")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for report.json, roc.png, histogram.png (default: evaluation)")
    p.add_argument("--seed", type=int, default=0, help="seed for pair sampling and folds")
    p.add_argument("--open-set", action="store_true",
                   help="measure identification against everybody enrolled (who is this, or "
                   "nobody?) on Person/*.jpg folders, as the server decides")
    p.add_argument("--gallery-size", type=int,
                   help="with --open-set: enroll this many people (default: everybody with "
                   "two or more photos)")
    p.add_argument("--apply", action="store_true",
                   help="write the suggested threshold (with --open-set: the measured "
                   "calibration) for this model into the config file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args, recognition__workers=args.workers,
                         recognition__detector=args.detector)
    if args.pairs is not None and args.pairs < 2:
        print("error: --pairs must be at least 2", file=sys.stderr)
        return 2
    if args.gallery_size is not None and not args.open_set:
        print("error: --gallery-size needs --open-set", file=sys.stderr)
        return 2
    model = config.recognition.model
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    try:
        if args.open_set:
            report = asyncio.run(run_open_set(config, args.path, args.out, args.gallery_size,
                                              args.seed, not args.quiet, sys.stdout))
        else:
            report = asyncio.run(run_pairs(config, args.path, args.out, args.pairs, args.seed,
                                           not args.quiet, sys.stdout))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.apply and args.open_set:
        measured = report["calibration_measured"]
        if measured is None:
            print(f"error: --apply needs at least 1000 different-person pairs to measure a "
                  f"calibration; {report['different_pairs']} here", file=sys.stderr)
            return 2
        apply_calibration(path, model, measured)
        print(f"set recognition.calibration.{model} = {{ mean = {measured['mean']}, "
              f"std = {measured['std']} }} in {path}")
    elif args.apply:
        apply_threshold(path, model, report["best_threshold"])
        print(f"set recognition.thresholds.{model} = {report['best_threshold']} in {path}")
    return 0


COMMAND: Final = Command("evaluate", USES, build_parser, run)

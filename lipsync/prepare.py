"""``python -m lipsync.prepare --videos DIR_OR_FILELIST --output DATASET``: prepare a Diff2Lip training dataset
(the engine's face crops, 16 kHz audio and mel spectrogram of every clip, in tar shards with a manifest.json;
re-running resumes). The work is done by :mod:`lipsync.training.prepare`, which documents the format.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from lipsync.console import command_name
from lipsync.errors import LipSyncError
from lipsync.media.detectors import DETECTORS
from lipsync.training.prepare import PrepSettings, prepare_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=command_name("python -m lipsync.prepare"),
        description="Prepare a Diff2Lip training dataset: the engine's face crops, 16 kHz audio and mel "
                    "spectrogram of every clip, in tar shards with a manifest.json. Re-running resumes.")
    p.add_argument("--videos", required=True,
                   help="folder of talking-face videos (searched recursively), or a filelist (VoxCeleb2/LRS2 style "
                        "lines such as id00017/01dfn2spqyE/00001, or paths)")
    p.add_argument("--root", default=None, help="folder the filelist entries are relative to (default: the "
                                                "filelist's folder)")
    p.add_argument("--output", required=True, help="dataset folder to create or resume")
    p.add_argument("--detector", default="s3fd", help=f"face detector: {', '.join(DETECTORS)} (default "
                                                      "s3fd, as inference)")
    p.add_argument("--device", default=None, help="device of the s3fd detector (default: cuda when available)")
    p.add_argument("--pads", type=int, nargs=4, default=(0, 0, 0, 0), metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="box padding in pixels, as the inference --pads (default 0 0 0 0)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="clips prepared in parallel processes (default: up to 4, one per core)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-fraction", type=float, default=0.05,
                       help="fraction of CLIPS held out for validation (default 0.05; 0: none, 1: all)")
    split.add_argument("--val-clips", nargs="+", default=(), metavar="ID",
                       help="clip ids (or patterns such as 'id00017/*') held out for validation")
    p.add_argument("--faces", choices=("raw", "jpeg"), default="raw",
                   help="how face crops are stored: raw (uncompressed .npy, the default) or jpeg (about 8x smaller, "
                        "decoded by the training loader; for moving datasets to another machine)")
    p.add_argument("--jpeg-quality", type=int, default=92, help="JPEG quality of --faces jpeg (90..100, default 92)")
    p.add_argument("--chunk-frames", type=int, default=32, help="frames decoded at a time (memory)")
    p.add_argument("--limit", type=int, default=None, help="prepare only the first N clips (sorted by id)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.device is None:
        from lipsync.model.loading import default_device

        args.device = default_device()
    device = args.device
    settings = PrepSettings(detector=args.detector.strip().lower(), pads=tuple(args.pads),
                            chunk_frames=max(1, args.chunk_frames), device=device,
                            faces=args.faces, jpeg_quality=args.jpeg_quality)
    try:
        report = prepare_dataset(args.videos, args.output, settings, root=args.root, workers=args.workers,
                                 val_fraction=args.val_fraction if not args.val_clips else 0.0,
                                 val_clips=args.val_clips, progress=not args.no_progress, limit=args.limit)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for entry in report.failed:
        print(f"failed: {entry['id']}: {entry['reason']}", file=sys.stderr)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

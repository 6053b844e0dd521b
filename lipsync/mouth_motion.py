"""Mouth-motion lip-sync check without trained weights: does the mouth open with the speech?

``python -m lipsync.mouth_motion VIDEO AUDIO [--max-lag 5] [--max-frames N] [--json PATH]``

AUDIO may be any audio file or a video (its audio track), including VIDEO itself. Prints one line: the peak
correlation of the mouth opening (MediaPipe FaceMesh) with the speech loudness, its lag in frames (positive:
the mouth follows the audio) and how many frames were measured; ``--json`` also writes the full result
(:meth:`lipsync.scoring.mouth_motion.MouthMotionSync.as_dict`). See :mod:`lipsync.scoring.mouth_motion`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from lipsync.console import command_name
from lipsync.errors import LipSyncError


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=command_name("python -m lipsync.mouth_motion"),
        description="Correlate a video's mouth opening (MediaPipe FaceMesh) with a speech track's loudness.",
    )
    parser.add_argument("video", type=Path, help="video with one face")
    parser.add_argument("audio", type=Path, help="speech: an audio file or a video's audio track (VIDEO itself too)")
    parser.add_argument("--max-lag", type=int, default=5, help="try lags -N .. +N frames (default 5)")
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many frames")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 the check failed, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    if args.max_lag < 0:
        print("error: --max-lag must be 0 or more frames", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("error: --max-frames must be a positive number of frames", file=sys.stderr)
        return 2
    if args.json is not None and not (args.json.parent if str(args.json.parent) else Path(".")).is_dir():
        print(f"error: the folder of --json {str(args.json)!r} does not exist; create it first", file=sys.stderr)
        return 2

    from lipsync.scoring.mouth_motion import mouth_motion_sync

    try:
        result = mouth_motion_sync(args.video, args.audio, max_lag=args.max_lag, max_frames=args.max_frames)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.summary())
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: could not write {args.json} ({exc}); choose a writable --json path", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

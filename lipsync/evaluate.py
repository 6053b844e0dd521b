"""Batch evaluation of lip-synced videos: LSE-D / LSE-C (SyncNet), and PSNR / SSIM against ground truth.

``python -m lipsync.evaluate --filelist pairs.txt --output scores.csv``

The filelist has one pair per line, ``video_path audio_path [ground_truth_video]``, separated by
whitespace (or by tabs when a line contains a tab, so paths may contain spaces). Blank lines and lines
starting with ``#`` are skipped. Relative paths are resolved against the filelist's folder; a relative
ground-truth path is looked up in ``--reference-dir`` when given. Without a third column,
``--reference-dir/<video file name>`` is used as ground truth when that file exists.

The CSV has the columns ``video, audio, lse_d, lse_c, offset, psnr, ssim``; psnr/ssim are empty unless
a ground truth was given (the reconstruction setting).

Metric definitions
* LSE-D / LSE-C / offset: :mod:`lipsync.scoring.syncnet` (syncnet_python's recipe on 224×224 face-track crops
  from the chosen detector, 25 fps, vshift 15).
* PSNR: 10·log10(255² / MSE) over every pixel and RGB channel of all compared frames; SSIM: Wang et al. 2004
  on the BT.601 luma, the mean over frames (:mod:`lipsync.scoring.metrics` gives the details).
* Frames are compared in order over the first min(#generated, #ground truth) frames; generated and
  ground-truth frames must have the same size.

Audio dependence (does a model use its audio input?)::

    python -m lipsync.evaluate --audio-dependence --checkpoint MODEL --data DATASET [--split val] [--frames 30]
        [--steps 25] [--json PATH]

``DATASET`` is a folder made by ``python -m lipsync.prepare``; its held-out frames are fed with their right mel
windows and with wrong ones (other frames of the same clip, another clip, silence), once through the UNet
(one step, t = 100 … 900) and once through the sampler: :mod:`lipsync.scoring.audio_dependence` defines the
figures. Python: :func:`audio_dependence_frames` then :func:`evaluate_audio_dependence`.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from lipsync.console import command_name
from lipsync.errors import LipSyncError
from lipsync.scoring.metrics import ReconstructionMeter
from lipsync.training.held_out import (  # noqa: F401 - part of this module's Python API
    MIN_FRAME_GAP,
    WRONG_AUDIO,
    HeldOutFrames,
    audio_dependence_frames,
    silence_mel_window,
)

if TYPE_CHECKING:  # the checks import torch: loaded on use
    from lipsync.scoring.audio_dependence import OneStepAudioDependence, SampleAudioDependence

CSV_COLUMNS = ("video", "audio", "lse_d", "lse_c", "offset", "psnr", "ssim")
# with --sync-expert: the own expert's figures, never under LSE's names
OWN_EXPERT_COLUMNS = ("video", "audio", "measure", "offset", "confidence", "distance_at_0", "psnr", "ssim")


class FilelistError(ValueError):
    """The filelist or a path in it is unusable."""


# Filelist and CSV
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPair:
    """One line of the filelist, paths resolved."""

    video: Path
    audio: Path
    ground_truth: Path | None
    line: int


@dataclass(frozen=True)
class EvalRow:
    """One CSV row; psnr/ssim are None without ground truth, every score None for a skipped pair."""

    video: str
    audio: str
    lse_d: float | None
    lse_c: float | None
    offset: int | None
    psnr: float | None = None
    ssim: float | None = None
    measure: str | None = None  # "own expert" when an own expert scored (then lse_d/lse_c stay None)
    confidence: float | None = None
    distance_at_0: float | None = None


def parse_filelist(
    text: str, base_dir: Path, reference_dir: Path | None = None, name: str = "the filelist"
) -> list[EvalPair]:
    """Parse filelist text into pairs (no file-system checks).

    Args:
        text: the filelist's content.
        base_dir: folder relative video/audio paths are resolved against.
        reference_dir: folder for relative ground-truth paths, and for ``<video name>`` lookups when a
            line has no ground truth.
    Raises FilelistError naming the line for a line with fewer than 2 or more than 3 fields.
    """
    pairs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        fields = [f for f in fields if f]
        if len(fields) not in (2, 3):
            raise FilelistError(
                f"{name} line {number} has {len(fields)} fields; write 'video_path audio_path [ground_truth_video]'"
            )
        video = base_dir / fields[0]
        audio = base_dir / fields[1]
        truth: Path | None = None
        if len(fields) == 3:
            truth = (reference_dir or base_dir) / fields[2]
        elif reference_dir is not None and (reference_dir / video.name).is_file():
            truth = reference_dir / video.name
        pairs.append(EvalPair(video=video, audio=audio, ground_truth=truth, line=number))
    if not pairs:
        raise FilelistError(f"{name} lists no pairs; write one 'video_path audio_path [ground_truth_video]' per line")
    return pairs


def check_pairs(pairs: Iterable[EvalPair], name: str = "the filelist") -> None:
    """Raise FilelistError for the first path that is not an existing file."""
    for pair in pairs:
        for kind, path in (("video", pair.video), ("audio", pair.audio), ("ground-truth video", pair.ground_truth)):
            if path is not None and not path.is_file():
                raise FilelistError(f"{name} line {pair.line}: the {kind} {str(path)!r} does not exist")


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6f}"
    return str(value)


def write_csv(rows: Sequence[EvalRow], path: str | os.PathLike) -> Path:
    """Write rows with :data:`CSV_COLUMNS` (:data:`OWN_EXPERT_COLUMNS` when an own expert scored) atomically
    (temporary file in the same folder + os.replace)."""
    path = Path(path)
    columns = OWN_EXPERT_COLUMNS if any(row.measure for row in rows) else CSV_COLUMNS
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(getattr(row, column)) for column in columns])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ----------------------------------------------------------------------------------------------------
# One pair
# ----------------------------------------------------------------------------------------------------


def _reconstruction(video: Path, ground_truth: Path, chunk_size: int) -> tuple[float, float]:
    from lipsync.media.probe import probe_video
    from lipsync.media.reader import iter_frames

    meter = ReconstructionMeter()
    generated = iter_frames(video, chunk_size=chunk_size, info=probe_video(video))
    reference = iter_frames(ground_truth, chunk_size=chunk_size, info=probe_video(ground_truth))
    try:
        for gen, ref in zip(generated, reference):
            n = min(len(gen), len(ref))
            meter.update(gen[:n], ref[:n])
    finally:
        generated.close()
        reference.close()
    return meter.psnr, meter.ssim


def _face_track(video: Path, detector, chunk_size: int) -> np.ndarray:
    """Detect and track the main face over the whole video → (N, 4) float boxes (no gaps)."""
    from lipsync.media.probe import probe_video
    from lipsync.media.reader import iter_frames
    from lipsync.media.tracking import fill_missing, select_main_face

    detections: list[np.ndarray] = []
    for chunk in iter_frames(video, chunk_size=chunk_size, info=probe_video(video)):
        detections.extend(detector.detect(chunk))
    boxes, found = select_main_face(detections)
    boxes, _ = fill_missing(boxes, found, source=str(video))
    return boxes


def evaluate_pair(pair: EvalPair, scorer, detector, chunk_size: int = 64) -> EvalRow:
    """Score one pair.

    Args:
        pair: paths of the generated video, its driving audio and optional ground truth.
        scorer: a :class:`lipsync.scoring.syncnet.SyncScorer` (anything with ``score(faces, wav16k, fps)``), or an
            :class:`lipsync.scoring.own_sync.OwnExpertScorer` (its own crops, its figures labelled "own expert").
        detector: a :class:`lipsync.media.detectors.FaceDetector`.
        chunk_size: frames decoded at a time; only boxes and 224×224 crops of the whole clip stay in memory.
    """
    from lipsync.media.audio import load_audio
    from lipsync.media.probe import probe_video
    from lipsync.media.reader import iter_frames
    from lipsync.scoring.compare import SyncCropCollector
    from lipsync.scoring.syncnet import SYNCNET_CONFIG

    # 1. Face track over the whole clip (pass 1); the collector smooths it like the recipe
    info = probe_video(pair.video)
    boxes = _face_track(pair.video, detector, chunk_size)
    collector = SyncCropCollector(boxes, info.fps, score_seconds=len(boxes) / float(info.fps),
                                  crop=getattr(scorer, "crop", None))

    # 2. 224×224 crops (pass 2)
    start = 0
    for chunk in iter_frames(pair.video, chunk_size=chunk_size, info=info):
        collector.add(start, {"video": chunk})
        start += len(chunk)

    # 3. Sync scores
    wav = load_audio(pair.audio, SYNCNET_CONFIG.sample_rate)
    score = collector.score(scorer, wav, SYNCNET_CONFIG.sample_rate)["video"]

    # 4. Reconstruction metrics
    quality = _reconstruction(pair.video, pair.ground_truth, chunk_size) if pair.ground_truth else (None, None)
    if score.get("measure"):
        return EvalRow(video=str(pair.video), audio=str(pair.audio), lse_d=None, lse_c=None, offset=score["offset"],
                       psnr=quality[0], ssim=quality[1], measure=score["measure"], confidence=score["confidence"],
                       distance_at_0=score["distance_at_0"])
    return EvalRow(
        video=str(pair.video),
        audio=str(pair.audio),
        lse_d=score["lse_d"],
        lse_c=score["lse_c"],
        offset=score["offset"],
        psnr=quality[0],
        ssim=quality[1],
    )


# ----------------------------------------------------------------------------------------------------
# Audio dependence: held-out frames of a prepared dataset (lipsync.training.held_out) through both checks
# ----------------------------------------------------------------------------------------------------

@dataclass
class AudioDependenceReport:
    """Both checks on one set of held-out frames (:func:`evaluate_audio_dependence`)."""

    one_step: OneStepAudioDependence
    samples: SampleAudioDependence | None
    frames: HeldOutFrames

    def as_dict(self) -> dict:
        """JSON-ready: the checks' ``as_dict()``, the frames' clips and the wrong sets' names and notes."""
        held = self.frames
        return {"frames": len(held.faces), "clips": sorted(set(held.clips)),
                "wrong_audio": {k: WRONG_AUDIO.get(k, k) for k in held.wrong},
                "other_frames_min_gap": int(held.frame_gaps.min()), "notes": list(held.notes),
                "one_step": self.one_step.as_dict(),
                "samples": self.samples.as_dict() if self.samples is not None else None}

    def table(self) -> str:
        """The figures as a readable text table."""
        one, names = self.one_step, list(self.one_step.ratios)
        ts = list(one.eps_size)
        lines = [f"{len(self.frames.faces)} held-out frames of {len(set(self.frames.clips))} clip(s); "
                 f"the model works at {one.image_size} px", "",
                 "one step: mean|ε̂(right) − ε̂(wrong)| / mean|ε̂(right)|, lower half (0: the audio is unused)",
                 f"  {'wrong audio':<40}" + "".join(f"{f't={t}':>10}" for t in ts)]
        for name in names:
            ratios = "".join(f"{100 * one.ratios[name][t]:>9.3g}%" for t in ts)
            lines.append(f"  {WRONG_AUDIO.get(name, name):<40}{ratios}")
        if self.samples is not None:
            smp = self.samples
            lines += ["", f"sampled (DDIM {smp.steps}, seed {smp.seed}): lower-half PSNR in dB (inf = identical)",
                      f"  {'audio':<40}{'to the right-audio output':>27}{'to the ground truth':>21}",
                      f"  {'right':<40}{'-':>27}{smp.psnr_to_truth['right']:>21.2f}"]
            for name in names:
                lines.append(f"  {WRONG_AUDIO.get(name, name):<40}{smp.psnr_to_right[name]:>27.2f}"
                             f"{smp.psnr_to_truth[name]:>21.2f}")
        return "\n".join(lines + [f"note: {n}" for n in self.frames.notes])


def evaluate_audio_dependence(pipe, held_out: HeldOutFrames, steps: int = 25, timesteps=None, sample: bool = True,
                              seed: int = 7, batch_size: int = 8, keep_outputs: bool = False,
                              progress=None) -> AudioDependenceReport:
    """Run both checks of :mod:`lipsync.scoring.audio_dependence` on ``held_out`` with every wrong set.

    pipe: a ``Diff2LipPipeline`` (load it in fp32 for the one-step figures: bf16 rounding would add its own
    differences); steps: sampler steps; timesteps: the one-step noise levels (default 100 … 900); sample: False
    runs the one-step check only; seed: the sampler's (the one-step check uses seed 0); progress: ``progress(text)``
    before each stage.
    """
    from lipsync.scoring.audio_dependence import TIMESTEPS, one_step_audio_dependence, sample_audio_dependence

    say = progress or (lambda text: None)
    say(f"one-step check at t = {', '.join(str(t) for t in timesteps or TIMESTEPS)}")
    one = one_step_audio_dependence(pipe.unet, held_out.faces, held_out.references, held_out.mels, held_out.wrong,
                                    timesteps=timesteps or TIMESTEPS, batch_size=max(batch_size, 16))
    samples = None
    if sample:
        samples = sample_audio_dependence(pipe, held_out.faces, held_out.references, held_out.mels, held_out.wrong,
                                          num_inference_steps=steps, seed=seed, batch_size=batch_size,
                                          keep_outputs=keep_outputs, progress=lambda name: say(
                                              "sampling, " + WRONG_AUDIO.get(name, f"{name} audio")))
    return AudioDependenceReport(one_step=one, samples=samples, frames=held_out)


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (see the module docstring for the filelist format)."""
    parser = argparse.ArgumentParser(
        prog=command_name("python -m lipsync.evaluate"),
        description="LSE-D / LSE-C (SyncNet) and, with ground truth, PSNR / SSIM of lip-synced videos; or, with "
                    "--audio-dependence, whether a model uses its audio input.",
    )
    parser.add_argument("--filelist", type=Path,
                        help="text file, one 'video_path audio_path [ground_truth_video]' per line (required "
                             "without --audio-dependence)")
    parser.add_argument("--output", type=Path, help="CSV to write (required without --audio-dependence)")
    parser.add_argument("--syncnet-checkpoint", default=None,
                        help="syncnet_v2.model (default: $LIPSYNC_SYNCNET_CHECKPOINT, then the Hub)")
    parser.add_argument("--sync-expert", default=None, metavar="DIR",
                        help="score with an own lip-sync expert (python -m lipsync.train_syncnet's folder) instead of "
                             "SyncNet v2; the CSV then has 'own expert' columns, never LSE-D/LSE-C")
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="folder of ground-truth videos: relative third columns are resolved here, and "
                             "lines without one use <reference-dir>/<video file name> when it exists")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--detector", choices=("opencv", "s3fd", "mediapipe"), default="s3fd", help="face detector")
    parser.add_argument("--skip-errors", action="store_true",
                        help="report a failing pair on stderr and leave its scores empty instead of stopping")
    group = parser.add_argument_group("audio dependence (does a model use its audio?)")
    group.add_argument("--audio-dependence", action="store_true",
                       help="feed held-out frames of --data with right and wrong audio to --checkpoint and print "
                            "how much the model's output changes")
    group.add_argument("--checkpoint", default=None, help="the model: a converted folder, RUN/final, checkpoint.pt")
    group.add_argument("--data", type=Path, default=None, help="a dataset made by python -m lipsync.prepare")
    group.add_argument("--split", choices=("train", "val"), default="val", help="the dataset's split (default val)")
    group.add_argument("--frames", type=int, default=30, help="held-out frames (default 30)")
    group.add_argument("--steps", type=int, default=25, help="DDIM steps of the sampled check (default 25)")
    group.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return parser


def _audio_dependence_main(args) -> int:
    """``--audio-dependence``: check the inputs (exit 2), load the model, run both checks, print (exit 1 on failure)."""
    import json
    import re

    from lipsync.training.data import DatasetError

    try:
        if args.filelist is not None or args.output is not None:
            raise FilelistError("--audio-dependence takes --checkpoint and --data, not --filelist / --output")
        if not args.checkpoint or args.data is None:
            raise FilelistError("--audio-dependence needs --checkpoint MODEL and --data DATASET (a folder made by "
                                "python -m lipsync.prepare)")
        if not Path(args.checkpoint).expanduser().exists() and not re.match(r"^[\w.-]+/[\w.-]+$", args.checkpoint):
            raise FilelistError(f"--checkpoint {args.checkpoint!r} does not exist; pass a model folder or file")
        if args.frames < 2 or args.steps < 1:
            raise FilelistError(f"--frames must be at least 2 and --steps at least 1, got {args.frames} and "
                                f"{args.steps}")
        if args.json is not None and not (args.json.parent if str(args.json.parent) else Path(".")).is_dir():
            raise FilelistError(f"the folder of --json {str(args.json)!r} does not exist; create it or choose another")
        held_out = audio_dependence_frames(args.data, split=args.split, count=args.frames)
    except (FilelistError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from lipsync.model.loading import load_pipeline

    try:
        pipe = load_pipeline(args.checkpoint, device=args.device, dtype="fp32")
        report = evaluate_audio_dependence(pipe, held_out, steps=args.steps,
                                           progress=lambda text: print(f"{text} ...", file=sys.stderr, flush=True))
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"audio dependence of {args.checkpoint} on {args.data} (split {args.split})")
    print(report.table())
    if args.json is not None:
        figures = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split, **report.as_dict()}
        try:
            args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: could not write {args.json} ({exc}); choose a writable --json", file=sys.stderr)
            return 1
    return 0


def run_evaluation(pairs: Sequence[EvalPair], scorer, detector, skip_errors: bool = False) -> list[EvalRow | None]:
    """Evaluate pairs in order; a LipSyncError/ValueError stops the run unless ``skip_errors``
    (then the pair's row is None and a line goes to stderr)."""
    rows: list[EvalRow | None] = []
    for pair in pairs:
        try:
            rows.append(evaluate_pair(pair, scorer, detector))
        except (LipSyncError, ValueError) as exc:
            if not skip_errors:
                raise LipSyncError(f"line {pair.line} ({pair.video}): {exc}") from exc
            print(f"warning: line {pair.line} ({pair.video}) not scored: {exc}", file=sys.stderr)
            rows.append(None)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 evaluation failed, 2 bad input). With
    ``--audio-dependence``: both audio-dependence checks of a model on a prepared dataset (same exit statuses)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from lipsync.console import configure_logging

    configure_logging()  # once: no doubled library lines, no retry or download chatter
    if args.audio_dependence:
        return _audio_dependence_main(args)
    missing = [flag for flag, value in (("--filelist", args.filelist), ("--output", args.output)) if value is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")

    # 1. Check inputs before loading any model
    try:
        if not args.filelist.is_file():
            raise FilelistError(f"the filelist {str(args.filelist)!r} does not exist; pass --filelist PATH")
        if args.reference_dir is not None and not args.reference_dir.is_dir():
            raise FilelistError(f"--reference-dir {str(args.reference_dir)!r} is not a folder")
        out_dir = args.output.parent if str(args.output.parent) else Path(".")
        if not out_dir.is_dir():
            raise FilelistError(
                f"the output folder {str(out_dir)!r} does not exist; create it or choose another --output"
            )
        text = args.filelist.read_text(encoding="utf-8")
        pairs = parse_filelist(text, args.filelist.parent, args.reference_dir, name=str(args.filelist))
        check_pairs(pairs, name=str(args.filelist))
    except (FilelistError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # 2. Models, then every pair, then the CSV
    from lipsync.media.detectors import get_detector
    from lipsync.scoring.syncnet import SyncScorer, load_syncnet

    try:
        if args.sync_expert is not None:
            from lipsync.scoring.own_sync import load_scorer

            scorer = load_scorer(args.sync_expert)
            detector = get_detector(args.detector, device=args.device or "cpu")
        else:
            model = load_syncnet(args.syncnet_checkpoint, device=args.device)
            scorer = SyncScorer(model)
            detector = get_detector(args.detector, device=str(next(model.parameters()).device))
        rows = run_evaluation(pairs, scorer, detector, skip_errors=args.skip_errors)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    complete = [row or EvalRow(str(p.video), str(p.audio), None, None, None) for row, p in zip(rows, pairs)]
    try:
        write_csv(complete, args.output)
    except OSError as exc:
        print(f"error: could not write {args.output} ({exc}); choose a writable --output", file=sys.stderr)
        return 1
    return 1 if any(row is None for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

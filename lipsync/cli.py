"""Command line: ``python -m lipsync --video V --audio A --output O [options]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Dict, Optional

from lipsync.console import PlainProgress, command_name, configure_logging, stderr_is_terminal
from lipsync.errors import LipSyncError
from lipsync.model.presets import PRESETS

# Only light modules at import time: the engine loads inside main(), where Ctrl-C or SIGTERM during
# start-up ends in one "error:" line instead of a traceback.


def _reference(text: str) -> Optional[int]:
    if text.lower() in ("self", "each", "cross"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--reference-frame must be a frame number or 'self', got {text!r}")


def _face_point(text: str) -> tuple:
    from lipsync.job import parse_face_point

    try:
        point = parse_face_point(text)
    except ValueError:
        point = None
    if point is None:
        raise argparse.ArgumentTypeError(f"--face must be a point X,Y in pixels, e.g. 320,180; got {text!r}")
    return point


def build_parser(batch: bool = False) -> argparse.ArgumentParser:
    """The CLI's parser (imports the engine for the lists of choices); ``batch=True``: only the job options
    (a parent parser for ``lipsync.batch``)."""
    from lipsync.job import LENGTH_POLICIES, PAPER_SEED, PASTE_MODES, SCHEDULERS
    from lipsync.media.detectors import DETECTORS
    from lipsync.media.speaker import FACE_CHOICES
    from lipsync.media.writer import DEFAULT_ENCODER_PRESET, X264_PRESETS

    p = argparse.ArgumentParser(prog=command_name("python -m lipsync"), add_help=not batch,
                                description="Lip-sync a face video (or photo) to a speech track with Diff2Lip.")
    if not batch:
        p.add_argument("--video", required=True, help="face video (mp4/mov/mkv/webm) or a still photo (png/jpg)")
        p.add_argument("--audio", required=True, help="speech (wav/flac/mp3/m4a/ogg) or a video whose audio to use")
        p.add_argument("--output", required=True, help="the MP4 to write")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (paper: 25)")
    p.add_argument("--reference-frame", type=_reference, default=None, metavar="N|self",
                   help="frame whose face is the identity reference for all frames; 'self' (default): each frame "
                        "is its own reference, as in the paper")
    p.add_argument("--seed", type=int, default=PAPER_SEED, help="seed of the one shared initial noise (paper: 7)")
    p.add_argument("--checkpoint", default=None,
                   help="converted folder, original checkpoint.pt or Hub repo; default: $LIPSYNC_CHECKPOINT or the "
                        "paper checkpoint from the Hub")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: the GPU when there is one)")
    p.add_argument("--dtype", default=None, choices=["auto", "fp32", "fp16", "bf16"],
                   help="precision (default auto: bf16 on GPUs and on CPUs with AMX/AVX512-BF16, else fp32; "
                        "fp32 = the paper-exact path; fp16 on GPU only)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="frames denoised together (default 8 on the CPU, 32 on a GPU)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="steps preset (overrides --steps/--scheduler): " + "; ".join(
                       f"{p.name}: {p.description} (~{p.relative_cost:.2f}x the paper's cost)" for p in PRESETS.values()))
    p.add_argument("--deepcache", type=int, default=None, metavar="N",
                   help="DeepCache: recompute the deep UNet features every N-th step and reuse them in between "
                        "(1 = off; default: the preset's, else off)")
    p.add_argument("--audio-guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance on the audio: S > 1 pushes the mouth towards the speech and away "
                        "from silence, at twice the model calls (default 1: off, the paper's sampler); for models "
                        "trained with --audio-dropout")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (with freezing on the CPU): faster sampling after a one-time "
                        "compile of a few minutes (cached on disk for later runs); default: on a GPU for clips "
                        "long enough to repay it")
    p.add_argument("--sequential", action="store_true",
                   help="run decode, model, paste and encode one after another (default: overlapped threads "
                        "when the model is on a GPU or the CPU has cores to spare, where that measured faster)")
    p.add_argument("--overlap", action="store_true",
                   help="run decode and crop ahead of and paste and encode behind the model in threads")
    p.add_argument("--encoder-preset", choices=X264_PRESETS, default=DEFAULT_ENCODER_PRESET,
                   help=f"x264 speed preset of the output videos (default {DEFAULT_ENCODER_PRESET}: measured "
                        "fastest for its file size; medium: same size, twice the CPU)")
    p.add_argument("--paste", choices=PASTE_MODES, default="mouth",
                   help="mouth: only the generated lower half, feathered (default); box: the official paste")
    p.add_argument("--length-policy", choices=LENGTH_POLICIES, default="pingpong",
                   help="audio longer than the video: play it forward and backward (pingpong) or loop; "
                        "shortest: stop at the shorter of the two (official)")
    p.add_argument("--side-by-side", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a labelled source | Diff2Lip video (default path: <output>_side_by_side.mp4)")
    p.add_argument("--detector", choices=list(DETECTORS), default="s3fd", help="face detector")
    p.add_argument("--face", type=_face_point, default=None, metavar="X,Y",
                   help="lip-sync the face that contains this point (pixels in the reference frame, else frame 0), "
                        "followed through every shot by its appearance; default: the speaker, chosen by screen "
                        "presence and mouth motion against the clip's own sound")
    p.add_argument("--face-choice", choices=FACE_CHOICES, default="speaker",
                   help="speaker (default): one person in every shot; shots without them stay untouched. "
                        "largest: the largest face of each shot (a scene where several people speak)")
    p.add_argument("--pads", type=int, nargs=4, default=(0, 0, 0, 0), metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="pixels added around each detected face")
    p.add_argument("--audio-offset", type=int, default=0, help="shift audio by N frames (0 = official alignment)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim", help="sampler (paper: ddim)")
    p.add_argument("--compare-wav2lip", action="store_true",
                   help="also run Wav2Lip (non-commercial weights, downloaded on first use from Nekochu/Wav2Lip); the "
                        "side-by-side (written even without --side-by-side) becomes source | Wav2Lip | Diff2Lip")
    p.add_argument("--wav2lip-checkpoint", default=None, metavar="PATH",
                   help="Wav2Lip weights (wav2lip_gan.pth); default: $LIPSYNC_WAV2LIP_CHECKPOINT or the Hub")
    p.add_argument("--wav2lip-video", default=None, metavar="PATH",
                   help="an existing Wav2Lip result of the same clip and audio to compare with (Wav2Lip is not run)")
    p.add_argument("--score", action="store_true",
                   help="print LSE-D / LSE-C (SyncNet) of the source, Diff2Lip (and Wav2Lip) against the audio")
    p.add_argument("--syncnet-checkpoint", default=None, metavar="PATH",
                   help="SyncNet v2 weights (syncnet_v2.model); default: $LIPSYNC_SYNCNET_CHECKPOINT or the Hub")
    p.add_argument("--sync-expert", default=None, metavar="DIR",
                   help="score with an own lip-sync expert (the folder of python -m lipsync.train_syncnet) instead of "
                        "SyncNet v2: its figures are labelled 'own expert', not LSE-C/LSE-D")
    p.add_argument("--strict", action="store_true",
                   help="refuse a damaged video (frames that do not decode cleanly): exit 1 and write nothing; by "
                        "default the output is written and the damaged frames are named in a warning")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


class ProgressBars:
    """One tqdm bar per stage, driven by the engine's progress(stage, fraction, message) callback."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bars: Dict[str, object] = {}

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=1000, desc=f"{stage:>9}", leave=False, file=sys.stderr,
                                          bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        bar.update(int(round(fraction * 1000)) - bar.n)
        bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def job_options(args: argparse.Namespace):
    """The ``JobOptions`` that parsed CLI flags ask for."""
    from lipsync.job import JobOptions

    return JobOptions(
        num_inference_steps=args.steps, reference_frame=args.reference_frame, seed=args.seed,
        batch_size=args.batch_size, paste=args.paste, length_policy=args.length_policy, pads=tuple(args.pads),
        audio_offset=args.audio_offset, scheduler=args.scheduler, detector=args.detector,
        face_choice=args.face_choice, face_point=args.face,
        preset=args.preset, deepcache_interval=args.deepcache, audio_guidance=args.audio_guidance,
        compile=args.compile, overlap=False if args.sequential else (True if args.overlap else None),
        encoder_preset=args.encoder_preset,
        side_by_side=args.side_by_side is not None or args.compare_wav2lip or args.wav2lip_video is not None,
        compare_wav2lip=args.compare_wav2lip,
        wav2lip_checkpoint=args.wav2lip_checkpoint, wav2lip_video=args.wav2lip_video, score=args.score,
        syncnet_checkpoint=args.syncnet_checkpoint, sync_expert=args.sync_expert, strict=args.strict,
    )


def check_weights(args: argparse.Namespace) -> None:
    """Refuse within seconds, before any media is read or the model code is imported, when a weights file
    the job needs is neither local, nor cached, nor downloadable now (raises WeightsUnavailableError)."""
    from lipsync.model.loading import check_weights as check_diff2lip_weights

    check_diff2lip_weights(args.checkpoint)
    if args.compare_wav2lip and args.wav2lip_video is None:
        from lipsync.scoring.wav2lip import check_wav2lip_weights

        check_wav2lip_weights(args.wav2lip_checkpoint)
    if args.score and args.sync_expert is not None:
        from lipsync.scoring.syncnet_color import load_own_expert

        load_own_expert(args.sync_expert)  # a missing or damaged expert is refused before any work
    elif args.score:
        from lipsync.scoring.syncnet import check_syncnet_weights

        check_syncnet_weights(args.syncnet_checkpoint)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds the job like Ctrl-C, so every temporary file is removed."""


_received: list = []  # the signal that stopped the job, if one did


def _stop(signum, frame) -> None:
    # a second Ctrl-C or SIGTERM must not interrupt the clean-up the first one started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _received.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (0 done, 1 bad input, 130 Ctrl-C, 143 SIGTERM).

    Ctrl-C or SIGTERM at any point, start-up included, removes what the job had begun to write and prints
    one ``error:`` line.
    """
    handlers = None
    hook = sys.unraisablehook
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        sys.unraisablehook = _redeliver(hook)
    _received.clear()
    try:
        status = _run(argv)
        if _received and status != 0:  # the job ended early because of the signal, in its own words
            return _interrupted(_received[0])
        return status
    except KeyboardInterrupt:
        return _interrupted(signal.SIGINT)
    except Terminated:
        return _interrupted(signal.SIGTERM)
    except BaseException:
        # a library can turn the interrupt into its own error on the way out (numpy's start-up raises
        # ImportError when Ctrl-C lands in its C initialisation): the signal is still what ended the job
        if _received:
            return _interrupted(_received[0])
        raise
    finally:
        if handlers is not None:
            sys.unraisablehook = hook
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def _redeliver(previous):
    """An unraisable hook: Ctrl-C or SIGTERM whose exception was raised inside a finaliser (a ``__del__`` that
    garbage collection ran) is swallowed there, so the signal is sent again, to land in the job's own code."""

    def hook(unraisable) -> None:
        if _received and isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
            signum = _received.pop()
            signal.signal(signum, _stop)
            # from another thread, a moment later: sent from here, it would be raised inside this hook
            threading.Timer(0.02, os.kill, (os.getpid(), signum)).start()
            return
        previous(unraisable)

    return hook


def run(argv=None) -> None:
    """The command's entry point (``python -m lipsync`` and the ``lipsync`` script): :func:`main`, then exit
    with its status.

    After Ctrl-C or SIGTERM it exits at once (130 or 143, output flushed, the job already cleaned up): when
    the interrupt landed inside a library's start-up (numpy's C initialisation), Python would otherwise end
    the process by SIGINT on its way out, after the one "error:" line, instead of with the status.
    """
    status = main(argv)
    if signal.SIGINT in _received:  # (SIGTERM: a normal exit, which also lets killed ffmpeg children be reaped)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def _interrupted(signum) -> int:
    if signum == signal.SIGINT:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 130
    print("error: stopped by SIGTERM; no output was written", file=sys.stderr)
    return 143


def _run(argv) -> int:
    from lipsync.engine import LipSyncEngine

    args = build_parser().parse_args(argv)
    configure_logging()  # once: no doubled library lines, no retry or download chatter
    try:
        check_weights(args)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = job_options(args)
    engine = LipSyncEngine(checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, detector=args.detector,
                           compile=args.compile)
    bars = ProgressBars(enabled=not args.quiet) if stderr_is_terminal() else PlainProgress(enabled=not args.quiet)
    try:
        report = engine.run(args.video, args.audio, args.output, options, progress=bars,
                            side_by_side_path=args.side_by_side or None)
    except (LipSyncError, ValueError) as exc:
        bars.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseException:  # Ctrl-C, SIGTERM: main() prints the one line
        bars.close()
        raise
    bars.close()
    print(report.summary())
    if report.scores:
        print(report.scores_markdown())
    return 0


if __name__ == "__main__":
    run()

"""Starting the web app: the command line of ``python app.py`` / ``lipsync-app`` / ``python -m lipsync.app``.

    [--checkpoint P] [--device D] [--host H] [--port N] [--share] [--max-seconds S] [--max-upload-mb M]
    [--detector s3fd|mediapipe|opencv] [--wav2lip-checkpoint P] [--syncnet-checkpoint P] [--sync-expert DIR]
    [--cache-examples lazy|eager] [--mcp-server]

Importing this module builds nothing and loads no model: ``main()`` creates the one engine of the
process and ``build_demo(engine)`` the UI; the model loads on first use and is reused.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os

from lipsync.app.layout import build_demo
from lipsync.console import command_name, configure_logging
from lipsync.engine import LipSyncEngine
from lipsync.media.detectors import DETECTORS

DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_UPLOAD_MB = 50.0


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number") from None


def on_spaces() -> bool:
    """Whether the app runs on Hugging Face Spaces."""
    return os.environ.get("SYSTEM") == "spaces" or bool(os.environ.get("SPACE_ID"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=command_name("python app.py"),
                                     description="Diff2Lip Studio web app")
    parser.add_argument("--checkpoint", default=None,
                        help="pipeline folder, original .pt, or Hub repo (default: $LIPSYNC_CHECKPOINT or the paper's)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: GPU if available)")
    parser.add_argument("--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--max-seconds", type=float, default=_env_float("LIPSYNC_MAX_SECONDS", DEFAULT_MAX_SECONDS),
                        help="longest speech accepted, seconds; 0 = no limit (env LIPSYNC_MAX_SECONDS, default 60)")
    parser.add_argument("--max-upload-mb", type=float,
                        default=_env_float("LIPSYNC_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB),
                        help="largest upload, MB; 0 = no limit (env LIPSYNC_MAX_UPLOAD_MB, default 50)")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=os.environ.get("LIPSYNC_DETECTOR", "s3fd"),
                        help="default face detector in the UI (default s3fd)")
    parser.add_argument("--queue-size", type=int, default=16, help="most jobs waiting in the queue")
    parser.add_argument("--wav2lip-checkpoint", default=None,
                        help="Wav2Lip weights for 'Compare with Wav2Lip' (default: $LIPSYNC_WAV2LIP_CHECKPOINT or "
                             "wav2lip_gan.pth from the Hub, downloaded on first use; non-commercial licence). "
                             "Compare is offered only when these weights can be had")
    parser.add_argument("--sync-expert", default=None, metavar="DIR",
                        help="score lip sync with an own expert (the folder of python -m lipsync.train_syncnet) "
                             "instead of SyncNet v2; shown as 'own expert', not LSE-C/LSE-D")
    parser.add_argument("--syncnet-checkpoint", default=None,
                        help="SyncNet v2 weights for the lip-sync score (default: $LIPSYNC_SYNCNET_CHECKPOINT or "
                             "the Hub, downloaded on first use); the score is offered only when they can be had")
    parser.add_argument("--cache-examples", choices=("off", "lazy", "eager"),
                        default="lazy" if on_spaces() else "off",
                        help="cache the examples' results: lazy (on first click), eager (at start-up) or off "
                             "(default: lazy on Spaces, off elsewhere)")
    parser.add_argument("--mcp-server", action="store_true",
                        help="also serve the API as an MCP server for agents (needs: pip install 'gradio[mcp]')")
    parser.add_argument("--preload", action="store_true", default=bool(os.environ.get("SPACES_ZERO_GPU")),
                        help="load the model at start-up instead of on the first job (on by default on ZeroGPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")  # once, no doubled lines
    if args.mcp_server and importlib.util.find_spec("mcp") is None:
        raise SystemExit("--mcp-server needs Gradio's MCP support: pip install 'gradio[mcp]'")
    engine = LipSyncEngine(checkpoint=args.checkpoint, device=args.device, detector=args.detector)
    demo = build_demo(engine, max_seconds=args.max_seconds or None, default_detector=args.detector,
                      queue_size=args.queue_size, wav2lip_checkpoint=args.wav2lip_checkpoint,
                      syncnet_checkpoint=args.syncnet_checkpoint, sync_expert=args.sync_expert,
                      cache_examples=None if args.cache_examples == "off" else args.cache_examples)
    # (build_demo imports `spaces`, if any, before torch touches CUDA)
    if args.preload:
        engine.pipeline  # noqa: B018 - ZeroGPU wants the weights in the main process before the first job
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, mcp_server=args.mcp_server or None,
                max_file_size=int(args.max_upload_mb * 1024 * 1024) if args.max_upload_mb > 0 else None)


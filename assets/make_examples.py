"""Make the app's example files from public-domain and synthetic sources only.

    python assets/make_examples.py            # writes next to this script

Outputs (all small enough to commit):
    example_face.png    256x256 crop of scikit-image's ``astronaut()`` (NASA portrait of
                        Eileen Collins, public domain)
    example_face.mp4    the same crop with a slight, smooth head motion (rotation, shift,
                        zoom via cv2.warpAffine); 3 s, 25 fps, H.264 yuv420p, no audio
    example_speech.wav  espeak-ng text-to-speech, 16 kHz mono PCM
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from skimage import data

HERE = Path(__file__).resolve().parent
FPS = 25
SECONDS = 4.0
SIZE = 256
FACE_CENTER = (225.0, 125.0)  # x, y of the face in astronaut() (OpenCV cascade box 175,69 - 274,178)
CROP = 240  # source pixels around the face, resized to SIZE
SPEECH = "Hello! I am Diff2Lip Studio. Give me a face and a voice, and I will move the lips."


def _frame(image: np.ndarray, t: float) -> np.ndarray:
    """One (SIZE, SIZE, 3) uint8 RGB frame at time ``t`` seconds: a gentle nod, sway and zoom."""
    cx, cy = FACE_CENTER
    angle = 2.5 * math.sin(2 * math.pi * 0.4 * t)  # degrees
    scale = 1.0 + 0.02 * math.sin(2 * math.pi * 0.25 * t)
    shift_x = 3.0 * math.sin(2 * math.pi * 0.3 * t + 1.0)
    shift_y = 2.0 * math.sin(2 * math.pi * 0.5 * t)
    # rotate about the chin so the head tilts rather than spins
    matrix = cv2.getRotationMatrix2D((cx, cy + 60.0), angle, scale)
    matrix[:, 2] += (shift_x, shift_y)
    moved = cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
    x0 = int(round(cx - CROP / 2))
    y0 = max(0, int(round(cy - CROP / 2)))
    crop = moved[y0 : y0 + CROP, x0 : x0 + CROP]
    return cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def make_photo(path: Path) -> None:
    image = data.astronaut()  # (512, 512, 3) uint8 RGB
    cv2.imwrite(str(path), cv2.cvtColor(_frame(image, 0.0), cv2.COLOR_RGB2BGR))


def make_video(path: Path, ffmpeg: str) -> None:
    image = data.astronaut()
    frames = np.stack([_frame(image, i / FPS) for i in range(int(SECONDS * FPS))])  # (N, SIZE, SIZE, 3)
    command = [
        ffmpeg, "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE}x{SIZE}", "-r", str(FPS), "-i", "-",
        "-c:v", "libx264", "-preset", "slow", "-crf", "26", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(path),
    ]
    subprocess.run(command, input=frames.tobytes(), check=True)


def make_speech(path: Path, ffmpeg: str) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "175", "-w", str(raw), SPEECH], check=True)
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(raw), "-ac", "1", "-ar", "16000",
                        "-c:a", "pcm_s16le", str(path)], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: assets/)")
    args = parser.parse_args(argv)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is not installed (apt-get install ffmpeg)")
    args.out.mkdir(parents=True, exist_ok=True)
    make_photo(args.out / "example_face.png")
    make_video(args.out / "example_face.mp4", ffmpeg)
    make_speech(args.out / "example_speech.wav", ffmpeg)
    for name in ("example_face.png", "example_face.mp4", "example_speech.wav"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()

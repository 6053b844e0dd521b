"""Dataset preparation, the library behind ``python -m lipsync.prepare --videos DIR_OR_FILELIST --output DATASET``.

Every clip goes through exactly the face stage inference uses (``lipsync.media.source.detect_frames`` ->
``lipsync.media.source.track_faces`` -> ``lipsync.media.crop.crop_faces``), so the model trains on the crops it will see
at inference. Per clip one uncompressed tar shard is written (the unit of work and of resume)::

    DATASET/
      manifest.json                    clips (frames, fps, seconds, faces found, valid runs, split), skipped, failed
      shards/<key>.tar                 <key>.json        the clip's manifest record
                                       <key>.faces.npy   (N, 128, 128, 3) uint8 RGB crops of EVERY frame
                                       <key>.boxes.npy   (N, 4) int64 x1, y1, x2, y2 the crops were cut from
                                       <key>.valid.npy   (N,) bool frames the engine would lip-sync
                                       <key>.found.npy   (N,) bool frames where the detector found the face
                                       <key>.audio.npy   (S,) float32 16 kHz mono, aligned to frame 0
                                       <key>.mel.npy     (80, T) float32 lipsync.media.audio.melspectrogram(audio)

The mel window of frame i is ``lipsync.media.audio.mel_windows(mel, fps, N)[i]``, exactly what inference uses when
the clip's own audio drives it. Members are plain ``.npy`` files in an uncompressed tar: the shards stream
(``tar tf``, WebDataset-style readers group members by key) and ``lipsync.training.data`` memory-maps them.

A shard is written to a temporary name and renamed when complete; then a line is appended to
``progress.jsonl`` (the journal). ``manifest.json`` is rewritten atomically from time to time and at the end (the
journal is then emptied), so it lists only complete shards; a re-run replays the journal and resumes where the
last run stopped, even after a hard kill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import sys
import tarfile
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from lipsync.errors import InvalidMediaError, LipSyncError, NoFaceError, OutputPathError
from lipsync.job import FACE_SIZE
from lipsync.media import audio as audio_io
from lipsync.media.crop import crop_faces
from lipsync.media.detectors import DETECTORS, get_detector
from lipsync.media.source import FrameSource, detect_frames, track_faces

logger = logging.getLogger(__name__)

FORMAT = "diff2lip-dataset"
VERSION = 1
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv")
MEMBERS = ("faces", "boxes", "valid", "found", "audio", "mel")  # the .npy members of a shard, in order
JPEG_MEMBERS = ("faces_jpeg", "faces_jpeg_offsets") + MEMBERS[1:]  # with --faces jpeg (lipsync.training.jpeg_faces)
FACE_FORMATS = ("raw", "jpeg")
JOURNAL = "progress.jsonl"
MANIFEST_EVERY_S = 30.0  # how often a run rewrites manifest.json (the journal records every clip at once)


class DatasetPrepError(LipSyncError):
    """Bad input for dataset preparation (no videos, bad filelist, settings that differ from the dataset's)."""


@dataclasses.dataclass(frozen=True)
class ClipTask:
    """One clip to prepare: ``id`` names it in the manifest (relative path without extension)."""

    id: str
    path: str


@dataclasses.dataclass(frozen=True)
class PrepSettings:
    """What must be the same for every clip of a dataset."""

    detector: str = "s3fd"
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)
    chunk_frames: int = 32
    device: str = "cpu"
    faces: str = "raw"  # "jpeg": the crops stored as JPEG (about 8x smaller), decoded by the loader
    jpeg_quality: int = 92


# ----------------------------------------------------------------------------------------------------------
# Inputs


def list_clips(videos: str | Path, root: str | Path | None = None) -> List[ClipTask]:
    """The clips to prepare, from a folder of videos or a filelist.

    Args:
        videos: a folder (searched recursively for video files) or a text filelist. Filelist lines are either
            paths to videos or official VoxCeleb2/LRS2 entries such as ``id00017/01dfn2spqyE/00001`` (the
            first whitespace-separated token is used; ``#`` starts a comment), resolved against ``root`` (default:
            the filelist's folder) with or without a video extension.
        root: folder the filelist entries are relative to.
    Returns:
        tasks sorted by id; a filelist entry whose video does not exist is returned with its best-guess path and
        fails (counted) when prepared.
    Raises:
        DatasetPrepError: the folder or filelist is missing or holds no videos.
    """
    videos = Path(videos).expanduser()
    if videos.is_dir():
        files = sorted(p for p in videos.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise DatasetPrepError(
                f"no video files ({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}) in {videos}; pass a folder of "
                "talking-face videos or a filelist to --videos")
        return _unique([ClipTask(p.relative_to(videos).with_suffix("").as_posix(), str(p)) for p in files])
    if not videos.is_file():
        raise DatasetPrepError(f"--videos {videos} does not exist; pass a folder of videos or a filelist")
    if videos.suffix.lower() in VIDEO_EXTENSIONS:
        return [ClipTask(videos.stem, str(videos))]
    base = Path(root).expanduser() if root is not None else videos.parent
    if root is not None and not base.is_dir():
        raise DatasetPrepError(f"--root {base} is not a folder; pass the folder the filelist entries are relative to")
    tasks = []
    try:
        lines = videos.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetPrepError(f"{videos} is not a text filelist ({exc.reason}); pass a folder of videos or a "
                               "filelist with one clip per line") from exc
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        token = entry.split()[0]
        path = _resolve_entry(token, base)
        clip_id = token[: -len(Path(token).suffix)] if Path(token).suffix.lower() in VIDEO_EXTENSIONS else token
        tasks.append(ClipTask(Path(clip_id).as_posix().lstrip("/"), str(path)))
    if not tasks:
        raise DatasetPrepError(f"the filelist {videos} lists no clips; write one clip per line, e.g. "
                               "id00017/01dfn2spqyE/00001 (relative to --root) or a path to a video")
    return _unique(tasks)


def _resolve_entry(token: str, base: Path) -> Path:
    path = Path(token).expanduser()
    candidates = [path] if path.is_absolute() else [base / path]
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        candidates += [Path(str(c) + ext) for c in list(candidates) for ext in VIDEO_EXTENSIONS]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _unique(tasks: Sequence[ClipTask]) -> List[ClipTask]:
    seen: Dict[str, ClipTask] = {}
    for task in tasks:
        seen.setdefault(task.id, task)
    return sorted(seen.values(), key=lambda t: t.id)


def shard_key(clip_id: str) -> str:
    """File-name-safe key of a clip id (no dots or slashes, unique through a short hash): shards/<key>.tar."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", clip_id).strip("_")[-80:] or "clip"
    return f"{stem}-{hashlib.sha1(clip_id.encode('utf-8')).hexdigest()[:8]}"


# ----------------------------------------------------------------------------------------------------------
# One clip


_DETECTORS: Dict[Tuple[str, str], object] = {}


def _detector(settings: PrepSettings):
    key = (settings.detector, settings.device)
    if key not in _DETECTORS:
        _DETECTORS[key] = get_detector(settings.detector, device=settings.device)
    return _DETECTORS[key]


def runs_of(mask: np.ndarray) -> List[List[int]]:
    """[start, stop) ranges of consecutive True values of a (N,) bool mask."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return [[int(a), int(b)] for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def load_clip_audio(source: FrameSource) -> Tuple[np.ndarray, int]:
    """The clip's 16 kHz mono audio, aligned so that sample 0 is at video frame 0.

    Returns (wav (S,) float32 in [-1, 1], shift): shift > 0 samples were dropped from the start (the audio
    stream starts before the video), shift < 0 zeros were prepended (it starts after).
    """
    wav = audio_io.load_audio(source.path)
    info = source.info
    shift = 0
    if info is not None and info.audio_start is not None:
        shift = int(round((info.video_start - info.audio_start) * audio_io.DEFAULT_AUDIO.sample_rate))
    if shift > 0:
        wav = wav[shift:]
    elif shift < 0:
        wav = np.concatenate([np.zeros(-shift, np.float32), wav])
    return np.ascontiguousarray(wav, dtype=np.float32), shift


def crop_clip(source: FrameSource, boxes: np.ndarray, count: int, chunk_frames: int = 32) -> np.ndarray:
    """Second pass over the clip: the engine's crop (``lipsync.media.crop.crop_faces``) of frames [0, count).

    Args:
        boxes: (count, 4) int64 boxes from ``track_faces`` (placeholders on invalid frames).
    Returns:
        faces (count, 128, 128, 3) uint8; frames whose (placeholder) box is empty, or that did not decode, are 0.
    """
    faces = np.zeros((count, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    done = 0
    for chunk in source.chunks(chunk_frames, count=count):
        chunk = chunk[: count - done]
        sel = np.flatnonzero(ok[done: done + len(chunk)])
        if len(sel):
            faces[done + sel] = crop_faces(chunk[sel], boxes[done + sel], FACE_SIZE)
        done += len(chunk)
        if done >= count:
            break
    return faces


def prepare_clip(task: ClipTask, settings: PrepSettings, shard_dir: str | Path) -> dict:
    """Prepare one clip and write its shard. Runs in a worker process; never raises for a bad clip.

    Returns:
        {"status": "done", "record": {...}} with the clip's manifest record (shard already renamed into place),
        {"status": "skipped", "id", "source", "reason", "frames"} when no frame has a face, or
        {"status": "failed", "id", "source", "reason"} when the clip cannot be read.
    """
    started = time.perf_counter()
    head = {"id": task.id, "source": task.path}
    try:
        source = FrameSource(Path(task.path))
        if source.is_image:
            return {"status": "failed", **head, "reason": "a still image, not a video"}
        wav, shift = load_clip_audio(source)
        detections = detect_frames(source, _detector(settings), source.num_frames, settings.chunk_frames)
        frames = len(detections)
        try:
            boxes, valid, found, refused = track_faces(detections, source, settings.pads)
        except NoFaceError:
            return {"status": "skipped", **head, "reason": "no face in any frame", "frames": frames}
        faces = crop_clip(source, boxes, frames, settings.chunk_frames)
        source.close()
    except (InvalidMediaError, OSError) as exc:  # unreadable video, no audio track, ...
        return {"status": "failed", **head, "reason": str(exc) or type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - one odd clip must not end a run over thousands; it is reported
        logger.exception("unexpected error on %s", task.path)
        return {"status": "failed", **head, "reason": f"unexpected {type(exc).__name__}: {exc}"}
    mel = audio_io.melspectrogram(wav).astype(np.float32)  # (80, T)
    fps = Fraction(source.fps)
    key = shard_key(task.id)
    record = {
        "id": task.id,
        "source": task.path,
        "shard": f"shards/{key}.tar",
        "key": key,
        "frames": frames,
        "fps": f"{fps.numerator}/{fps.denominator}",
        "seconds": round(frames / float(fps), 4),
        "width": source.width,
        "height": source.height,
        "faces_found": int(found.sum()),
        "faces_interpolated": int((valid & ~found).sum()),
        "faces_missing": int((~valid).sum()),  # no face, or (counted in it) a face with the mouth out of the picture
        "faces_refused": int(refused.sum()),
        "valid_runs": runs_of(valid),
        "audio_samples": int(len(wav)),
        "audio_seconds": round(audio_io.audio_duration(wav), 4),
        "audio_shift_samples": shift,
        "mel_columns": int(mel.shape[1]),
        "prep_seconds": round(time.perf_counter() - started, 2),
    }
    arrays = {"faces": faces, "boxes": np.asarray(boxes, np.int64), "valid": valid, "found": found,
              "audio": wav, "mel": mel}
    if settings.faces == "jpeg":
        from lipsync.training.jpeg_faces import encode_faces

        arrays["faces_jpeg"], arrays["faces_jpeg_offsets"] = encode_faces(arrays.pop("faces"), settings.jpeg_quality)
        record["faces_format"], record["jpeg_quality"] = "jpeg", int(settings.jpeg_quality)
    write_shard(Path(shard_dir) / f"{key}.tar", key, record, arrays)
    return {"status": "done", "record": record}


def write_shard(path: Path, key: str, record: dict, arrays: Dict[str, np.ndarray]) -> None:
    """Write an uncompressed tar of ``<key>.json`` and ``<key>.<name>.npy`` members; appears only when complete."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_member(tar, f"{key}.json", json.dumps(record, indent=1).encode("utf-8"))
            for name in (JPEG_MEMBERS if "faces_jpeg" in arrays else MEMBERS):
                buffer = io.BytesIO()
                np.save(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                _add_member(tar, f"{key}.{name}.npy", buffer.getbuffer())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add_member(tar: tarfile.TarFile, name: str, data) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# ----------------------------------------------------------------------------------------------------------
# The dataset folder


def _empty_manifest(settings: PrepSettings) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "face_size": FACE_SIZE,
        "detector": settings.detector,
        "pads": list(settings.pads),
        "faces": settings.faces,
        "audio": dataclasses.asdict(audio_io.DEFAULT_AUDIO),
        "split": {},
        "clips": [],
        "skipped": [],
        "failed": [],
    }


def read_manifest(root: str | Path) -> dict:
    """Load ``root/manifest.json``; raise DatasetPrepError when it is not a Diff2Lip dataset manifest."""
    path = Path(root) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetPrepError(f"{path} is corrupt ({exc}); delete the dataset folder and run python -m "
                               "lipsync.prepare again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("clips"), list):
        raise DatasetPrepError(f"{path} is not a Diff2Lip dataset manifest (made by python -m lipsync.prepare); "
                               "choose another --output folder")
    return manifest


def write_manifest(root: str | Path, manifest: dict) -> None:
    """Atomically (temp file + rename) write ``root/manifest.json``."""
    path = Path(root) / "manifest.json"
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(manifest, out, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_output(output: Path, settings: PrepSettings) -> dict:
    """Create/check the output folder; return the existing manifest (resume) or a new one."""
    try:
        (output / "shards").mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=output / "shards", prefix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"cannot write the dataset to {output}: {exc.strerror or exc}; choose a writable "
                              "--output folder") from exc
    for stale in (output / "shards").glob(".*.tmp-*"):  # shards of an interrupted run
        stale.unlink(missing_ok=True)
    manifest = read_manifest(output) if (output / "manifest.json").exists() else _empty_manifest(settings)
    _replay_journal(output, manifest)
    if manifest.get("detector") != settings.detector or list(manifest.get("pads", [])) != list(settings.pads):
        raise DatasetPrepError(
            f"{output} was prepared with --detector {manifest.get('detector')} and pads {manifest.get('pads')}; "
            f"this run asks for --detector {settings.detector} and pads {list(settings.pads)}. Use the same settings "
            "to resume, or another --output folder")
    if manifest.get("faces", "raw") != settings.faces:
        raise DatasetPrepError(f"{output} stores its faces as {manifest.get('faces', 'raw')}, this run asks for "
                               f"--faces {settings.faces}; use the same --faces to resume, or another --output folder")
    # keep only clips whose shard really exists
    manifest["clips"] = [c for c in manifest["clips"] if (output / c["shard"]).is_file()]
    return manifest


def _replay_journal(output: Path, manifest: dict) -> None:
    """Merge the journal of a run that ended before writing manifest.json (a torn last line is ignored)."""
    path = output / JOURNAL
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        _merge(manifest, result)


def _merge(manifest: dict, result: dict) -> None:
    """Put one prepare_clip result into the manifest (replacing an older entry of the same clip)."""
    status = result.get("status")
    clip_id = result["record"]["id"] if status == "done" else result.get("id")
    for name in ("clips", "skipped", "failed"):
        manifest[name] = [c for c in manifest[name] if c["id"] != clip_id]
    if status == "done":
        manifest["clips"].append(result["record"])
    elif status == "skipped":
        manifest["skipped"].append({k: result[k] for k in ("id", "source", "reason", "frames")})
    elif status == "failed":
        manifest["failed"].append({k: result[k] for k in ("id", "source", "reason")})


def assign_split(manifest: dict, val_fraction: float = 0.0, val_clips: Iterable[str] = ()) -> None:
    """Set each clip's "split" to "train" or "val", by CLIP (all frames of a clip share a split).

    ``val_clips`` (ids, or shell patterns such as ``id00017/*``) go to validation; otherwise the
    ``round(val_fraction * n)`` clips (at least 1 when val_fraction > 0 and n >= 2; all when it is 1) with the
    smallest SHA-1 of their id do, so the split is stable and independent of processing order.
    """
    import fnmatch

    clips = manifest["clips"]
    patterns = list(val_clips)
    if patterns:
        for clip in clips:
            clip["split"] = "val" if any(fnmatch.fnmatchcase(clip["id"], p) for p in patterns) else "train"
    else:
        n = len(clips)
        k = int(round(val_fraction * n))
        if val_fraction > 0 and n >= 2:
            k = max(k, 1)
        if val_fraction >= 1:
            k = n
        order = sorted(clips, key=lambda c: hashlib.sha1(c["id"].encode("utf-8")).hexdigest())
        val = {c["id"] for c in order[:k]}
        for clip in clips:
            clip["split"] = "val" if clip["id"] in val else "train"
    manifest["split"] = {"val_fraction": val_fraction, "val_clips": patterns,
                         "train": sum(c["split"] == "train" for c in clips),
                         "val": sum(c["split"] == "val" for c in clips)}


# ----------------------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass
class PrepReport:
    """What one run did."""

    output: Path
    prepared: int = 0  # clips prepared in this run
    resumed: int = 0  # clips already in the manifest (skipped by this run)
    skipped: List[dict] = dataclasses.field(default_factory=list)  # no face at all (this run)
    failed: List[dict] = dataclasses.field(default_factory=list)  # unreadable (this run)
    seconds: float = 0.0
    manifest: dict = dataclasses.field(default_factory=dict, repr=False)

    def summary(self) -> str:
        """One line: clips, frames, faces, split, skipped and failed, time."""
        clips = self.manifest.get("clips", [])
        frames = sum(c["frames"] for c in clips)
        valid = frames - sum(c["faces_missing"] for c in clips)
        hours = sum(c["seconds"] for c in clips) / 3600
        split = self.manifest.get("split", {})
        return (f"{self.output}: {len(clips)} clips ({self.prepared} new, {self.resumed} already done), "
                f"{frames} frames ({hours * 60:.1f} min), {valid} with a face; "
                f"{split.get('train', 0)} train / {split.get('val', 0)} val clips; "
                f"{len(self.manifest.get('skipped', []))} skipped (no face), {len(self.manifest.get('failed', []))} failed; "
                f"{self.seconds:.1f} s")


def prepare_dataset(videos, output, settings: Optional[PrepSettings] = None, root=None, workers: int = 1,
                    val_fraction: float = 0.0, val_clips: Sequence[str] = (), progress: bool = True,
                    limit: Optional[int] = None) -> PrepReport:
    """Prepare (or resume preparing) a dataset folder. See the module docstring for the layout.

    Args:
        videos: folder of videos or filelist (see :func:`list_clips`); root: the filelist's base folder.
        output: dataset folder (created; an existing one is resumed: finished and faceless clips are skipped).
        settings: detector, pads, decode chunk size.
        workers: processes working on clips in parallel (1: in this process).
        val_fraction / val_clips: validation split by clip (see :func:`assign_split`).
        progress: show a tqdm bar.
        limit: prepare at most this many clips (after sorting by id), e.g. for a quick look.
    Returns:
        PrepReport (``summary()`` is the one-line report).
    Raises:
        DatasetPrepError, OutputPathError: no videos, unwritable output, other settings than the dataset's.
    """
    started = time.perf_counter()
    settings = settings or PrepSettings()
    if settings.detector.strip().lower() not in DETECTORS:
        raise DatasetPrepError(f"unknown face detector {settings.detector!r}; choose one of "
                               f"{', '.join(DETECTORS)}")
    if not 0.0 <= float(val_fraction) <= 1.0:
        raise DatasetPrepError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    from lipsync.training.jpeg_faces import MIN_QUALITY

    if settings.faces not in FACE_FORMATS or not MIN_QUALITY <= int(settings.jpeg_quality) <= 100:
        raise DatasetPrepError(f"--faces must be one of {', '.join(FACE_FORMATS)} and --jpeg-quality "
                               f"{MIN_QUALITY}..100; got {settings.faces!r} and {settings.jpeg_quality}")
    tasks = list_clips(videos, root)[: limit if limit else None]
    output = Path(output).expanduser().absolute()
    manifest = _open_output(output, settings)
    done = {c["id"] for c in manifest["clips"]} | {s["id"] for s in manifest["skipped"]}
    todo = [t for t in tasks if t.id not in done]
    report = PrepReport(output=output, resumed=len(tasks) - len(todo), manifest=manifest)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="prepare", unit="clip", file=sys.stderr)

    journal = open(output / JOURNAL, "a", encoding="utf-8")
    last_write = time.monotonic()

    def save() -> None:
        manifest["clips"].sort(key=lambda c: c["id"])
        assign_split(manifest, val_fraction, val_clips)
        write_manifest(output, manifest)

    def collect(result: dict) -> None:
        nonlocal last_write
        journal.write(json.dumps(result) + "\n")  # first the journal: the shard is complete and in place
        journal.flush()
        os.fsync(journal.fileno())
        _merge(manifest, result)
        status = result["status"]
        if status == "done":
            report.prepared += 1
        elif status == "skipped":
            report.skipped.append(manifest["skipped"][-1])
            logger.warning("skipped %s: %s", result["id"], result["reason"])
        else:
            report.failed.append(manifest["failed"][-1])
            logger.warning("failed %s: %s", result["id"], result["reason"])
        if time.monotonic() - last_write > MANIFEST_EVERY_S:
            save()
            last_write = time.monotonic()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(done=report.prepared, skipped=len(report.skipped), failed=len(report.failed))

    shard_dir = output / "shards"
    if todo:
        _detector(settings)  # fail fast (unknown detector, weights unavailable) before any clip
    try:
        if workers <= 1 or len(todo) <= 1:
            for task in todo:
                collect(prepare_clip(task, settings, shard_dir))
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no forked threads or half-initialised libraries
            with ProcessPoolExecutor(max_workers=int(workers), mp_context=context,
                                     initializer=_init_worker) as pool:
                pending, queue = set(), iter(todo)
                while True:
                    for task in queue:  # a few clips in flight per worker, not the whole list at once
                        pending.add(pool.submit(prepare_clip, task, settings, shard_dir))
                        if len(pending) >= 2 * int(workers):
                            break
                    if not pending:
                        break
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        collect(future.result())
    finally:
        if bar is not None:
            bar.close()
        save()  # also after an interrupt: what is done stays done
        journal.close()
    (output / JOURNAL).unlink(missing_ok=True)  # everything is in manifest.json now
    report.seconds = time.perf_counter() - started
    return report


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the processes already use the cores

"""Dataset preparation and training samples: the engine's own crops and mel windows, faceless clips and spans,
resume, split by clip, sample shapes, clear errors."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_ffmpeg

from lipsync.media import audio as audio_io
from lipsync.prepare import main as prepare_main
from lipsync.training import prepare
from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
from lipsync.model.pipeline import default_scheduler
from lipsync.training.data import DatasetError, Diff2LipDataset, load_validation_clips, open_clip
from lipsync.media.writer import VideoWriter
from lipsync.media.reader import iter_frames

TRAIN_CLIP = "train/train_06_videoretalking_3.mp4"  # 590x590, 25 fps, audio and video start together
FRAMES = 30
GAP = (8, 22)  # frames blanked in the "gap" clip: 14 > the 12 frames the engine interpolates


class RecordingPipeline:
    """Stands in for Diff2LipPipeline inside the engine: records what the engine feeds it, returns the crops."""

    def __init__(self):
        self.scheduler = default_scheduler()
        self.faces, self.mels = [], []

    def __call__(self, faces, reference_faces, mels, output_type="uint8", **kwargs):
        self.faces.append(np.array(faces))
        self.mels.append(np.array(mels))
        return SimpleNamespace(frames=np.array(faces))


@pytest.fixture(scope="module")
def videos(media_dir, tmp_path_factory):
    """A folder of 3 short clips cut from a training clip: whole face, a faceless span, no face at all."""
    folder = tmp_path_factory.mktemp("videos")
    clip = folder / "speaker" / "clip.mp4"
    clip.parent.mkdir()
    run_ffmpeg("-i", str(media_dir / TRAIN_CLIP), "-frames:v", str(FRAMES), "-t", f"{FRAMES / 25:.2f}",
               "-vf", "scale=256:256", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    frames = np.concatenate(list(iter_frames(clip)))
    gap = frames.copy()
    gap[GAP[0]:GAP[1]] = 128
    with VideoWriter(folder / "speaker" / "gap.mp4", 25, (gap.shape[2], gap.shape[1]), audio_path=clip) as writer:
        writer.write(gap)
    run_ffmpeg("-f", "lavfi", "-i", "color=gray:s=128x96:d=0.6", "-f", "lavfi", "-i", "sine=f=220:d=0.6",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(folder / "gray.mp4"))
    return folder


@pytest.fixture(scope="module")
def dataset(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    report = prepare.prepare_dataset(videos, out, prepare.PrepSettings(detector="opencv"), workers=1,
                                     val_clips=["speaker/gap"], progress=False)
    return out, report


def records(root):
    return {c["id"]: c for c in json.loads((Path(root) / "manifest.json").read_text())["clips"]}


def test_crops_and_mel_windows_are_the_engines(videos, dataset, media_dir, tmp_path):
    root, _ = dataset
    clip = videos / "speaker" / "clip.mp4"
    record = records(root)["speaker/clip"]
    arrays = open_clip(root, record)
    assert record["frames"] == FRAMES == len(arrays.faces)
    valid = np.asarray(arrays.valid)
    assert valid.sum() >= FRAMES - 2  # a frontal talking head: the face is found (nearly) everywhere

    # crops: the engine lip-syncing this clip with a longer audio (ping-pong covers every frame)
    pipe = RecordingPipeline()
    engine = LipSyncEngine(pipeline=pipe, detector="opencv")
    engine.run(clip, media_dir / "tts_en.wav", tmp_path / "a.mp4",
               JobOptions(detector="opencv", side_by_side=False, chunk_frames=FRAMES))
    engine_faces = pipe.faces[0]  # the first chunk: frames 0..39 forward, valid ones only
    np.testing.assert_array_equal(np.asarray(arrays.faces)[valid], engine_faces)  # bit-equal

    # mel windows: the engine driven by the clip's own audio
    pipe.faces, pipe.mels = [], []  # the same engine: its detections of the clip are reused
    report = engine.run(clip, clip, tmp_path / "b.mp4",
                        JobOptions(detector="opencv", side_by_side=False, chunk_frames=FRAMES, length_policy="shortest"))
    engine_mels = np.concatenate(pipe.mels)  # (valid frames of the output, 80, 16)
    n = report.frames
    mel = np.asarray(arrays.mel)
    np.testing.assert_array_equal(mel, audio_io.melspectrogram(audio_io.load_audio(clip)).astype(np.float32))
    ours = audio_io.mel_windows(mel, 25, num_frames=n)[valid[:n]]
    np.testing.assert_array_equal(ours, engine_mels)

    # the samples carry exactly those windows and crops
    ds = Diff2LipDataset(root, "train")
    rows = [i for i in range(len(ds)) if ds.window(i)[0] == list(records(root)).index("speaker/clip")]
    assert len(rows) >= FRAMES - 12
    for i in rows[::5]:
        sample = ds[i]
        s = sample["start"]
        np.testing.assert_array_equal(sample["mels"].numpy(), audio_io.mel_windows(mel, 25, num_frames=n)[s:s + 5])
        expected = torch.from_numpy(np.array(arrays.faces[s:s + 5])).permute(0, 3, 1, 2).float() / 255 * 2 - 1
        assert torch.equal(sample["faces"], expected)


def test_faceless_clip_and_span_are_skipped_and_counted(dataset):
    root, report = dataset
    manifest = json.loads((root / "manifest.json").read_text())
    assert [s["id"] for s in manifest["skipped"]] == ["gray"] and "no face" in manifest["skipped"][0]["reason"]
    assert [s["id"] for s in report.skipped] == ["gray"]
    assert "1 skipped (no face)" in report.summary()
    gap = records(root)["speaker/gap"]
    assert gap["faces_missing"] >= GAP[1] - GAP[0]
    assert all(b <= GAP[0] or a >= GAP[1] for a, b in gap["valid_runs"])
    ds = Diff2LipDataset(root, "val")  # the gap clip is the validation split
    starts = [ds.window(i)[1] for i in range(len(ds))]
    assert starts and all(s + 5 <= GAP[0] or s >= GAP[1] for s in starts)  # no window touches the gap


def test_split_is_by_clip(dataset):
    root, _ = dataset
    train, val = Diff2LipDataset(root, "train"), Diff2LipDataset(root, "val")
    train_clips = {train.window(i)[0] for i in range(len(train))}
    val_clips = {val.window(i)[0] for i in range(len(val))}
    assert train_clips and val_clips and not train_clips & val_clips
    # fraction split: whole clips, stable, independent of order
    manifest = {"clips": [{"id": f"id{k:05d}/vid/{k:05d}"} for k in range(20)]}
    prepare.assign_split(manifest, val_fraction=0.25)
    val_ids = {c["id"] for c in manifest["clips"] if c["split"] == "val"}
    assert len(val_ids) == 5 and manifest["split"] == {"val_fraction": 0.25, "val_clips": [], "train": 15, "val": 5}
    manifest["clips"].reverse()
    prepare.assign_split(manifest, val_fraction=0.25)
    assert {c["id"] for c in manifest["clips"] if c["split"] == "val"} == val_ids
    prepare.assign_split(manifest, val_fraction=0.01)
    assert sum(c["split"] == "val" for c in manifest["clips"]) == 1  # at least one clip when asked for any


def test_samples_shapes_ranges_reference_and_determinism(dataset):
    root, _ = dataset
    ds = Diff2LipDataset(root, "train", seed=3)
    sample = ds[5]
    assert sample["faces"].shape == (5, 3, 128, 128) and sample["faces"].dtype == torch.float32
    assert sample["reference"].shape == (3, 128, 128)
    assert sample["mels"].shape == (5, 80, 16) and sample["sync_mel"].shape == (1, 80, 16)
    assert sample["audio"].shape == (3200,)
    for key in ("faces", "reference"):
        assert -1 <= sample[key].min() < -0.5 and 0.5 < sample[key].max() <= 1
    assert -4 <= sample["mels"].min() and sample["mels"].max() <= 4
    clip, start = ds.window(5)
    arrays = ds.clip_arrays(clip)
    c = int(80 * start / 25)
    np.testing.assert_array_equal(sample["sync_mel"][0].numpy(), np.asarray(arrays.mel)[:, c:c + 16])
    np.testing.assert_array_equal(sample["audio"].numpy(), np.asarray(arrays.audio)[200 * c:200 * c + 3200])
    refs = set()
    for i in range(len(ds)):
        clip, start = ds.window(i)
        r = ds.reference_index(i)
        assert not start <= r < start + 5 and ds.clip_arrays(clip).valid[r]
        refs.add(r)
    assert len(refs) > 5  # references vary over the clip
    again = Diff2LipDataset(root, "train", seed=3)[5]
    assert all(torch.equal(sample[k], again[k]) for k in ("faces", "reference", "mels", "audio"))
    other = Diff2LipDataset(root, "train", seed=4)
    assert any(other.reference_index(i) != ds.reference_index(i) for i in range(len(ds)))
    small = Diff2LipDataset(root, "train", image_size=64, seed=3)[5]
    assert small["faces"].shape == (5, 3, 64, 64) and small["reference"].shape == (3, 64, 64)
    assert torch.equal(small["mels"], sample["mels"])
    grid = load_validation_clips(root, "val", max_clips=2, frames_per_clip=3)
    assert len(grid) == 3 and all(s["id"] == "speaker/gap" for s in grid)


def test_resume_skips_finished_clips_and_an_interrupted_clip_leaves_no_shard(videos, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    settings = prepare.PrepSettings(detector="opencv")
    real_save = np.save

    def crash_on_mel(file, arr, *args, **kwargs):  # the process dies while writing the clip's shard
        if arr.ndim == 2 and arr.shape[0] == 80:
            raise KeyboardInterrupt
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", crash_on_mel)
    monkeypatch.setattr(prepare, "write_manifest", lambda root, manifest: None)  # a hard kill: no clean-up at all
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_dataset(videos, out, settings, progress=False, limit=2)  # gray (skipped), then clip
    monkeypatch.undo()
    assert not (out / "manifest.json").exists() and list((out / "shards").iterdir()) == []  # no half shard
    journal = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [(r["status"], r["id"]) for r in journal] == [("skipped", "gray")]

    first = prepare.prepare_dataset(videos, out, settings, progress=False, limit=2)
    assert (first.prepared, first.resumed) == (1, 1)  # the journal said gray was done
    assert not (out / "progress.jsonl").exists()  # all in manifest.json now
    assert [s["id"] for s in json.loads((out / "manifest.json").read_text())["skipped"]] == ["gray"]
    shard = out / records(out)["speaker/clip"]["shard"]
    stamp = shard.stat().st_mtime_ns
    second = prepare.prepare_dataset(videos, out, settings, progress=False, limit=2)
    assert (second.prepared, second.resumed) == (0, 2) and "0 new, 2 already done" in second.summary()
    assert shard.stat().st_mtime_ns == stamp and list(records(out)) == ["speaker/clip"]
    with pytest.raises(prepare.DatasetPrepError, match="--detector opencv"):
        prepare.prepare_dataset(videos, out, prepare.PrepSettings(detector="s3fd"), progress=False)


def test_filelist_and_unreadable_clip(videos, tmp_path, capsys):
    (tmp_path / "root" / "speaker").mkdir(parents=True)
    shutil.copy(videos / "speaker" / "gap.mp4", tmp_path / "root" / "speaker" / "gap.mp4")
    (tmp_path / "root" / "speaker" / "broken.mp4").write_text("not a video")
    filelist = tmp_path / "list.txt"
    filelist.write_text("# VoxCeleb2-style ids\nspeaker/gap\nspeaker/broken NF\nspeaker/absent\n")
    tasks = prepare.list_clips(filelist, root=tmp_path / "root")
    assert [t.id for t in tasks] == ["speaker/absent", "speaker/broken", "speaker/gap"]
    code = prepare_main(["--videos", str(filelist), "--root", str(tmp_path / "root"), "--output",
                         str(tmp_path / "ds"), "--detector", "opencv", "--workers", "2", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and "1 clips (1 new" in out and "2 failed" in out
    assert "failed: speaker/broken" in err and "failed: speaker/absent" in err
    failed = json.loads((tmp_path / "ds" / "manifest.json").read_text())["failed"]
    assert sorted(f["id"] for f in failed) == ["speaker/absent", "speaker/broken"]


def test_clear_errors(tmp_path, capsys, videos):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_main(["--videos", str(empty), "--output", str(tmp_path / "ds"), "--detector", "opencv"]) == 2
    assert "no video files" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert prepare_main(["--videos", str(videos), "--output", str(blocker / "ds"), "--detector", "opencv"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the dataset" in err and "choose a writable --output" in err
    with pytest.raises(DatasetError, match="no manifest.json"):
        Diff2LipDataset(empty)
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        Diff2LipDataset(empty)
    (empty / "manifest.json").write_text(json.dumps({"format": "diff2lip-dataset", "clips": []}))
    with pytest.raises(DatasetError, match="no clips with 5 consecutive face frames in split 'train'"):
        Diff2LipDataset(empty)


def test_jpeg_shards_give_the_raw_samples_within_jpeg_error_and_are_much_smaller(videos, dataset, tmp_path, capsys):
    """prepare --faces jpeg: the same samples as the raw shards (faces within JPEG error, the rest identical), the
    face members at least 6x smaller; resuming a raw dataset as jpeg is refused."""
    raw_root, _ = dataset
    jpeg_root = tmp_path / "jpeg"
    prepare.prepare_dataset(videos, jpeg_root, prepare.PrepSettings(detector="opencv", faces="jpeg", jpeg_quality=95),
                            workers=1, val_clips=["speaker/gap"], progress=False)
    raw, jpeg = Diff2LipDataset(raw_root, "train", seed=0), Diff2LipDataset(jpeg_root, "train", seed=0)
    assert len(raw) == len(jpeg) > 0
    for i in range(0, len(raw), 5):
        a, b = raw[i], jpeg[i]
        for key in ("mels", "sync_mel", "audio"):
            assert torch.equal(a[key], b[key]), key
        mse = float(((a["faces"] - b["faces"]) ** 2).mean()) / 4  # [-1, 1] -> [0, 1]
        assert 10 * np.log10(1 / mse) > 35, i  # JPEG q95 of 128 px crops
        assert float((a["faces"] - b["faces"]).abs().max()) < 0.5
    record = records(jpeg_root)["speaker/clip"]
    arrays = open_clip(jpeg_root, record)
    assert len(arrays.faces) == FRAMES and arrays.faces.shape == (FRAMES, 128, 128, 3)
    assert np.asarray(arrays.faces).shape == (FRAMES, 128, 128, 3) and arrays.faces[3].shape == (128, 128, 3)
    raw_bytes = np.asarray(open_clip(raw_root, records(raw_root)["speaker/clip"]).faces).nbytes
    assert raw_bytes / len(arrays.faces.data) >= 6, raw_bytes / len(arrays.faces.data)
    assert prepare_main(["--videos", str(videos), "--output", str(raw_root), "--detector", "opencv",
                         "--faces", "jpeg", "--no-progress"]) == 2
    assert "--faces" in capsys.readouterr().err

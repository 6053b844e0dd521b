"""lipsync.batch: a job list split over 2 CPU processes (Accelerate), resume, and a corrupt clip that fails alone."""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from lipsync.batch import read_filelist


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def job_files(media_dir, tmp_path_factory):
    import cv2
    import soundfile

    from lipsync.media import audio as audio_io
    from lipsync.media.reader import iter_frames

    root = tmp_path_factory.mktemp("batch")
    frame = next(iter_frames(media_dir / "pub_video1_retalking_face2.mp4", 1))[0]
    cv2.imwrite(str(root / "face.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    soundfile.write(root / "speech.wav", audio_io.load_audio(media_dir / "tts_en.wav")[:6400], 16000)  # 0.4 s
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (root / "jobs.txt").write_text(
        "# video audio output\n"
        "face.png speech.wav a.mp4\n"
        "face.png speech.wav b.mp4\n\n"
        "corrupt.mp4 speech.wav c.mp4\n"
        "'face.png' speech.wav sub/d.mp4\n"
    )
    return root


def batch(args, launcher, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = launcher + ["--filelist", "jobs.txt", "--output", "out", "--checkpoint", str(args), "--steps", "1",
                          "--detector", "opencv", "--device", "cpu", "--dtype", "fp32", "--quiet"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_filelist_parsing(tmp_path):
    (tmp_path / "l.txt").write_text("a.mp4 b.wav out.mp4\n# comment\n'/x y/v.mp4' a.wav /abs/o.mp4\n")
    jobs = read_filelist(tmp_path / "l.txt", tmp_path / "o")
    assert [j.index for j in jobs] == [0, 1]
    assert jobs[0].video == tmp_path / "a.mp4" and jobs[0].output == tmp_path / "o" / "out.mp4"
    assert str(jobs[1].video) == "/x y/v.mp4" and str(jobs[1].output) == "/abs/o.mp4"
    (tmp_path / "bad.txt").write_text("a.mp4 b.wav\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 'video audio output'"):
        read_filelist(tmp_path / "bad.txt", tmp_path)
    (tmp_path / "dup.txt").write_text("a.mp4 b.wav o.mp4\nc.mp4 d.wav o.mp4\n")
    with pytest.raises(ValueError, match="same output"):
        read_filelist(tmp_path / "dup.txt", tmp_path)


def test_two_processes_split_the_list_then_resume(job_files, tiny_pipeline_dir):
    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate launcher is not installed")
    root = job_files
    # on CPUs, `--multi_gpu` is what makes accelerate start several processes (gloo); `--cpu` alone starts one
    two = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "lipsync.batch"]
    run = batch(tiny_pipeline_dir, two, root)
    assert run.returncode != 0, run.stdout + run.stderr  # one job failed: the batch says so at the end ...
    rows = read_rows(root / "out" / "results.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"], run.stdout + run.stderr  # ... but every job ran, once
    status = {r["job"]: r["status"] for r in rows}
    assert status == {"0": "done", "1": "done", "2": "failed", "3": "done"}
    assert "corrupt.mp4" in rows[2]["error"] and not (root / "out" / "c.mp4").exists()
    assert all(int(r["frames"]) == 10 for r in rows if r["status"] == "done")
    assert (root / "out" / "sub" / "d.mp4").is_file()
    # the two processes took disjoint shares of the list
    shares = [{r["job"] for r in read_rows(root / "out" / f"results.rank{k}.csv")} for k in (0, 1)]
    assert shares[0] and shares[1] and not shares[0] & shares[1] and shares[0] | shares[1] == set(status)
    assert {r["process"] for r in rows} == {"0", "1"}

    # an interrupted batch: job 1's output never got written; a rerun (one process) does only what is missing
    (root / "out" / "b.mp4").unlink()
    before = (root / "out" / "a.mp4").stat().st_mtime_ns
    again = batch(tiny_pipeline_dir, [sys.executable, "-m", "lipsync.batch"], root)
    mine = {r["job"]: r["status"] for r in read_rows(root / "out" / "results.rank0.csv")}
    assert mine == {"0": "skipped", "1": "done", "2": "failed", "3": "skipped"}, again.stderr
    assert (root / "out" / "a.mp4").stat().st_mtime_ns == before and (root / "out" / "b.mp4").is_file()
    merged = {r["job"]: r["status"] for r in read_rows(root / "out" / "results.csv")}
    assert merged == {"0": "done", "1": "done", "2": "failed", "3": "done"}  # earlier results are kept

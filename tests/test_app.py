"""The Gradio app: importing it loads nothing, the UI builds without a model, and the API works end to end."""

import functools
import json
import os
import re
import socket
import subprocess
import sys
import time
import types

import gradio as gr
import numpy as np
import pytest
from conftest import REPO

import app
from lipsync.engine import JobOptions, LipSyncEngine
from lipsync.video import VideoWriter, probe_duration, probe_video, read_frames

CLIP = "pub_video2_retalking_face5.mp4"  # 524x524, 25 fps, 122 frames
FRAME = 1 / 25


def cut_audio(source, target, seconds: float, start: float = 0.0):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(start), "-t", str(seconds), "-i", str(source),
                    "-ac", "1", "-ar", "16000", str(target)], check=True)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------
# Import and build: nothing heavy
# ---------------------------------------------------------------------------------------------------------


def test_import_app_loads_no_model():
    probe = ("import json, sys, app, gradio as gr; "
             "print(json.dumps({'modules': [m for m in ('torch', 'diffusers', 'face_alignment', "
             "'lipsync.unet_diff2lip', 'lipsync.pipeline_diff2lip', 'lipsync.loading') if m in sys.modules], "
             "'blocks': [k for k, v in vars(app).items() if isinstance(v, (gr.Blocks, app.LipSyncEngine))]}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    # a model needs torch and the UNet module: neither may be imported, and no UI/engine may exist yet
    assert loaded == {"modules": [], "blocks": []}


def test_build_demo_loads_no_model(tiny_pipeline_dir, monkeypatch):
    from lipsync.unet_diff2lip import Diff2LipUNetModel

    created = []
    original_init = Diff2LipUNetModel.__init__

    @functools.wraps(original_init)  # keeps the signature diffusers reads the config keys from
    def counting_init(self, *args, **kwargs):
        created.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(Diff2LipUNetModel, "__init__", counting_init)
    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    demo = app.build_demo(engine, default_detector="opencv")
    assert isinstance(demo, gr.Blocks)
    assert created == [] and not engine.pipeline_loaded
    api_names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"lipsync", "preview_first_frame"} <= api_names
    engine.pipeline  # noqa: B018 - the model loads on first use, once
    engine.pipeline  # noqa: B018
    assert len(created) == 1


def test_parse_pads():
    assert app.parse_pads("0, 10,0,0") == (0, 10, 0, 0)
    assert app.parse_pads("5 6 7 8") == (5, 6, 7, 8)
    assert app.parse_pads("") == (0, 0, 0, 0)
    for bad in ("1,2,3", "a,b,c,d"):
        with pytest.raises(gr.Error, match="top,bottom,left,right"):
            app.parse_pads(bad)


def test_job_folders_keep_only_the_last_few():
    jobs = app.JobFolders(keep=2)
    made = []
    for _ in range(5):
        folder = jobs.new()
        (folder / "result.mp4").write_bytes(b"x" * 1000)
        made.append(folder)
    left = sorted(p for p in jobs.root.iterdir())
    assert left == made[-2:]  # disk use stays bounded: older job folders are gone


def test_gpu_wrapper_only_on_spaces(monkeypatch, media_dir, tmp_path):
    def work(steps, frames):
        return steps * frames

    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError: nothing changes
    assert app._on_gpu(work, lambda *a: 60) is work

    decorated = {}

    def gpu(duration):
        def wrap(fn):
            decorated[fn.__name__] = duration
            return fn
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    app.build_demo(LipSyncEngine(checkpoint=tmp_path, detector="opencv"))
    assert set(decorated) == {"run_job", "preview_job"}  # both model calls ask for a GPU ...
    clip, audio = str(media_dir / CLIP), str(media_dir / "tts_en.wav")  # 6.43 s of speech: 161 frames at 25 fps
    options = JobOptions(num_inference_steps=25)
    # ... for as long as steps x frames needs
    assert decorated["run_job"](clip, audio, str(tmp_path / "out.mp4"), options, None) == app.gpu_seconds(25, 161)
    assert decorated["preview_job"](clip, audio, options) == app.gpu_seconds(25, 1)
    assert app.gpu_seconds(50, 250) > app.gpu_seconds(25, 125) > app.gpu_seconds(1, 1) > 0
    # running Wav2Lip and scoring three streams ask for more; a given Wav2Lip result costs no Wav2Lip pass
    compared = JobOptions(num_inference_steps=25, compare_wav2lip=True, score=True)
    run_seconds = decorated["run_job"](clip, audio, str(tmp_path / "out.mp4"), compared, None)
    assert run_seconds == app.gpu_seconds(25, 161, wav2lip_frames=161, scored_frames=3 * 161)
    given = JobOptions(num_inference_steps=25, compare_wav2lip=True, wav2lip_video=clip)
    assert app.job_gpu_seconds(given, 161) == app.gpu_seconds(25, 161)
    assert run_seconds > app.job_gpu_seconds(JobOptions(num_inference_steps=25, score=True), 161) > \
        app.gpu_seconds(25, 161)


# ---------------------------------------------------------------------------------------------------------
# The running app, through gradio_client
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, comparison_weights):
    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    wav2lip_checkpoint, syncnet_checkpoint = comparison_weights  # random weights, loaded only by the comparison
    demo = app.build_demo(engine, default_detector="opencv", max_seconds=30,
                          wav2lip_checkpoint=str(wav2lip_checkpoint), syncnet_checkpoint=str(syncnet_checkpoint))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    from gradio_client import Client

    yield Client(url, verbose=False), engine
    demo.close()


def call_lipsync(client, video, audio, *, photo=None, steps=2, policy="pingpong", submit=False, **overrides):
    from gradio_client import handle_file

    args = dict(video=handle_file(str(video)) if video else None, photo=handle_file(str(photo)) if photo else None,
                audio=handle_file(str(audio)), steps=steps, reference_frame=0, own_reference=True, seed=7,
                scheduler="ddim", batch_size=16, paste="mouth", length_policy=policy, pads="0,0,0,0",
                audio_offset=0, detector="opencv")
    args.update(overrides)
    if submit:
        return client.submit(**args, api_name="/lipsync")
    return client.predict(**args, api_name="/lipsync")


def report_frames(markdown: str) -> int:
    return int(re.search(r"\|\s*frames\s*\|\s*(\d+)\s*\|", markdown).group(1))


def test_bad_uploads_show_a_message_and_the_app_keeps_serving(served, media_dir, tmp_path):
    from gradio_client.exceptions import AppError

    client, _ = served
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(AppError, match="holiday"):  # the message names the file the user uploaded
        call_lipsync(client, fake, media_dir / "tts_en.wav")

    blip = cut_audio(media_dir / "tts_en.wav", tmp_path / "blip.wav", 0.05)
    with pytest.raises(AppError, match=r"0\.2 s"):
        call_lipsync(client, media_dir / CLIP, blip)

    with pytest.raises(AppError, match="top,bottom,left,right"):
        call_lipsync(client, media_dir / CLIP, media_dir / "tts_en.wav", pads="1,2")

    # the server is still there: a one-frame preview runs
    from gradio_client import handle_file

    image = client.predict(video=handle_file(str(media_dir / CLIP)), photo=None,
                           audio=handle_file(str(media_dir / "tts_en.wav")), steps=1, reference_frame=0,
                           own_reference=True, seed=7, scheduler="ddim", batch_size=1, paste="mouth",
                           length_policy="pingpong", pads="0,0,0,0", audio_offset=0, detector="opencv",
                           api_name="/preview_first_frame")
    assert probe_video(image).size == (524, 524)


def test_audio_shorter_than_clip(served, media_dir, tmp_path):
    client, engine = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech_1s.wav", 1.2, start=0.5)
    job = call_lipsync(client, media_dir / CLIP, audio, submit=True)
    messages = []
    while not job.done():
        status = job.status()
        messages += [unit.desc for unit in status.progress_data or [] if unit.desc]
        time.sleep(0.05)
    side_by_side, result, download, report, scores = job.result()
    # the progress bar names the stage and the diffusion step
    assert any(re.match(r"diffusion: diffusion step \d+/2, frame \d+/30", m) for m in messages), messages

    assert engine.pipeline_loaded
    assert abs(probe_duration(result) - probe_duration(audio)) <= FRAME + 1e-3  # the speech sets the length
    assert abs(probe_duration(side_by_side) - probe_duration(result)) <= FRAME + 1e-3
    assert probe_video(result).size == (524, 524)
    assert probe_video(side_by_side).width == 2 * 524  # source | Diff2Lip
    assert download.endswith(".mp4") and probe_duration(download) == pytest.approx(probe_duration(result))
    assert report_frames(report) == pytest.approx(probe_duration(result) * 25, abs=1)
    assert scores == ""  # no score asked for: no table


def test_clip_shorter_than_audio_with_shortest_policy(served, media_dir, tmp_path):
    client, engine = served
    pipeline = engine.pipeline
    clip = tmp_path / "short_clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(media_dir / CLIP), "-frames:v", "15",
                    "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech_2s.wav", 2.0, start=0.5)
    _, result, _, report, _ = call_lipsync(client, clip, audio, steps=1, policy="shortest")

    assert abs(probe_duration(result) - 15 / 25) <= FRAME + 1e-3  # the clip sets the length
    assert report_frames(report) == 15
    assert engine.pipeline is pipeline  # one model per process, reused by every job


def test_still_photo_is_held_for_the_whole_speech(served, media_dir, tmp_path):
    client, _ = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.6, start=0.5)
    _, result, _, report, _ = call_lipsync(client, None, audio, photo=REPO / "assets" / "example_face.png",
                                           steps=1)
    assert abs(probe_duration(result) - 0.6) <= FRAME + 1e-3
    assert probe_video(result).size == (256, 256)
    assert report_frames(report) == 15


def score_rows(markdown: str) -> dict:
    """{video label: (LSE-D, LSE-C)} from the score table."""
    number = r"\s*(-?\d+(?:\.\d+)?)\s*\|"
    rows = re.findall(r"^\|\s*([^|]+?)\s*\|" + number + number, markdown, flags=re.M)
    return {label: (float(d), float(c)) for label, d, c in rows}


def test_three_way_comparison_with_scores(served, media_dir, tmp_path):
    client, _ = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech_1s.wav", 1.0, start=0.5)
    side_by_side, result, _, report, scores = call_lipsync(client, media_dir / CLIP, audio, steps=1,
                                                           compare_wav2lip=True, score=True)
    sbs = probe_video(side_by_side)
    assert sbs.width == 3 * 524 and sbs.height == 524  # source | Wav2Lip | Diff2Lip
    assert abs(probe_duration(side_by_side) - probe_duration(result)) <= FRAME + 1e-3
    rows = score_rows(scores)
    assert list(rows) == ["source (before)", "Wav2Lip", "Diff2Lip"], scores
    for label, (lse_d, lse_c) in rows.items():
        assert np.isfinite(lse_d) and lse_d > 0 and np.isfinite(lse_c), label
    assert "LSE-D" in scores and "LSE-C" in scores
    assert re.search(r"\|\s*wav2lip \(s\)\s*\|", report) and re.search(r"\|\s*score \(s\)\s*\|", report)


def test_own_wav2lip_result_is_the_middle_panel(served, media_dir, tmp_path):
    from gradio_client import handle_file

    client, _ = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.6, start=0.5)
    given = tmp_path / "my_wav2lip.mp4"  # a "Wav2Lip result" at half size: flat grey 40
    with VideoWriter(given, 25, (262, 262)) as writer:
        writer.write(np.full((10, 262, 262, 3), 40, np.uint8))
        writer.finish()
    side_by_side, _, _, _, scores = call_lipsync(client, media_dir / CLIP, audio, steps=1,
                                                 wav2lip_video=handle_file(str(given)))
    assert probe_video(side_by_side).width == 3 * 524
    first, last = read_frames(side_by_side, [0, 14])
    for frame in (first, last):  # resized to the clip; after its 10 frames the last one is held
        assert abs(frame[100:, 524:2 * 524].mean() - 40) < 3
        assert abs(frame[100:, :524].mean() - 40) > 20  # the source panel is the face clip
    assert scores == ""


def test_command_line_limits(tiny_pipeline_dir, media_dir, tmp_path):
    """``python app.py`` with --max-upload-mb, $LIPSYNC_MAX_SECONDS and the comparison weights' flags: all reach
    the user."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    port = free_port()
    env = {**os.environ, "LIPSYNC_MAX_SECONDS": "1"}
    command = [sys.executable, "app.py", "--checkpoint", str(tiny_pipeline_dir), "--device", "cpu",
               "--host", "127.0.0.1", "--port", str(port), "--max-upload-mb", "0.2", "--detector", "opencv",
               "--wav2lip-checkpoint", str(tmp_path / "missing_wav2lip.pth"),
               "--syncnet-checkpoint", str(tmp_path / "missing_syncnet.model")]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not listening yet
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"app.py did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
        assert client.config["max_file_size"] == int(0.2 * 1024 * 1024)
        big = media_dir / CLIP  # ~390 KB
        with pytest.raises(Exception, match="maximum file size"):
            call_lipsync(client, big, media_dir / "tts_en.wav")
        speech = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 2.0)  # 64 KB, but 2 s
        with pytest.raises(AppError, match="at most 1 s"):
            call_lipsync(client, REPO / "assets" / "example_face.mp4", speech)
        short = cut_audio(media_dir / "tts_en.wav", tmp_path / "short.wav", 0.5)
        # the weights given on the command line are the ones a comparison / score job loads
        with pytest.raises(AppError, match=r"missing_wav2lip\.pth.*--wav2lip-checkpoint"):
            call_lipsync(client, REPO / "assets" / "example_face.mp4", short, steps=1, compare_wav2lip=True)
        with pytest.raises(AppError, match=r"missing_syncnet\.model.*--syncnet-checkpoint"):
            call_lipsync(client, REPO / "assets" / "example_face.mp4", short, steps=1, score=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

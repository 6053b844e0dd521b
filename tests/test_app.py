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

from lipsync.app import estimates, handlers, jobs, layout
from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
from lipsync.model.presets import PRESETS
from lipsync.media.writer import VideoWriter
from lipsync.media.probe import probe_duration, probe_video
from lipsync.media.reader import read_frames

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
    probe = ("import json, sys, app, gradio as gr; from lipsync.app import launch; "
             "print(json.dumps({'modules': [m for m in ('torch', 'diffusers', 'face_alignment', "
             "'lipsync.model.unet', 'lipsync.model.pipeline', 'lipsync.model.loading') if m in sys.modules], "
             "'blocks': [k for k, v in [*vars(app).items(), *vars(launch).items()] "
             "if isinstance(v, (gr.Blocks, launch.LipSyncEngine))]}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    # a model needs torch and the UNet module: neither may be imported, and no UI/engine may exist yet
    assert loaded == {"modules": [], "blocks": []}


def test_build_demo_loads_no_model(tiny_pipeline_dir, monkeypatch):
    from lipsync.model.unet import Diff2LipUNetModel

    created = []
    original_init = Diff2LipUNetModel.__init__

    @functools.wraps(original_init)  # keeps the signature diffusers reads the config keys from
    def counting_init(self, *args, **kwargs):
        created.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(Diff2LipUNetModel, "__init__", counting_init)
    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    demo = layout.build_demo(engine, default_detector="opencv")
    assert isinstance(demo, gr.Blocks)
    assert created == [] and not engine.pipeline_loaded
    public = {dep.get("api_name") for dep in demo.config["dependencies"] if dep.get("api_visibility") == "public"}
    assert public == {"lipsync", "preview_first_frame"}  # the page's own events stay out of the API
    engine.pipeline  # noqa: B018 - the model loads on first use, once
    engine.pipeline  # noqa: B018
    assert len(created) == 1


def test_parse_pads():
    assert handlers.parse_pads("0, 10,0,0") == (0, 10, 0, 0)
    assert handlers.parse_pads("5 6 7 8") == (5, 6, 7, 8)
    assert handlers.parse_pads("") == (0, 0, 0, 0)
    for bad in ("1,2,3", "a,b,c,d"):  # (the message names the format)
        with pytest.raises(gr.Error, match="top,bottom,left,right"):
            handlers.parse_pads(bad)


def test_job_folders_keep_only_the_last_few():
    folders = jobs.JobFolders(keep=2)
    made = []
    for _ in range(5):
        folder = folders.new()
        (folder / "result.mp4").write_bytes(b"x" * 1000)
        made.append(folder)
    left = sorted(p for p in folders.root.iterdir())
    assert left == made[-2:]  # disk use stays bounded: older job folders are gone


def test_gpu_wrapper_only_on_spaces(monkeypatch, media_dir, tmp_path):
    def work(steps, frames):
        return steps * frames

    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError: nothing changes
    assert handlers.on_gpu(work, lambda *a: 60) is work

    decorated = {}

    def gpu(duration):
        def wrap(fn):
            decorated[fn.__name__] = duration
            return fn
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    layout.build_demo(LipSyncEngine(checkpoint=tmp_path, detector="opencv"))
    assert set(decorated) == {"_run_job", "_preview_job", "_calibrate"}  # every model call asks for a GPU ...
    clip, audio = str(media_dir / CLIP), str(media_dir / "tts_en.wav")  # 6.43 s of speech: 161 frames at 25 fps
    options = JobOptions(num_inference_steps=25)
    # ... for as long as steps x frames needs
    assert decorated["_run_job"](clip, audio, str(tmp_path / "out.mp4"), options, None) == estimates.gpu_seconds(25, 161)
    assert decorated["_preview_job"](clip, audio, options) == estimates.gpu_seconds(25, 1)
    assert estimates.gpu_seconds(50, 250) > estimates.gpu_seconds(25, 125) > estimates.gpu_seconds(1, 1) > 0
    # running Wav2Lip and scoring three streams ask for more; a given Wav2Lip result costs no Wav2Lip pass
    compared = JobOptions(num_inference_steps=25, compare_wav2lip=True, score=True)
    run_seconds = decorated["_run_job"](clip, audio, str(tmp_path / "out.mp4"), compared, None)
    assert run_seconds == estimates.gpu_seconds(25, 161, wav2lip_frames=161, scored_frames=3 * 161)
    given = JobOptions(num_inference_steps=25, compare_wav2lip=True, wav2lip_video=clip)
    assert estimates.job_gpu_seconds(given, 161) == estimates.gpu_seconds(25, 161)
    assert run_seconds > estimates.job_gpu_seconds(JobOptions(num_inference_steps=25, score=True), 161) > \
        estimates.gpu_seconds(25, 161)


def test_info_line_plans_and_estimates():
    from lipsync.app.estimates import SpeedMeter, format_duration, plan_summary
    from lipsync.job import JobReport

    # how a 5 s clip covers 9.6 s of speech, in words, under each policy
    assert plan_summary(5.0, 125, 9.6, "pingpong").how == "the video plays forward, then backward, to cover the speech"
    assert plan_summary(5.0, 125, 9.6, "loop").how == "the video starts over from the beginning to cover the speech"
    shortest = plan_summary(5.0, 125, 9.6, "shortest")
    assert (shortest.frames, shortest.seconds) == (125, 5.0) and "stops when the video ends" in shortest.how
    assert plan_summary(None, 1, 2.0, "pingpong").frames == 50  # a photo is held for the whole speech
    assert plan_summary(5.0, 125, 2.0, "pingpong").how.startswith("the result is as long as the speech")

    # the estimate follows what a job measured: 100 faces x 10 steps of diffusion took 50 s
    meter = SpeedMeter()
    assert meter.estimate(100, JobOptions(num_inference_steps=25)) is None  # nothing measured yet
    report = JobReport(output=None, side_by_side=None, frames=100, fps=25.0, width=8, height=8, faces_found=100,
                       faces_missing=0, faces_interpolated=0,
                       seconds={"decode": 2.0, "detect": 3.0, "diffusion": 50.0, "paste": 1.0, "encode": 4.0})
    meter.record(report, JobOptions(num_inference_steps=10))
    assert meter.step_seconds == pytest.approx(0.05) and meter.other_seconds == pytest.approx(0.1)
    assert meter.estimate(240, JobOptions(num_inference_steps=25)) == pytest.approx(240 * (25 * 0.05 + 0.1))
    # a preset counts its model evaluations (draft: 6 steps = 6 full calls; DeepCache every 2nd step: fewer)
    assert meter.estimate(100, JobOptions(preset="draft")) == pytest.approx(
        meter.estimate(100, JobOptions(num_inference_steps=6)))
    assert meter.estimate(100, JobOptions(num_inference_steps=6, deepcache_interval=2)) < meter.estimate(
        100, JobOptions(num_inference_steps=6))
    assert format_duration(42) == "about 40 s" and format_duration(200) == "about 3 min"
    assert format_duration(4900) == "about 1 h 22 min"


def test_stop_leaves_no_file(tiny_pipeline_dir, media_dir, tmp_path):
    """Stop raises from the progress callback at the next diffusion step: the engine leaves no output."""
    import threading

    from lipsync.app.jobs import JobCancelled, progress_reporter

    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 2.0)
    stop = threading.Event()
    seen = []

    def bar(value, desc=""):
        seen.append(desc)
        if desc.startswith("lip-syncing: diffusion step"):
            stop.set()  # the user presses Stop during the first diffusion step

    out_dir = tmp_path / "job"
    out_dir.mkdir()
    with pytest.raises(JobCancelled):
        engine.run(media_dir / CLIP, audio, out_dir / "out.mp4",
                   JobOptions(num_inference_steps=2, detector="opencv", batch_size=4, chunk_frames=8),
                   progress=progress_reporter(bar, stop))
    assert list(out_dir.iterdir()) == []  # neither the result, the side by side nor a temp file
    assert sum(d.startswith("lip-syncing: diffusion step") for d in seen) == 1  # it stopped at once
    short = cut_audio(media_dir / "tts_en.wav", tmp_path / "short.wav", 0.6)
    report = engine.run(media_dir / CLIP, short, out_dir / "out.mp4",  # and the engine is free for the next job
                        JobOptions(num_inference_steps=1, detector="opencv", side_by_side=False))
    assert report.frames == 15 and (out_dir / "out.mp4").is_file()


# ---------------------------------------------------------------------------------------------------------
# The running app, through gradio_client
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, comparison_weights):
    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    wav2lip_checkpoint, syncnet_checkpoint = comparison_weights  # random weights, loaded only by the comparison
    demo = layout.build_demo(engine, default_detector="opencv", max_seconds=30,
                          wav2lip_checkpoint=str(wav2lip_checkpoint), syncnet_checkpoint=str(syncnet_checkpoint))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    from gradio_client import Client

    yield Client(url, verbose=False), engine
    demo.close()


def call_lipsync(client, video, audio, *, photo=None, steps=2, policy="pingpong", submit=False, **overrides):
    from gradio_client import handle_file

    args = dict(video=handle_file(str(video)) if video else None, photo=handle_file(str(photo)) if photo else None,
                audio=handle_file(str(audio)), steps=steps, batch_size=16, length_policy=policy, detector="opencv")
    args.update(overrides)
    if submit:
        return client.submit(**args, api_name="/lipsync")
    return client.predict(**args, api_name="/lipsync")


def test_typed_api(served):
    """view_api: two named endpoints, integers as integers, optional inputs optional, named outputs."""
    client, _ = served
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == {"/lipsync", "/preview_first_frame"}
    params = {p["parameter_name"]: p for p in api["/lipsync"]["parameters"]}
    assert list(params)[:3] == ["audio", "video", "photo"]
    assert not params["audio"]["parameter_has_default"]  # the speech is the one required input
    for name in ("video", "photo", "wav2lip_video", "preset", "reference_frame"):
        assert params[name]["parameter_has_default"] and params[name]["parameter_default"] is None, name
    for name in ("steps", "seed", "batch_size", "audio_offset", "reference_frame"):  # (reference_frame: or empty)
        assert params[name]["python_type"]["type"] == "int", (name, params[name]["python_type"])
    assert params["preset"]["python_type"]["type"] == "Literal['paper', 'fast', 'draft']"  # or empty
    assert "own_reference" not in params  # one reference_frame says it all
    for endpoint in ("/lipsync", "/preview_first_frame"):  # the face to lip-sync: a point "X,Y", or the rule
        face = {p["parameter_name"]: p for p in api[endpoint]["parameters"]}
        assert list(face)[-2:] == ["face_point", "face_choice"]  # last: calls by position still work
        assert face["face_point"]["python_type"]["type"] == "str" and face["face_point"]["parameter_default"] == ""
        assert face["face_choice"]["python_type"]["type"] == "Literal['speaker', 'largest']"
        assert face["face_choice"]["parameter_default"] == "speaker"
    assert [r["label"] for r in api["/lipsync"]["returns"]] == ["result", "side_by_side", "report"]
    assert api["/lipsync"]["returns"][2]["component"] == "Json"
    assert "Lip-sync a face video" in api["/lipsync"]["description"]


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

    image = client.predict(audio=handle_file(str(media_dir / "tts_en.wav")), video=handle_file(str(media_dir / CLIP)),
                           steps=1, batch_size=1, detector="opencv", api_name="/preview_first_frame")
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
    result, side_by_side, report = job.result()
    # the progress bar names the stage and the diffusion step
    assert any(re.match(r"lip-syncing: diffusion step \d+/2, frame \d+/30", m) for m in messages), messages

    assert engine.pipeline_loaded
    assert abs(probe_duration(result) - probe_duration(audio)) <= FRAME + 1e-3  # the speech sets the length
    assert abs(probe_duration(side_by_side) - probe_duration(result)) <= FRAME + 1e-3
    assert probe_video(result).size == (524, 524)
    assert probe_video(side_by_side).size == (2 * 524, 524 + 58)  # source | Diff2Lip, a caption band below
    # the report as data: what the result is, how its length came about, faces, times and settings
    assert report["frames"] == 30 and report["fps"] == 25 and report["duration_s"] == pytest.approx(1.2)
    assert report["length"] == {"policy": "pingpong", "how": "the result is as long as the speech "
                                                             "(the rest of the video is left out)"}
    faces = report["faces"]
    assert faces["source_frames"] == 30 and faces["found"] + faces["interpolated"] + faces["missing"] == 30
    assert "30 source frames" in faces["explanation"]
    assert report["seconds"]["total"] == pytest.approx(sum(v for k, v in report["seconds"].items() if k != "total"),
                                                       abs=0.05)
    assert report["seconds"]["diffusion"] > 0
    assert report["settings"] == {"preset": "custom", "scheduler": "ddim", "steps": 2, "deepcache_interval": 1,
                                  "seed": 7, "reference_frame": None, "batch_size": 16, "paste": "mouth",
                                  "pads": [0, 0, 0, 0], "audio_offset": 0, "detector": "opencv",
                                  "compare_wav2lip": False, "score": False, "mouth_zoom": False,
                                  "face_choice": "speaker", "face_point": None}
    assert report["scores"] == {}  # no score asked for


def test_clip_shorter_than_audio_with_shortest_policy(served, media_dir, tmp_path):
    client, engine = served
    pipeline = engine.pipeline
    clip = tmp_path / "short_clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(media_dir / CLIP), "-frames:v", "15",
                    "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech_2s.wav", 2.0, start=0.5)
    result, _, report = call_lipsync(client, clip, audio, steps=1, policy="shortest", reference_frame=3)

    assert abs(probe_duration(result) - 15 / 25) <= FRAME + 1e-3  # the clip sets the length
    assert report["frames"] == 15 and report["settings"]["reference_frame"] == 3
    assert report["length"]["how"] == "the result stops when the video ends (the rest of the speech is left out)"
    assert engine.pipeline is pipeline  # one model per process, reused by every job


def test_still_photo_is_held_for_the_whole_speech(served, media_dir, tmp_path):
    client, _ = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.6, start=0.5)
    result, _, report = call_lipsync(client, None, audio, photo=REPO / "assets" / "example_face.png", steps=1,
                                     preset="draft")  # a preset sets the steps and the scheduler
    assert abs(probe_duration(result) - 0.6) <= FRAME + 1e-3
    assert probe_video(result).size == (256, 256)
    assert report["frames"] == 15 and report["length"]["how"] == "the photo is held still for the whole speech"
    draft = PRESETS["draft"]
    assert (report["settings"]["preset"], report["settings"]["scheduler"], report["settings"]["steps"]) == \
        ("draft", draft.scheduler, draft.steps)


def test_face_point_chooses_the_face_to_lip_sync(served, tmp_path, media_dir):
    """/lipsync with face_point on the second face of a two-face photo: that mouth changes, the other does not."""
    from gradio_client.exceptions import AppError
    from test_app_face_choice import RIGHT_FACE, two_face_photo

    from lipsync.media.detectors import get_detector

    client, _ = served
    photo = two_face_photo(tmp_path / "two_faces.png")
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.4, start=0.5)
    source = read_frames(photo, [0])[0]
    result, _, report = call_lipsync(client, None, audio, photo=photo, steps=1, face_point="384,128")
    assert report["settings"]["face_point"] == [384.0, 128.0] and report["settings"]["face_choice"] == "speaker"
    synced = read_frames(result, [0])[0]
    left, right = sorted(get_detector("opencv").detect(source[None])[0][:, :4].tolist())
    assert left[2] < RIGHT_FACE[0] < right[2]
    assert mouth_change(source, synced, right) > 3 * max(mouth_change(source, synced, left), 1.0)
    # the one-frame preview takes the same point
    from gradio_client import handle_file

    image = client.predict(audio=handle_file(str(audio)), photo=handle_file(str(photo)), steps=1, batch_size=1,
                           detector="opencv", face_point="384,128", api_name="/preview_first_frame")
    previewed = read_frames(image, [0])[0]
    assert mouth_change(source, previewed, right) > 3 * max(mouth_change(source, previewed, left), 1.0)
    with pytest.raises(AppError, match="X,Y"):
        call_lipsync(client, None, audio, photo=photo, steps=1, face_point="384")
    with pytest.raises(AppError, match="on no face"):  # the background
        call_lipsync(client, None, audio, photo=photo, steps=1, face_point="5,250")


def mouth_change(source, result, box) -> float:
    """Mean absolute difference (0-255) of the lower half of the face ``box`` between two frames."""
    x1, y1, x2, y2 = (int(v) for v in box)
    mid = (y1 + y2) // 2
    return float(np.abs(source[mid:y2, x1:x2].astype(int) - result[mid:y2, x1:x2].astype(int)).mean())


def test_three_way_comparison_with_scores(served, media_dir, tmp_path):
    client, _ = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech_1s.wav", 1.0, start=0.5)
    result, side_by_side, report = call_lipsync(client, media_dir / CLIP, audio, steps=1, compare_wav2lip=True,
                                                score=True, mouth_zoom=True)
    sbs = probe_video(side_by_side)
    # source | Wav2Lip | Diff2Lip, each with its mouth enlarged below (half the height) and a caption band
    assert sbs.size == (3 * 524, 524 + 262 + 58)
    assert abs(probe_duration(side_by_side) - probe_duration(result)) <= FRAME + 1e-3
    assert list(report["scores"]) == ["source", "wav2lip", "diffusion"]
    for name, values in report["scores"].items():
        assert np.isfinite(values["lse_d"]) and values["lse_d"] > 0 and np.isfinite(values["lse_c"]), name
    assert report["seconds"]["wav2lip"] > 0 and report["seconds"]["score"] > 0
    assert report["settings"]["compare_wav2lip"] and report["settings"]["mouth_zoom"]


def test_own_wav2lip_result_is_the_middle_panel(served, media_dir, tmp_path):
    from gradio_client import handle_file

    client, _ = served
    audio = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.6, start=0.5)
    given = tmp_path / "my_wav2lip.mp4"  # a "Wav2Lip result" at half size: flat grey 40
    with VideoWriter(given, 25, (262, 262)) as writer:
        writer.write(np.full((10, 262, 262, 3), 40, np.uint8))
        writer.finish()
    _, side_by_side, report = call_lipsync(client, media_dir / CLIP, audio, steps=1,
                                           wav2lip_video=handle_file(str(given)))
    assert probe_video(side_by_side).width == 3 * 524
    first, last = read_frames(side_by_side, [0, 14])
    for frame in (first, last):  # resized to the clip; after its 10 frames the last one is held
        assert abs(frame[100:524, 524:2 * 524].mean() - 40) < 3  # (the caption band lies below row 524)
        assert abs(frame[100:524, :524].mean() - 40) > 20  # the source panel is the face clip
    assert report["scores"] == {}


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
        # weights that cannot be had: the page offers neither Compare nor Score but says why, and an API call
        # that asks for them gets a plain answer (no command-line flags, no environment variables)
        shown = {c["props"].get("elem_id"): c["props"].get("visible", True) for c in client.config["components"]}
        assert shown["compare-wav2lip"] is False and shown["score"] is False
        assert shown["wav2lip-note"] is True and shown["syncnet-note"] is True
        for ask, what in (({"compare_wav2lip": True}, "Wav2Lip"), ({"score": True}, "SyncNet")):
            with pytest.raises(AppError, match=f"{what} weights are not available on this server") as caught:
                call_lipsync(client, REPO / "assets" / "example_face.mp4", short, steps=1, **ask)
            assert "--" not in str(caught.value) and "LIPSYNC_" not in str(caught.value)
    finally:
        server.terminate()
        server.wait(timeout=30)

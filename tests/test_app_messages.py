"""What the app says, and where: missing weights in the header (Generate off), one wording per problem in the
user's terms, no time estimate for a photo without a face, Stop and the reference slider's rules."""

import socket
import threading
import types

import cv2
import gradio as gr
import numpy as np
import pytest
from conftest import REPO

from lipsync.app import handlers, layout, texts
from lipsync.app.handlers import Handlers
from lipsync.app.jobs import StopSwitch
from lipsync.engine import LipSyncEngine
from lipsync.errors import InvalidMediaError, NoFaceError, WeightsUnavailableError

REQUEST = types.SimpleNamespace(session_hash="test-session")


def no_progress(*args, **kwargs):
    return None


def job_args(**given):
    """The page's Generate inputs, in order, with the defaults of the page."""
    values = dict(video=None, photo=None, audio=None, own_reference=True, reference_frame=0, preset="draft",
                  steps=2, scheduler="ddim", seed=7, batch_size=8, paste="mouth", length_policy="pingpong",
                  pads="0,0,0,0", audio_offset=0, detector="opencv", compare_wav2lip=False, wav2lip_video=None,
                  score=False, mouth_zoom=False, compile_model=False, audio_guidance=1.0)
    values.update(given)
    return list(values.values())


@pytest.fixture
def without_weights(monkeypatch, tmp_path):
    """A machine where the paper's weights are neither cached nor downloadable (as with no internet)."""
    import huggingface_hub.constants

    monkeypatch.delenv("LIPSYNC_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


@pytest.fixture
def wall_photo(tmp_path):
    """A grey wall: no face anywhere."""
    path = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), (rng.random((200, 200, 3)) * 40 + 100).astype(np.uint8))
    return str(path)


@pytest.fixture
def speech(media_dir, tmp_path):
    from test_app import cut_audio

    return str(cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.6, start=0.5))


def test_without_weights_the_page_says_so_generate_is_off_and_the_api_answers_at_once(without_weights, speech):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    engine = LipSyncEngine(checkpoint=None, device="cpu", detector="opencv")
    h = Handlers(engine, max_seconds=30)
    problem = h.weights_problem()
    # the command line's own message: the repo, the file and the remedy
    assert "ould not get the Diff2Lip weights" in problem and "ameerazam08/diff2lip" in problem
    assert "--checkpoint PATH" in problem and "LIPSYNC_CHECKPOINT=PATH" in problem

    demo = layout.build_demo(engine, default_detector="opencv")
    props = {c["props"].get("elem_id"): c["props"] for c in demo.config["components"]}
    assert props["weights-message"]["visible"] and problem in props["weights-message"]["value"]
    assert props["run"]["interactive"] is False and props["preview-first"]["interactive"] is False
    assert props["stop"]["interactive"] is False  # nothing runs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError) as caught:
            client.predict(audio=handle_file(speech), photo=handle_file(str(REPO / "assets" / "example_face.png")),
                           api_name="/lipsync")
        assert "ould not get the Diff2Lip weights" in str(caught.value) and "--checkpoint PATH" in str(caught.value)
        assert not engine.pipeline_loaded  # refused before any work, not after a failed load
    finally:
        demo.close()
    # a Generate pressed anyway (an old page) says the same in the status line; nothing is run
    status = h.on_run(*job_args(photo=str(REPO / "assets" / "example_face.png"), audio=speech), request=REQUEST,
                      progress=no_progress)[0]
    assert problem in status and not engine.pipeline_loaded


def test_weights_errors_show_the_real_message():
    exc = WeightsUnavailableError("could not get the Diff2Lip weights: 'checkpoints/checkpoint.pt' ... pass its "
                                  "path with --checkpoint PATH, or set LIPSYNC_CHECKPOINT=PATH.")
    assert handlers.plain(exc) == "C" + str(exc)[1:]
    named = InvalidMediaError("holiday.mp4 could not be read as a video; upload an mp4/mov/mkv/webm file")
    assert handlers.plain(named) == str(named)  # a file's name keeps its spelling


def test_a_photo_without_a_face_is_said_about_a_photo_and_gets_no_estimate(tiny_pipeline_dir, wall_photo, speech):
    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    h = Handlers(engine, max_seconds=30)
    h.meter.step_seconds = 0.01  # the speed is known: a photo with a face would get a time estimate
    # Generate straight away (no face check yet): the engine finds no face; the words are about a photo
    out = h.on_run(*job_args(photo=wall_photo, audio=speech), request=REQUEST, progress=no_progress)
    status, face_note = out[0], out[8]
    assert face_note["visible"] and face_note["value"] == f"⚠️ {texts.NO_FACE_PHOTO}"
    for engine_word in ("frame", "clip", "detector", "source"):
        assert engine_word not in face_note["value"], face_note["value"]
    assert status == texts.CHECK_NOTES  # the status points at the note instead of saying it twice
    # the face check on upload says the same words, and the info line then gives no time for that photo
    note = h.on_face(None, wall_photo, True, 0, "opencv", "0,0,0,0")[2]
    assert note["value"] == f"⚠️ {texts.NO_FACE_PHOTO}"
    info = h.info_text(None, wall_photo, speech, "draft", 25, "pingpong", False, False)
    assert "about" not in info and "photo with a face" in info
    face = str(REPO / "assets" / "example_face.png")
    h.on_face(None, face, True, 0, "opencv", "0,0,0,0")
    assert "about" in h.info_text(None, face, speech, "draft", 25, "pingpong", False, False)


def test_engine_words_become_the_users():
    no_face = NoFaceError("no face was found in any frame of wall.png; use a clip where the face is visible and "
                          "frontal, or try the other detector")
    assert handlers.face_problem(no_face, is_photo=True) == texts.NO_FACE_PHOTO
    assert handlers.face_problem(no_face, is_photo=False) == texts.NO_FACE_VIDEO
    reference = NoFaceError("no face was found in reference frame 12; choose another reference frame")
    assert handlers.face_problem(reference, is_photo=False) == texts.NO_FACE_IN_FRAME.format(index=12)
    mouth = NoFaceError("the mouth is outside the picture in every frame of a.png where a face was found (1 "
                        "frames); use a clip where the whole mouth is visible")
    assert handlers.face_problem(mouth, is_photo=True) == texts.MOUTH_OUT_PHOTO


def test_missing_inputs_are_said_once_beside_them(tiny_pipeline_dir, speech):
    h = Handlers(LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv"), max_seconds=30)
    out = h.on_run(*job_args(audio=speech), request=REQUEST, progress=no_progress)
    assert out[0] == texts.CHECK_NOTES and out[8]["value"] == f"⚠️ {texts.NEED_FACE}" and not out[9]["visible"]
    # the preview says it in the same words and places
    preview = h.on_preview_first(*job_args(audio=speech)[:15])
    assert preview[0] == texts.CHECK_NOTES and preview[3]["value"] == f"⚠️ {texts.NEED_FACE}"
    # a warning goes once an input changes; a finished job's line stays
    assert Handlers.clear_message(texts.CHECK_NOTES) == texts.READY
    assert Handlers.clear_message(texts.STOPPED) == texts.READY
    assert Handlers.clear_message("Done in 12 s: 30 frames (1.2 s).") == gr.update()


def test_the_slider_is_only_clamped():
    assert Handlers.clamp_frame(40, 122) == gr.update()  # a dragged value in range is left alone
    assert Handlers.clamp_frame("500", 122) == 121  # a typed one past the end: the last frame
    assert Handlers.clamp_frame(-3, 122) == 0


def test_generate_and_stop_states(tiny_pipeline_dir):
    h = Handlers(LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv"), max_seconds=30)
    started = h.on_start()
    status, cleared, (run, stop) = started[0], started[1:8], started[8:]
    assert status == texts.STARTING and all(v is None or v in ("", gr.update(value=None, interactive=False))
                                            for v in cleared)  # the previous job's results go
    assert run["interactive"] is False and stop["interactive"] is True
    run, stop = h.on_stopping()
    assert run["interactive"] is False and stop["interactive"] is False and stop["value"] == texts.STOPPING
    status, run, stop = h.on_finish("Done in 3 s: 15 frames (0.6 s).")
    assert run["interactive"] is True and stop["interactive"] is False and stop["value"] == "Stop"
    assert status == gr.update()  # the job's own last word stands
    assert h.on_finish(texts.STARTING)[0] == texts.STOPPED  # a job cancelled before it could answer
    # a job stopped while it waited for its turn (the page took it out of the queue) is said to be stopped
    assert h.on_stop(texts.STARTING, REQUEST) == texts.STOPPED
    assert h.on_stop("Done in 3 s: 15 frames (0.6 s).", REQUEST) == gr.update()  # it had just ended


def test_a_new_job_does_not_inherit_the_old_jobs_end():
    """Stop waits for the job it stopped, not for a job started after it."""
    stops = StopSwitch()
    old = stops.start("s")
    new = stops.start("s")  # Generate again at once (the old job still cleaning up)
    stops.finish("s", old)
    assert stops.running("s")  # the new job is still the session's
    waited = threading.Event()

    def stop_new():
        stops.stop("s", wait=5.0)
        waited.set()

    threading.Thread(target=stop_new, daemon=True).start()
    assert new.wait(2.0) and not waited.wait(0.3)  # the flag is up; Stop waits for the new job to end ...
    stops.finish("s", new)
    assert waited.wait(2.0) and not stops.running("s")  # ... and answers once it has

"""The page: a header, examples, four numbered steps beside one result area, and the typed API.

``build_demo(engine)`` builds it around a ``LipSyncEngine`` without loading any model. On a wide screen the
result area stays in view beside the steps (sticky); on a phone it sits below them and Generate scrolls to it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

import gradio as gr

from lipsync.app import texts
from lipsync.app.api import Api
from lipsync.app.handlers import CUSTOM, PRESET_CHOICES, Handlers
from lipsync.engine import LipSyncEngine
from lipsync.job import FACE_CHOICES, LENGTH_POLICIES, PASTE_MODES, SCHEDULERS
from lipsync.media.detectors import DETECTORS
from lipsync.model.presets import DEFAULT_PRESET, PRESETS

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the repository's assets/, beside lipsync/
if not ASSETS.is_dir():  # installed with pip: the examples ship inside the package as lipsync/assets
    ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = [[str(ASSETS / "example_face.mp4"), None, str(ASSETS / "example_speech.wav")],
            [None, str(ASSETS / "example_face.png"), str(ASSETS / "example_speech.wav")]]

logger = logging.getLogger("diff2lip.app")

HINT_LIGHT, HINT_DARK = "#52525b", "#a1a1aa"  # hints and footer: 7.7:1 on white, 7.6:1 on Gradio's dark grey
WARNING_LIGHT, WARNING_DARK = "#b45309", "#fbbf24"  # amber notes: 5.0:1 on white, 10:1 on the dark background

CSS = f"""
:root, .gradio-container {{ --block-info-text-color: {HINT_LIGHT}; --body-text-color-subdued: {HINT_LIGHT}; }}
.dark, .dark .gradio-container {{ --block-info-text-color: {HINT_DARK}; --body-text-color-subdued: {HINT_DARK}; }}
.step-tip {{ color: var(--body-text-color); font-size: var(--text-md); }}
footer, footer a, footer button {{ color: var(--body-text-color-subdued) !important; }}
/* sticky needs an ancestor that clips without scrolling (clip, not Gradio's hidden); rules outside @media
   reach the container itself, Gradio scopes those inside @media to the page's content */
.gradio-container {{ overflow: clip !important; }}
@media (min-width: 900px) {{ #results {{ position: sticky; top: 8px; align-self: flex-start; }} }}
#info {{ padding: 8px 12px; border-radius: 8px; background: var(--background-fill-secondary); }}
#face-message, #face-message *, #speech-message, #speech-message *, #weights-message, #weights-message * {{
  color: {WARNING_LIGHT} !important; font-weight: 700; }}
.dark #face-message *, .dark #speech-message *, .dark #weights-message * {{ color: {WARNING_DARK} !important; }}
#job-status {{ min-height: 64px; }}
#consent {{ font-size: var(--text-sm); }}
input[type=radio]:focus-visible, input[type=checkbox]:focus-visible, input[type=range]:focus-visible {{
  outline: 3px solid #2563eb !important; outline-offset: 2px !important; }}
@media (max-width: 640px) {{
  #examples table {{ table-layout: fixed; width: 100%; }}
  #examples td, #examples th {{ word-break: break-word; padding: 4px; }}
}}
"""

# on a phone the results sit below the controls: bring them into view when a job or a preview starts
SCROLL_TO_RESULTS_JS = """(...args) => {
    if (window.innerWidth < 900) document.getElementById('results')?.scrollIntoView({behavior: 'smooth'});
    return args;
}"""

# Stop pressed: Generate is off at once, before the server has answered (a click then would be lost)
STOPPING_JS = """(...args) => {
    const run = document.getElementById('run');
    if (run) run.disabled = true;
    return args;
}"""

# Runs once on page load: the status line is announced to screen readers; the reference slider answers the
# keyboard as it answers the mouse (Enter in its number box, arrow keys on its track: "released"); the browser's
# own "Video not playable" toast goes, since the note beside the video says what is wrong with the file.
PAGE_JS = """() => {
    const announce = () => {
        const status = document.getElementById('job-status');
        if (status && !status.hasAttribute('aria-live')) {
            status.setAttribute('aria-live', 'polite');
            status.setAttribute('role', 'status');
        }
    };
    announce();
    document.addEventListener('keyup', (event) => {
        const target = event.target;
        if (!target.closest || !target.closest('#reference-frame')) return;
        if (target.type === 'number' && event.key === 'Enter') target.blur();
        if (target.type === 'range' && /^(Arrow|Page|Home|End)/.test(event.key))
            target.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));
    });
    new MutationObserver(() => {
        announce();
        for (const toast of document.querySelectorAll('.toast-body')) {
            if (/Video not playable/.test(toast.textContent)) toast.querySelector('.toast-close')?.click();
        }
    }).observe(document.body, {childList: true, subtree: true});
}"""


def build_demo(engine: LipSyncEngine, *, max_seconds: Optional[float] = 60.0, default_detector: str = "s3fd",
               queue_size: int = 16, keep_jobs: int = 3, wav2lip_checkpoint: Optional[str] = None,
               syncnet_checkpoint: Optional[str] = None, jobs_dir: Optional[Path] = None,
               cache_examples: Optional[str] = None, sync_expert: Optional[str] = None) -> gr.Blocks:
    """The UI around ``engine`` (used lazily: building the UI loads no model).

    Args:
        max_seconds: longest speech accepted (None: no limit).
        default_detector: the face detector chosen at first.
        wav2lip_checkpoint / syncnet_checkpoint: weights for the comparison and the score (None: the
            loaders' defaults); Compare and Score are offered only when their weights can be had.
        sync_expert: an own lip-sync expert (``python -m lipsync.train_syncnet``) that scores instead of SyncNet v2;
            its figures are labelled "own expert".
        jobs_dir: where job folders go (default: a temp folder).
        cache_examples: None (run examples on demand), "lazy" (cache each on first click) or "eager"
            (cache at start-up).
    """
    h = Handlers(engine, max_seconds=max_seconds, keep_jobs=keep_jobs, jobs_dir=jobs_dir,
                 wav2lip_checkpoint=wav2lip_checkpoint, syncnet_checkpoint=syncnet_checkpoint, sync_expert=sync_expert)
    available = h.availability()
    weights_problem = h.weights_problem()  # checked again on every page load
    if weights_problem:
        logger.warning("%s The page says so, and Generate is off until the weights are there.", weights_problem)

    with warnings.catch_warnings():  # css and js given to Blocks (not launch) still work; keep the log quiet
        warnings.simplefilter("ignore")
        demo = gr.Blocks(title="Diff2Lip Studio", delete_cache=(1800, 3600), css=CSS, js=PAGE_JS)
    with demo:
        gr.Markdown(texts.HEADER, elem_id="header")
        shown = h.weights_note(weights_problem)
        weights_message = gr.Markdown(shown["value"], visible=shown["visible"], elem_id="weights-message")
        gr.Markdown(texts.CONSENT, elem_id="consent")

        # inputs are made first (unrendered) so the examples can sit above them
        video = gr.Video(label="Face video", sources=["upload"], elem_id="face-video", render=False, height=260)
        photo = gr.Image(label="Face photo", type="filepath", sources=["upload", "clipboard"], elem_id="face-photo",
                         render=False, height=260)
        audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"], elem_id="speech",
                         render=False)
        side_by_side = gr.Video(label="Side by side", interactive=False, elem_id="side-by-side", render=False,
                                height=480)
        result = gr.Video(label="Result", interactive=False, elem_id="result", render=False, height=480)
        report_md = gr.Markdown(elem_id="report", render=False)

        gr.Examples(examples=EXAMPLES, inputs=[video, photo, audio], examples_per_page=4, label=texts.EXAMPLES_TITLE,
                    fn=h.example_job if cache_examples else None,
                    outputs=[side_by_side, result, report_md] if cache_examples else None,
                    cache_examples=bool(cache_examples), cache_mode=cache_examples or "eager", elem_id="examples")

        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=340, elem_id="controls"):
                gr.Markdown(texts.step_title("face"), elem_id="step-face")
                with gr.Tabs(selected="video", elem_id="face-tabs") as face_tabs:
                    with gr.Tab("Video", id="video"):
                        video.render()
                    with gr.Tab("Photo", id="photo"):
                        photo.render()
                face_message = gr.Markdown(visible=False, elem_id="face-message")

                gr.Markdown(texts.step_title("speech"), elem_id="step-speech")
                audio.render()
                speech_message = gr.Markdown(visible=False, elem_id="speech-message")

                gr.Markdown(texts.step_title("check"), elem_id="step-check")
                face_check = gr.Image(label="Face check", interactive=False, elem_id="face-check", height=260,
                                      show_label=False, alt_text="Face check: the face used, boxed in green (click "
                                      "another face to choose it), and the shaded region the model repaints")
                face_choice_note = gr.Markdown(visible=False, elem_id="face-choice")
                face_point = gr.State(None)  # the face clicked in the Check image: (x, y) pixels of its frame
                own_reference = gr.Checkbox(value=True, label="Each frame is its own reference",
                                            info="the paper's setting; untick to show the model one chosen frame",
                                            elem_id="own-reference")
                reference_frame = gr.Slider(0, 1, value=0, step=1, label="Reference frame", visible=False,
                                            info="the face shown to the model for every frame (previewed above)",
                                            elem_id="reference-frame")

                gr.Markdown(texts.step_title("generate"), elem_id="step-generate")
                preset = gr.Radio(PRESET_CHOICES, value=DEFAULT_PRESET, label="Quality", elem_id="preset")
                with gr.Row(visible=False) as custom_row:
                    steps = gr.Slider(1, 100, value=25, step=1, label="Sampling steps", elem_id="steps", scale=3,
                                      info="more steps: slower, often cleaner mouths")
                    scheduler = gr.Dropdown(list(SCHEDULERS), value="ddim", label="Scheduler", scale=1,
                                            info="ddim is the paper's")
                info = gr.Markdown(h.info_text(None, None, None, DEFAULT_PRESET, 25, "pingpong", False, False),
                                   elem_id="info")
                with gr.Group():
                    compare_wav2lip = gr.Checkbox(value=False, label="Compare with Wav2Lip", elem_id="compare-wav2lip",
                                                  visible=available["wav2lip"][0],
                                                  info="side by side: source | Wav2Lip | Diff2Lip "
                                                       "(Wav2Lip's weights: non-commercial use)")
                    wav2lip_note = gr.Markdown(texts.WAV2LIP_UNAVAILABLE, visible=not available["wav2lip"][0],
                                               elem_id="wav2lip-note")
                    wav2lip_video = gr.Video(label="Your own Wav2Lip result (optional; shown instead of running "
                                                   "Wav2Lip)", sources=["upload"], height=140, visible=False,
                                             elem_id="wav2lip-video")
                    score = gr.Checkbox(value=False, elem_id="score", visible=available["syncnet"][0],
                                        label="Lip-sync score (own expert)" if sync_expert else
                                        "Lip-sync score (LSE-D / LSE-C)",
                                        info="our own lip-sync expert measures each video against the speech "
                                             "(not comparable to published LSE figures)" if sync_expert else
                                        "SyncNet measures each video against the speech")
                    syncnet_note = gr.Markdown(texts.SYNCNET_UNAVAILABLE, visible=not available["syncnet"][0],
                                               elem_id="syncnet-note")
                    mouth_zoom = gr.Checkbox(value=False, label="Zoom on the mouths", elem_id="mouth-zoom",
                                             info="adds an enlarged strip of each mouth to the side by side")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    seed = gr.Number(value=7, precision=0, label="Seed", info="7 is the paper's")
                    batch_size = gr.Slider(1, 64, value=8, step=1, label="Batch size (frames per model call)")
                    paste = gr.Radio(list(PASTE_MODES), value="mouth", label="Paste mode",
                                     info="mouth: only the generated lower half, feathered; box: the whole box")
                    length_policy = gr.Radio(list(LENGTH_POLICIES), value="pingpong", label="When the speech is "
                                             "longer than the video", info="shortest: stop at the shorter one")
                    pads = gr.Textbox(value="0,0,0,0", label="Face padding (pixels: top,bottom,left,right)",
                                      info="e.g. 0,10,0,0 to include the chin; press Enter to check the face")
                    audio_offset = gr.Slider(-10, 10, value=0, step=1, label="Audio offset (frames)",
                                             info="positive: the lips follow the audio later")
                    detector = gr.Dropdown(list(DETECTORS), value=default_detector, label="Face detector",
                                           info="s3fd: accurate; opencv: quick")
                    compile_model = gr.Checkbox(False, label="Compile the model",
                                                info="faster jobs after a one-time warm-up of several minutes")
                    audio_guidance = gr.Slider(1.0, 3.0, value=1.0, step=0.1, label="Audio guidance",
                                               elem_id="audio-guidance", visible=engine.trained_with_audio_dropout(),
                                               info="above 1: the mouth follows the speech more strongly (twice "
                                                    "the model calls); 1: the paper's sampler")
                with gr.Row():
                    preview_button = gr.Button("Preview first frame", elem_id="preview-first", scale=2,
                                               interactive=not weights_problem)
                    run_button = gr.Button("Generate", variant="primary", elem_id="run", scale=2,
                                           interactive=not weights_problem)
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, interactive=False)

            with gr.Column(scale=1, min_width=340, elem_id="results"):
                status = gr.Markdown(texts.READY, elem_id="job-status")
                with gr.Tabs(selected="side-by-side", elem_id="result-tabs") as result_tabs:
                    with gr.Tab("Side by side", id="side-by-side"):
                        side_by_side.render()
                    with gr.Tab("Result", id="result"):
                        result.render()
                    with gr.Tab("First frame", id="first-frame"):
                        first_frame = gr.Image(label="First frame, lip-synced", interactive=False,
                                               elem_id="first-frame", height=480,
                                               alt_text="The first frame of the result, lip-synced")
                    with gr.Tab("Report", id="report-tab"):
                        report_md.render()
                        scores = gr.Markdown(elem_id="scores")
                        with gr.Accordion("Report as data (JSON)", open=False):
                            report_json = gr.JSON(elem_id="report-json", show_label=False)
                download = gr.DownloadButton("Download the result (MP4)", interactive=False, elem_id="download")

        # -- the typed API (hidden controls; the page's own events are private) --------------------------------
        with gr.Column(visible=False):
            api_in = dict(
                audio=gr.Audio(label="audio", type="filepath"),
                video=gr.Video(label="video"), photo=gr.Image(label="photo", type="filepath"),
                preset=gr.Dropdown(list(PRESETS), value=None, label="preset"),
                steps=gr.Number(25, precision=0, label="steps"),
                reference_frame=gr.Number(None, precision=0, label="reference_frame"),
                seed=gr.Number(7, precision=0, label="seed"),
                scheduler=gr.Dropdown(list(SCHEDULERS), value="ddim", label="scheduler"),
                batch_size=gr.Number(8, precision=0, label="batch_size"),
                paste=gr.Dropdown(list(PASTE_MODES), value="mouth", label="paste"),
                length_policy=gr.Dropdown(list(LENGTH_POLICIES), value="pingpong", label="length_policy"),
                pads=gr.Textbox("0,0,0,0", label="pads"),
                audio_offset=gr.Number(0, precision=0, label="audio_offset"),
                detector=gr.Dropdown(list(DETECTORS), value=default_detector, label="detector"),
            )
            api_face = dict(  # last, so that calls that give the other inputs by position still work
                face_point=gr.Textbox("", label="face_point"),
                face_choice=gr.Dropdown(list(FACE_CHOICES), value="speaker", label="face_choice"))
            api_extra = dict(
                compare_wav2lip=gr.Checkbox(False, label="compare_wav2lip"),
                wav2lip_video=gr.Video(label="wav2lip_video"),
                score=gr.Checkbox(False, label="score"), mouth_zoom=gr.Checkbox(False, label="mouth_zoom"))
            api_out = [gr.Video(label="result"), gr.Video(label="side_by_side"), gr.JSON(label="report")]
            api_image = gr.Image(label="image")
            api_button = gr.Button("api")
        api = Api(h)
        api_button.click(api.lipsync, [*api_in.values(), *api_extra.values(), *api_face.values()], api_out,
                         api_name="lipsync", concurrency_id="model")
        api_button.click(api.preview, [*api_in.values(), *api_face.values()], api_image,
                         api_name="preview_first_frame", concurrency_id="model")

        # -- the page's events -------------------------------------------------------------------------------
        private = dict(api_visibility="private")
        info_inputs = [video, photo, audio, preset, steps, length_policy, compare_wav2lip, score]

        def refresh_info(event):
            """After ``event``: the info line at once, then with a time estimate (timing the model once)."""
            event.then(h.on_info, info_inputs, info, show_progress="hidden", **private).then(
                h.on_info_timed, info_inputs, info, concurrency_id="model", show_progress="hidden", **private)

        face_inputs = [video, photo, own_reference, reference_frame, detector, pads]
        frames = gr.State(1)  # frames of the face upload (1: a photo)
        choice = [face_point, face_choice_note]  # a new face or frame starts without a chosen face
        face_outputs = [reference_frame, face_check, face_message, face_tabs, frames, *choice]
        for face_input, other in ((video, photo), (photo, video)):
            refresh_info(face_input.change(h.on_face, face_inputs, face_outputs, concurrency_id="preview", **private))
            face_input.upload(lambda: None, None, other, queue=False, **private)  # one face at a time: the newest
        check_inputs = [video, photo, own_reference, reference_frame, detector, pads]
        check_outputs = [face_check, face_message, *choice]
        # the slider: a value out of range (typed) is clamped, nothing else is written back; the face check
        # follows when it is released (mouse, touch, or Enter and the arrow keys: PAGE_JS)
        reference_frame.input(h.clamp_frame, [reference_frame, frames], reference_frame, preprocess=False,
                              trigger_mode="always_last", show_progress="hidden", queue=False, **private)
        reference_frame.release(h.on_reference, check_inputs, check_outputs, concurrency_id="preview",
                                trigger_mode="always_last", show_progress="minimal", **private)
        own_reference.change(lambda own: gr.update(visible=not own), own_reference, reference_frame, **private).then(
            h.on_reference, check_inputs, check_outputs, concurrency_id="preview", **private)
        # another detector or padding keeps the chosen face (while a face is there); a click chooses one
        detector.change(h.on_reference, [*check_inputs, face_point], check_outputs, concurrency_id="preview",
                        **private)
        pads.submit(h.on_reference, [*check_inputs, face_point], check_outputs, concurrency_id="preview", **private)
        face_check.select(h.on_face_click, [*check_inputs, face_point], check_outputs, concurrency_id="preview",
                          trigger_mode="always_last", show_progress="minimal", **private)
        refresh_info(audio.change(h.on_speech, audio, speech_message, show_progress="hidden", **private))
        refresh_info(preset.change(lambda p: gr.update(visible=p == CUSTOM), preset, custom_row, **private))
        for control in (steps, scheduler, length_policy, score):
            control.change(h.on_info, info_inputs, info, show_progress="hidden", **private).then(
                h.on_info_timed, info_inputs, info, concurrency_id="model", show_progress="hidden", **private)
        refresh_info(compare_wav2lip.change(lambda on: gr.update(visible=on), compare_wav2lip, wav2lip_video,
                                            **private))
        job_inputs = [video, photo, audio, own_reference, reference_frame, preset, steps, scheduler, seed, batch_size,
                      paste, length_policy, pads, audio_offset, detector]
        extra_inputs = [compare_wav2lip, wav2lip_video, score, mouth_zoom, compile_model, audio_guidance]
        # a warning or a Stop message in the status line no longer applies once an input changes
        for control in (c for c in (*job_inputs, *extra_inputs) if c is not reference_frame):  # (dragged: often)
            control.change(h.clear_message, status, status, queue=False, show_progress="hidden", **private)
        demo.load(h.on_load, None, [weights_message, run_button, preview_button, compare_wav2lip, wav2lip_note, score,
                                    syncnet_note], **private)

        preview_button.click(h.on_preview_first, [*job_inputs, face_point],
                             [status, first_frame, result_tabs, face_message, speech_message], concurrency_id="model",
                             show_progress_on=[status], js=SCROLL_TO_RESULTS_JS, **private)
        # Generate: the old results go and Generate is off at once, then the job, then Generate is on again
        shown_results = [side_by_side, result, download, report_md, scores, report_json, first_frame]
        run_event = run_button.click(
            h.on_start, None, [status, *shown_results, run_button, stop_button], queue=False, show_progress="hidden",
            js=SCROLL_TO_RESULTS_JS, **private).then(
            h.on_run, [*job_inputs, *extra_inputs, face_point],
            [status, side_by_side, result, download, report_md, scores, report_json, result_tabs, face_message,
             speech_message, first_frame], concurrency_id="model", show_progress_on=[status], **private)
        run_event.then(h.on_finish, status, [status, run_button, stop_button], queue=False, show_progress="hidden",
                       **private).then(h.on_info, info_inputs, info, show_progress="hidden", **private)
        # Stop: Generate and Stop are off until the job has ended (a job waiting for its turn leaves the queue)
        stop_button.click(h.on_stopping, None, [run_button, stop_button], queue=False, show_progress="hidden",
                          cancels=[run_event], js=STOPPING_JS, **private)
        stop_button.click(h.on_stop, status, status, queue=False, show_progress="hidden", **private)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo

"""The app in headless Chromium, as a user drives it: uploads, sliders, errors, a run, playing videos.

Uses Debian's chromium (/usr/bin/chromium, or $LIPSYNC_CHROMIUM) or, failing that, a browser installed by
``playwright install chromium``; skips when neither playwright nor a browser is available. Every wait is on
something the page shows, with a generous limit (a busy machine makes the app slow, not wrong).
"""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from conftest import REPO

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")

CLIP = "pub_video2_retalking_face5.mp4"  # 524x524, 25 fps, 122 frames
FRAME = 1 / 25
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 300_000  # the most any state of the page may take to show, however busy the machine
DESKTOP, PHONE = {"width": 1400, "height": 900}, {"width": 390, "height": 844}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("LIPSYNC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None  # let playwright use its own browser, if one was installed


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            instance = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        except sync_api.Error as exc:
            pytest.skip(f"no usable Chromium (install Debian's chromium or run 'playwright install chromium'): "
                        f"{str(exc).splitlines()[0]}")
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, comparison_weights, tmp_path_factory):
    """(url, folder of the job folders) of the app over the tiny model, with (random) comparison weights."""
    from lipsync.app import layout
    from lipsync.engine import LipSyncEngine

    # LIPSYNC_SCREENSHOT_CHECKPOINT: README's screenshot with a trained model (benchmarks/train_small.py) instead
    checkpoint = os.environ.get("LIPSYNC_SCREENSHOT_CHECKPOINT") or tiny_pipeline_dir
    engine = LipSyncEngine(checkpoint=checkpoint, device="cpu", detector="opencv")
    wav2lip_checkpoint, syncnet_checkpoint = comparison_weights  # random weights
    jobs = tmp_path_factory.mktemp("jobs")
    demo = layout.build_demo(engine, default_detector="opencv", max_seconds=30, jobs_dir=jobs,
                          wav2lip_checkpoint=str(wav2lip_checkpoint), syncnet_checkpoint=str(syncnet_checkpoint))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url, jobs
    demo.close()


def cut_audio(source, target, seconds, start=0.0):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(start), "-t", str(seconds), "-i", str(source),
                    "-ac", "1", "-ar", "16000", str(target)], check=True)
    return target


def drag_slider(page, elem_id: str, fraction: float, steps: int = 5) -> int:
    """Drag the range input of slider ``elem_id`` to ``fraction`` of its width (through ``steps`` moves);
    returns the value where it was released (the track's value at that moment)."""
    track = page.locator(f"#{elem_id} input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=steps)
    page.mouse.up()
    return int(float(track.input_value()))


def shown_value(page, elem_id: str) -> int:
    """The value the slider ``elem_id`` shows in its number box."""
    return int(float(page.locator(f"#{elem_id} input[type=number]").input_value()))


def in_viewport(page, selector: str) -> bool:
    """Whether the element ``selector`` is drawn (at least partly) inside the window."""
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return bool(box) and box["y"] < size["height"] and box["y"] + box["height"] > 0 and box["width"] > 0


# contrast of text against what is behind it, from the page's computed styles (WCAG 2 relative luminance);
# the colour's alpha and the ancestors' opacity blend the text into its background
CONTRAST_JS = """(selector) => {
    const rgba = (text) => { const v = text.match(/[\\d.]+/g).map(Number); return v.length > 3 ? v : [...v, 1]; };
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    const behind = (el) => {
        for (let e = el; e; e = e.parentElement) {
            const c = rgba(getComputedStyle(e).backgroundColor);
            if (c[3] > 0) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    return [...document.querySelectorAll(selector)].filter((el) => el.offsetParent && el.textContent.trim())
        .map((el) => {
            const fg = rgba(getComputedStyle(el).color);
            let alpha = fg[3];
            for (let e = el; e; e = e.parentElement) alpha *= parseFloat(getComputedStyle(e).opacity);
            const bg = behind(el);
            const text = fg.slice(0, 3).map((v, i) => v * alpha + bg[i] * (1 - alpha));
            const [hi, lo] = [luminance(text), luminance(bg)].sort((a, b) => b - a);
            return [el.textContent.trim().slice(0, 40), (hi + 0.05) / (lo + 0.05)];
        });
}"""
# records whether Generate went off and Stop on (a short job may be over before a test looks)
WATCH_BUTTONS_JS = """() => {
    window.buttonsSeen = {runOff: false, stopOn: false};
    const look = () => {
        if (document.getElementById('run')?.disabled) window.buttonsSeen.runOff = true;
        const stop = document.getElementById('stop');
        if (stop && !stop.disabled) window.buttonsSeen.stopOn = true;
    };
    new MutationObserver(look).observe(document.body, {attributes: true, subtree: true, attributeFilter: ['disabled']});
}"""
HINTS = ".info-text, .step-tip, #consent, footer a, footer button:not(.hidden)"


def check_readable(page) -> None:
    """Hints, step tips, the consent line and the footer: contrast at least 4.5:1 (WCAG AA for small text)."""
    ratios = page.evaluate(CONTRAST_JS, HINTS)
    assert len(ratios) >= 8, ratios  # the hints under the controls, the tips, the footer
    low = [(text, round(ratio, 2)) for text, ratio in ratios if ratio < 4.5]
    assert not low, f"text below 4.5:1 contrast: {low}"


def visible(page, selector: str) -> bool:
    locator = page.locator(selector)
    return locator.count() > 0 and locator.first.is_visible()


def wait_text(page, selector: str, text: str, timeout: float = WAIT_MS):
    """Wait until the element ``selector`` shows ``text`` (a substring); returns its text."""
    page.locator(selector, has_text=text).first.wait_for(timeout=timeout)
    return page.locator(selector).first.inner_text()


def expect_toast(page, text: str) -> None:
    toast = page.locator(".toast-body", has_text=text)
    toast.first.wait_for(timeout=WAIT_MS)
    for close in page.locator(".toast-close").all():  # dismiss, so later toasts are the only ones shown
        if close.is_visible():
            close.click()


def clear_component(page, elem_id: str) -> None:
    """Dismiss the component's error badge, if any, then press its own clear (x) button."""
    badge = page.locator(f"#{elem_id} .clear-status button")
    if badge.count() and badge.first.is_visible():
        badge.first.click()
        badge.first.wait_for(state="hidden")
    page.locator(f"#{elem_id} button[aria-label='Clear']").last.click()
    page.locator(f"#{elem_id} input[type=file]").wait_for(state="attached")


def local_file(src: str) -> Path:
    """The server path behind a gradio file URL (the test runs on the same machine as the app)."""
    return Path(unquote(src.split("file=", 1)[1]))


def image_at(page, src: str) -> np.ndarray:
    data = page.request.get(src).body()
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def save_for_readme(shot: Path, target: Path) -> None:
    """A 256-colour copy of the screenshot (about a quarter of the size) for the README."""
    from PIL import Image

    target.parent.mkdir(exist_ok=True)
    image = Image.open(shot).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(target, optimize=True)


PLAY_JS = """async (selector) => {
    const video = document.querySelector(selector);
    video.muted = true;
    const start = performance.now();
    while (video.readyState < 2 && performance.now() - start < 10000) await new Promise(r => setTimeout(r, 100));
    await video.play();
    const t0 = video.currentTime;
    await new Promise(r => setTimeout(r, 800));
    return {readyState: video.readyState, advanced: video.currentTime - t0, duration: video.duration,
            width: video.videoWidth, height: video.videoHeight, src: video.currentSrc};
}"""


STEP_TITLES = ["1 · Face", "2 · Speech", "3 · Check", "4 · Generate"]


def caption_bands_readable(frame: np.ndarray, panel: tuple, labels: list) -> None:
    """Each panel's caption band (below the picture) holds bright text on a dark band, centred in the panel."""
    width, height = panel
    band = frame[height:]
    assert band.shape[0] >= 32, f"no caption band under the panels ({frame.shape})"
    for i, label in enumerate(labels):
        cell = band[:, i * width:(i + 1) * width].mean(axis=-1)
        text = cell > 160
        assert 0.02 < text.mean() < 0.5, f"{label}: no readable text in its band ({text.mean():.3f})"
        assert cell[~text].mean() < 60, f"{label}: the band behind the text is not dark"
        columns = np.flatnonzero(text.any(axis=0))
        assert abs((columns.min() + columns.max()) / 2 - width / 2) < 0.1 * width, f"{label}: caption not centred"
        assert columns.max() - columns.min() > 0.1 * width, f"{label}: caption too small to read"


def test_user_session(browser, served, media_dir, tmp_path):
    from lipsync.media.probe import probe_duration, probe_video
    from lipsync.media.reader import read_frames

    url, jobs = served
    fake = tmp_path / "holiday.mp4"
    fake.write_text("a text file, not a video")
    blip = cut_audio(media_dir / "tts_en.wav", tmp_path / "blip.wav", 0.05)
    speech = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 1.2, start=0.5)
    long_speech = cut_audio(media_dir / "tts_en.wav", tmp_path / "long.wav", 6.0)

    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.get_by_text("Diff2Lip Studio").first.wait_for()

    # 0. The header links, the consent notice and the numbered steps with their tips
    for name, href in (("Code", "github.com"), ("Paper", "arxiv.org/abs/2308.09716"), ("Model card", "diff2lip")):
        assert href in page.get_by_role("link", name=name).first.get_attribute("href")
    assert "Consent" in page.locator("#consent").inner_text()
    for title in STEP_TITLES:
        page.get_by_role("heading", name=title).wait_for(state="visible")  # rendered, and shown
    assert "Green box" in page.locator("#step-check").inner_text()
    # options that do not apply yet are hidden: the reference slider (each frame is its own reference),
    # the Wav2Lip upload (no comparison), the steps (a preset decides them)
    assert not visible(page, "#reference-frame") and not visible(page, "#wav2lip-video")
    assert not visible(page, "#steps")
    # their weights exist here (the page re-checks them as it loads: wait for that update to be drawn)
    page.locator("#compare-wav2lip").first.wait_for(state="visible")
    page.locator("#score").first.wait_for(state="visible")
    assert not visible(page, "#wav2lip-note") and not visible(page, "#syncnet-note")
    # readable and announced: hints and footer at 4.5:1 or more, the status line read out when it changes,
    # nothing to stop yet, no weights note (the weights are here)
    check_readable(page)
    # (set by the page's load script: wait for it rather than racing it on a busy machine)
    page.wait_for_function("() => document.getElementById('job-status')?.getAttribute('aria-live') === 'polite'")
    assert page.locator("#stop").is_disabled() and page.locator("#run").is_enabled()
    assert not visible(page, "#weights-message")
    # the keyboard's focus on a checkbox is drawn plainly
    page.keyboard.press("Shift")
    page.locator("#mouth-zoom input[type=checkbox]").focus()
    outline = page.evaluate("() => { const s = getComputedStyle(document.activeElement);"
                            " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }")
    assert outline[0] != "none" and outline[1] >= 2, outline

    # 1. A bad upload: the message sits beside the face input, the app goes on
    page.locator("#face-video input[type=file]").set_input_files(fake)
    wait_text(page, "#face-message", "holiday.mp4")
    # a warning note is really amber and bold (the style reaches the paragraph inside)
    style = page.evaluate("() => { const s = getComputedStyle(document.querySelector('#face-message p'));"
                          " return [s.color, parseInt(s.fontWeight)]; }")
    assert style[0] == "rgb(180, 83, 9)" and style[1] >= 600, style
    # said once: no toast repeats the note (the browser's own "Video not playable" goes)
    page.wait_for_function("() => ![...document.querySelectorAll('.toast-body')].some(t => t.offsetParent)")
    clear_component(page, "face-video")
    page.locator("#face-video input[type=file]").set_input_files(media_dir / CLIP)
    page.locator("#face-check img").wait_for()
    page.locator("#face-message").wait_for(state="hidden")
    assert page.locator("#face-check img").get_attribute("alt")  # said in words too

    # 2. The reference frame: shown once "each frame is its own reference" is off; it spans the clip; released,
    #    it keeps the value where it was let go (nothing snaps back) and the face check shows that frame
    page.get_by_label("Each frame is its own reference").uncheck()
    page.locator("#reference-frame").wait_for(state="visible")
    page.locator("#reference-frame [data-testid=max-value]", has_text="121").wait_for()
    for fraction, steps in ((0.25, 5), (0.66, 25)):  # a quick drag, and a slow one
        before = page.locator("#face-check img").get_attribute("src")
        released = drag_slider(page, "reference-frame", fraction, steps)
        assert abs(released - fraction * 121) <= 12, (fraction, released)
        page.wait_for_function("(old) => { const img = document.querySelector('#face-check img');"
                               " return img && img.src !== old; }", arg=before)
        assert shown_value(page, "reference-frame") == released  # after the server has answered
        assert int(page.locator("#reference-frame input[type=range]").input_value()) == released
    check = image_at(page, page.locator("#face-check img").get_attribute("src"))
    green = (check[..., 1] > 200) & (check[..., 0] < 80) & (check[..., 2] < 80)
    assert check.shape[:2] == (524, 524) and green.sum() > 100  # the green face box is drawn
    # a typed frame number past the end is clamped to the last frame, and the check shows that frame
    second_check = page.locator("#face-check img").get_attribute("src")
    number = page.locator("#reference-frame input[type=number]")
    number.fill("500")
    number.press("Enter")
    page.wait_for_function("(old) => { const img = document.querySelector('#face-check img');"
                           " return img && img.src !== old; }", arg=second_check)
    assert number.input_value() == "121"
    assert page.locator("#reference-frame input[type=range]").input_value() == "121"
    page.get_by_label("Each frame is its own reference").check()
    page.locator("#reference-frame").wait_for(state="hidden")

    # 3. Speech that is far too short: said beside the speech input on upload
    page.locator("#speech input[type=file]").set_input_files(blip)
    wait_text(page, "#speech-message", "0.2 s")
    clear_component(page, "speech")
    page.locator("#speech input[type=file]").set_input_files(speech)
    page.locator("#speech-message").wait_for(state="hidden")

    # 4. The info line: lengths, how the video covers the speech, and a time estimate for the paper's 25 steps;
    #    with custom steps (now shown) the estimate follows
    info = wait_text(page, "#info", "about")
    assert "4.9 s video, 1.2 s speech" in info and "as long as the speech" in info and "30 frames" in info, info
    assert re.search(r"about \d+ (s|min)\*?\*? at 25 steps", info), info
    page.get_by_label("custom: choose the steps and the scheduler").check()
    page.locator("#steps").wait_for(state="visible")
    assert drag_slider(page, "steps", 0.0) == 1
    info = wait_text(page, "#info", "at 1 step ")
    assert re.search(r"about \d+ (s|min)", info), info

    # 5. The comparison's own upload shows only under Compare
    page.get_by_label("Compare with Wav2Lip").check()
    page.locator("#wav2lip-video").wait_for(state="visible")
    page.get_by_label("Compare with Wav2Lip").uncheck()
    page.locator("#wav2lip-video").wait_for(state="hidden")

    # 6. Generate (at the foot of the controls): Generate is off while the job runs, its progress and then its
    #    result are in view beside the controls; the side by side plays, its captions are readable
    page.get_by_label("Zoom on the mouths").uncheck()
    page.evaluate(WATCH_BUTTONS_JS)
    page.locator("#run").click()
    page.locator("#job-status .progress-text").first.wait_for(state="visible")
    assert in_viewport(page, "#run") and in_viewport(page, "#job-status .progress-text")
    wait_text(page, "#job-status", "Done")
    assert page.evaluate("() => window.buttonsSeen") == {"runOff": True, "stopOn": True}  # while it ran
    page.locator("#side-by-side video").wait_for()
    assert in_viewport(page, "#side-by-side video") and in_viewport(page, "#job-status")
    page.locator("#run:not([disabled])").wait_for()
    assert page.locator("#stop").is_disabled()  # nothing runs
    state = page.evaluate(PLAY_JS, "#side-by-side video")
    assert state["readyState"] >= 2 and state["advanced"] > 0, state
    sbs = local_file(state["src"])
    assert abs(probe_duration(sbs) - probe_duration(speech)) <= FRAME + 1e-3
    assert probe_video(sbs).size[0] == 2 * 524
    caption_bands_readable(read_frames(sbs, [10])[0], (524, 524), ["source", "Diff2Lip"])
    assert page.locator("#download").is_enabled()
    page.get_by_role("tab", name="Report").click()
    report = page.locator("#report table").inner_text()
    for row in ("Frames", "Length", "Faces", "Time", "Settings"):
        assert row in report, report
    assert "30 at 25 fps" in report and "custom: ddim 1 steps" in report, report
    page.get_by_role("tab", name="First frame").click()  # filled by Generate too, and described in words
    page.locator("#first-frame img").wait_for()
    assert page.locator("#first-frame img").get_attribute("alt")

    # 7. Stop: a longer job (6 s of speech, pingpong) stops within a few seconds, leaves no file, and the next
    #    job runs
    before = {p.name for p in jobs.iterdir()}
    clear_component(page, "speech")
    page.locator("#speech input[type=file]").set_input_files(long_speech)
    page.locator("#speech audio, #speech [data-testid*=waveform] button").first.wait_for(state="attached")
    wait_text(page, "#info", "6.0 s speech")
    page.locator("#run").click()
    page.locator("#job-status", has_text="lip-syncing").first.wait_for()
    bars = page.evaluate("() => [...document.querySelectorAll('.progress-text')].filter(e => e.offsetParent)"
                         ".map(e => e.closest('[id]')?.id)")
    assert bars == ["job-status"], bars  # the progress is drawn once, above the results, not on every output
    assert page.locator("#side-by-side video").count() == 0  # the previous job's results went when it started
    page.locator("#stop").click()
    # a Generate pressed while the job is being stopped cannot be lost: the button goes off (the page's own
    # script does it before the server hears of the Stop; on a busy machine the browser may take a moment)
    page.locator("#run[disabled]").wait_for(state="attached")
    wait_text(page, "#job-status", "Stopped")
    page.locator("#run:not([disabled])").wait_for()
    assert page.locator("#stop").is_disabled()
    deadline = time.monotonic() + WAIT_MS / 1000
    while {p.name for p in jobs.iterdir()} - before and time.monotonic() < deadline:
        time.sleep(0.2)  # the job's folder goes as the job unwinds
    assert not {p.name for p in jobs.iterdir()} - before, "the stopped job left its folder"

    # 8. The photo example goes into the Photo tab, which opens; then a new job runs (short speech, mouths zoomed)
    page.locator("#examples tbody tr").nth(1).click()
    page.locator("#face-tabs [role=tab][aria-selected=true]", has_text="Photo").wait_for()
    page.locator("#face-photo img").wait_for()
    page.locator("#face-check img").wait_for()
    wait_text(page, "#info", "photo, 5.7 s speech")
    clear_component(page, "speech")
    page.locator("#speech input[type=file]").set_input_files(speech)
    wait_text(page, "#info", "photo, 1.2 s speech")
    page.get_by_label("Zoom on the mouths").check()
    if os.environ.get("LIPSYNC_SCREENSHOT_CHECKPOINT"):  # a trained model: sample as the paper does
        page.locator("#preset label", has_text="paper: DDIM 25 steps").click()
    page.locator("#run").click()  # Generate after a Stop starts a job
    wait_text(page, "#job-status", "Done")
    page.get_by_role("tab", name="Side by side").click()
    page.wait_for_function("() => { const v = document.querySelector('#side-by-side video');"
                           " return v && v.videoHeight === 256 + 128 + 32; }")  # photo, its mouth strip, captions
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000  # a real page, not a blank one
    if os.environ.get("LIPSYNC_UPDATE_SCREENSHOT"):  # refresh README's image on request only
        save_for_readme(shot, REPO / "docs" / "screenshot.png")
    if os.environ.get("LIPSYNC_SCREENSHOTS"):  # for a person to look at
        shutil.copy(shot, Path(os.environ["LIPSYNC_SCREENSHOTS"]) / "desktop.png")
    assert not errors, errors
    page.close()


def test_phone_layout_and_faceless_photo(browser, served, tmp_path):
    """At 390 px: nothing wider than the screen, a face-less photo is flagged on upload, and the video
    example loads into the Video tab."""
    url, _ = served
    blank = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(blank), (rng.random((200, 200, 3)) * 40 + 100).astype(np.uint8))  # a grey wall, no face

    page = browser.new_page(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.get_by_text("Diff2Lip Studio").first.wait_for()
    page.locator("#compare-wav2lip").first.wait_for(state="visible")  # the page's load check has answered
    check_readable(page)
    page.get_by_role("tab", name="Photo").click()
    page.locator("#face-photo input[type=file]").set_input_files(blank)
    wait_text(page, "#face-message", "No face was found in this photo")
    page.locator("#examples tbody tr").nth(0).click()
    page.locator("#face-tabs [role=tab][aria-selected=true]", has_text="Video").wait_for()
    page.locator("#face-check img").wait_for()
    page.locator("#face-message").wait_for(state="hidden")
    wait_text(page, "#info", "about")
    # Generate brings the results, and the progress at their top, into view (they sit below the controls on a
    # phone); Stop ends the job
    page.locator("#run").click()
    page.locator("#job-status .progress-text").first.wait_for(state="visible")
    page.wait_for_function("() => { const r = document.getElementById('job-status').getBoundingClientRect();"
                           " return r.top >= 0 && r.bottom <= window.innerHeight; }")  # (a smooth scroll)
    assert in_viewport(page, "#results")
    page.locator("#stop").click()
    wait_text(page, "#job-status", "Stopped")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    for elem_id in ("run", "stop", "results"):
        box = page.locator(f"#{elem_id}").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, elem_id
    shot = tmp_path / "phone.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("LIPSYNC_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["LIPSYNC_SCREENSHOTS"]) / "phone.png")
    page.close()


# where a click at (x, y) pixels of the image lands on the page: the image is drawn whole inside its box
# (object-fit: contain), as Gradio's own click handler assumes
IMAGE_POINT_JS = """([selector, x, y]) => {
    const img = document.querySelector(selector);
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    return [r.left + (r.width - img.naturalWidth * scale) / 2 + (x + 0.5) * scale,
            r.top + (r.height - img.naturalHeight * scale) / 2 + (y + 0.5) * scale];
}"""


def test_a_click_on_the_second_face_chooses_it(browser, served, media_dir, tmp_path):
    """Step 3 with two faces: a click on the second face turns its box green and says so; a click on the
    background says there is no face there and keeps the choice; Generate lip-syncs the face clicked."""
    from test_app import mouth_change
    from test_app_face_choice import LEFT_FACE, RIGHT_FACE, green, two_face_photo

    from lipsync.media.detectors import get_detector
    from lipsync.media.reader import read_frames

    url, jobs = served
    photo = two_face_photo(tmp_path / "two_faces.png")  # 512 x 256: the larger face on the left
    speech = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 0.6, start=0.5)
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.get_by_text("Diff2Lip Studio").first.wait_for()
    page.locator("#compare-wav2lip").first.wait_for(state="visible")  # the page's load check has answered
    page.get_by_role("tab", name="Photo").click()
    page.locator("#face-photo input[type=file]").set_input_files(photo)
    page.locator("#face-check img").wait_for()
    first = page.locator("#face-check img").get_attribute("src")
    check = image_at(page, first)
    assert green(check, 0, 256) > 100 and green(check, 256, 512) == 0  # no choice yet: the larger face
    assert not visible(page, "#face-choice")

    def click_image(x, y):
        page.locator("#face-check img").scroll_into_view_if_needed()
        page.mouse.click(*page.evaluate(IMAGE_POINT_JS, ["#face-check img", x, y]))

    click_image(*RIGHT_FACE)
    wait_text(page, "#face-choice", "Face 2 selected; click another face to change")
    page.wait_for_function("(old) => { const img = document.querySelector('#face-check img');"
                           " return img && img.src !== old; }", arg=first)
    check = image_at(page, page.locator("#face-check img").get_attribute("src"))
    assert green(check, 256, 512) > 100 and green(check, 0, 256) == 0  # the box of the face clicked is green
    # the background: said beside the face; the choice stays
    click_image(5, 250)
    wait_text(page, "#face-message", "There is no face where you clicked")
    assert "Face 2 selected" in page.locator("#face-choice").inner_text()

    page.locator("#speech input[type=file]").set_input_files(speech)
    wait_text(page, "#info", "photo, 0.6 s speech")
    page.locator("#preset label", has_text="draft").click()
    page.locator("#run").click()
    wait_text(page, "#job-status", "Done")
    result = max(jobs.glob("*/two_faces_diff2lip.mp4"), key=lambda p: p.stat().st_mtime)
    source, synced = read_frames(photo, [0])[0], read_frames(result, [0])[0]
    left, right = sorted(get_detector("opencv").detect(source[None])[0][:, :4].tolist())
    assert left[0] < LEFT_FACE[0] < left[2] and right[0] < RIGHT_FACE[0] < right[2]
    assert mouth_change(source, synced, right) > 3 * max(mouth_change(source, synced, left), 1.0)
    page.close()

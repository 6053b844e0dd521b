"""The app in headless Chromium, as a user drives it: uploads, sliders, errors, a run, playing videos.

Uses Debian's chromium (/usr/bin/chromium, or $LIPSYNC_CHROMIUM) or, failing that, a browser installed by
``playwright install chromium``; skips when neither playwright nor a browser is available.
"""

import os
import shutil
import socket
import subprocess
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
JOB_TIMEOUT_MS = 150_000


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
def app_url(tiny_pipeline_dir, comparison_weights):
    import app
    from lipsync.engine import LipSyncEngine

    engine = LipSyncEngine(checkpoint=tiny_pipeline_dir, device="cpu", detector="opencv")
    wav2lip_checkpoint, syncnet_checkpoint = comparison_weights  # random weights
    demo = app.build_demo(engine, default_detector="opencv", max_seconds=30,
                          wav2lip_checkpoint=str(wav2lip_checkpoint), syncnet_checkpoint=str(syncnet_checkpoint))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def cut_audio(source, target, seconds, start=0.0):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(start), "-t", str(seconds), "-i", str(source),
                    "-ac", "1", "-ar", "16000", str(target)], check=True)
    return target


def drag_slider(page, elem_id: str, fraction: float) -> int:
    """Drag the range input of slider ``elem_id`` to ``fraction`` of its width; returns the shown value."""
    track = page.locator(f"#{elem_id} input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=5)
    page.mouse.up()
    page.wait_for_timeout(200)
    return int(float(page.locator(f"#{elem_id} input[type=number]").input_value()))


def expect_toast(page, text: str) -> None:
    toast = page.locator(".toast-body", has_text=text)
    toast.first.wait_for(timeout=30_000)
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


def test_user_session(browser, app_url, media_dir, tmp_path):
    from lipsync.video import probe_duration

    fake = tmp_path / "holiday.mp4"
    fake.write_text("a text file, not a video")
    blip = cut_audio(media_dir / "tts_en.wav", tmp_path / "blip.wav", 0.05)
    speech = cut_audio(media_dir / "tts_en.wav", tmp_path / "speech.wav", 1.2, start=0.5)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(app_url)
    page.get_by_text("Diff2Lip Studio").first.wait_for()

    # 1. A bad upload: a toast names the file; then the upload is replaced by a real clip
    page.locator("#face-video input[type=file]").set_input_files(fake)
    expect_toast(page, "holiday.mp4")
    clear_component(page, "face-video")
    page.locator("#face-video input[type=file]").set_input_files(media_dir / CLIP)
    # the reference-frame slider now spans the clip, and the face check shows the detected box
    page.locator("#reference-frame [data-testid=max-value]", has_text="121").wait_for()
    page.locator("#face-check img").wait_for()

    # 2. Both sliders: fewest steps; a reference frame a quarter into the clip (its face check updates)
    steps = drag_slider(page, "steps", 0.0)
    assert steps == 1, steps
    page.get_by_label("Each frame is its own reference").uncheck()
    first_check = page.locator("#face-check img").get_attribute("src")
    reference = drag_slider(page, "reference-frame", 0.25)
    assert 15 <= reference <= 45
    page.wait_for_function("(old) => { const img = document.querySelector('#face-check img');"
                           " return img && img.src !== old; }", arg=first_check)
    check = image_at(page, page.locator("#face-check img").get_attribute("src"))
    green = (check[..., 1] > 200) & (check[..., 0] < 80) & (check[..., 2] < 80)
    assert check.shape[:2] == (524, 524) and green.sum() > 100  # the green face box is drawn

    # 3. Speech that is far too short: the run fails with a clear message ...
    page.locator("#speech input[type=file]").set_input_files(blip)
    page.locator("#speech audio, #speech [data-testid*=waveform] button").first.wait_for(state="attached")
    page.locator("#run").click()
    expect_toast(page, "0.2 s")

    # 4. ... and the page still works: real speech, run again, both videos play
    clear_component(page, "speech")
    page.locator("#speech input[type=file]").set_input_files(speech)
    page.wait_for_timeout(500)
    page.locator("#run").click()
    page.locator("#result video").wait_for(timeout=JOB_TIMEOUT_MS)
    page.locator("#side-by-side video").wait_for(timeout=JOB_TIMEOUT_MS)
    page.locator("#report table").wait_for()

    expected = probe_duration(speech)
    for elem_id, width in (("result", 524), ("side-by-side", 2 * 524)):
        state = page.evaluate(PLAY_JS, f"#{elem_id} video")
        assert state["readyState"] >= 2, f"{elem_id}: the browser cannot play the video ({state})"
        assert state["advanced"] > 0, f"{elem_id}: play() did not advance the video ({state})"
        assert state["width"] == width
        produced = probe_duration(local_file(state["src"]))
        assert abs(state["duration"] - produced) <= 0.05
        assert abs(produced - expected) <= FRAME + 1e-3, f"{elem_id}: {produced:.3f} s for {expected:.3f} s of speech"
    assert page.locator("#download a").first.get_attribute("href")  # the download link is there

    # 5. An example row (public-domain face + espeak-ng speech; also the README screenshot), the chosen
    #    reference frame kept, from the Advanced settings the "shortest" policy, a first-frame preview and
    #    a second job
    page.get_by_text("moving face + speech").click()
    page.locator("#reference-frame [data-testid=max-value]", has_text="99").wait_for()
    page.get_by_text("Advanced").click()
    page.get_by_label("shortest").check()
    page.get_by_role("button", name="Preview first frame").click()
    page.locator("#first-frame img").wait_for(timeout=JOB_TIMEOUT_MS)
    previous = page.locator("#result video").get_attribute("src")
    page.locator("#run").click()
    page.wait_for_function("(old) => { const v = document.querySelector('#result video');"
                           " return v && v.src && v.src !== old; }", arg=previous, timeout=JOB_TIMEOUT_MS)
    state = page.evaluate(PLAY_JS, "#result video")
    assert state["readyState"] >= 2 and state["advanced"] > 0 and state["width"] == 256
    assert abs(probe_duration(local_file(state["src"])) - 4.0) <= FRAME + 1e-3  # the 4 s clip is the shorter

    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000  # a real page, not a blank one
    if os.environ.get("LIPSYNC_UPDATE_SCREENSHOT"):  # refresh README's image on request only
        save_for_readme(shot, REPO / "docs" / "screenshot.png")

    # 6. The three-way comparison with scores, on 1.2 s of speech (pingpong again: the speech sets the length):
    #    source | Wav2Lip | Diff2Lip plays, and the score table lists the three videos
    clear_component(page, "speech")
    page.locator("#speech input[type=file]").set_input_files(speech)
    page.get_by_label("pingpong").check()
    page.wait_for_timeout(500)
    page.get_by_label("Compare with Wav2Lip").check()
    page.get_by_label("Lip-sync score (LSE-D / LSE-C)").check()
    previous = page.locator("#side-by-side video").get_attribute("src")
    page.locator("#run").click()
    page.wait_for_function("(old) => { const v = document.querySelector('#side-by-side video');"
                           " return v && v.src && v.src !== old; }", arg=previous, timeout=JOB_TIMEOUT_MS)
    state = page.evaluate(PLAY_JS, "#side-by-side video")
    assert state["readyState"] >= 2 and state["advanced"] > 0, state
    assert state["width"] == 3 * 256 and state["height"] == 256  # three panels of the 256 px example face
    assert abs(probe_duration(local_file(state["src"])) - expected) <= FRAME + 1e-3
    table = page.locator("#scores table")
    table.wait_for()
    labels = [row.inner_text().split("\t")[0].strip() for row in table.locator("tbody tr").all()]
    assert labels == ["source (before)", "Wav2Lip", "Diff2Lip"], labels
    page.close()

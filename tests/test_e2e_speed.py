"""The defaults that decide a job's speed: overlapped stages where measured faster, torch.compile where it repays
its compile time, the x264 preset a user chooses. Pure logic with the core count, device and clip length
injected, plus one job that shows the choices reach the engine (no timings asserted)."""

import time

import numpy as np
import pytest
from conftest import small_pipeline

from lipsync.engine import LipSyncEngine
from lipsync.job import JobOptions
from lipsync.media import stages
from lipsync.media.writer import DEFAULT_ENCODER_PRESET, X264_PRESETS, VideoWriter
from lipsync.model import acceleration


def test_overlap_default_is_the_measured_faster_one_for_the_core_count():
    # measured with benchmarks/e2e.py on 2 cores: overlapped / sequential wall time 1.13 (512 px) and 1.09
    # (1080p) -> sequential there; with the model on a GPU the CPU's stages hide behind it
    assert not stages.overlap_by_default(2, model_on_gpu=False)
    assert not stages.overlap_by_default(1, model_on_gpu=False)
    assert stages.overlap_by_default(16, model_on_gpu=False)
    assert stages.overlap_by_default(2, model_on_gpu=True) and stages.overlap_by_default(1, model_on_gpu=True)
    assert stages.available_cores() >= 1


def test_compile_by_default_only_on_a_gpu_for_clips_that_repay_it():
    for frames in (10, 10_000, 1_000_000):
        assert not acceleration.compile_pays_off("cpu", frames, 25)  # a CPU compile takes minutes: asked for
    assert not acceleration.compile_pays_off("cuda", 250, 25)  # 10 s of video: the compile costs more
    assert acceleration.compile_pays_off("cuda:0", 10_000, 25)  # 6.7 min of video at 25 fps
    # the break-even point: about 5,300 frames at 25 steps, twice as many at half the steps
    assert not acceleration.compile_pays_off("cuda", 5_000, 25) and acceleration.compile_pays_off("cuda", 5_600, 25)
    assert not acceleration.compile_pays_off("cuda", 10_000, 12)
    assert acceleration.compile_pays_off("cuda", 5_000, 25, compile_seconds=20)  # a warm compile cache


def test_stage_timer_counts_cpu_time_apart_from_waiting():
    timer = stages.StageTimer(("decode", "encode"))
    with timer("decode"):
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            np.sqrt(np.arange(1000.0))
    with timer("encode"):
        time.sleep(0.2)
    assert timer.cpu_seconds["decode"] > 5 * timer.cpu_seconds["encode"]
    assert timer.seconds["encode"] >= 0.2 and timer.cpu_seconds["encode"] < 0.1


def test_encoder_preset_is_validated_and_reaches_x264(tmp_path):
    assert DEFAULT_ENCODER_PRESET == "veryfast" and "medium" in X264_PRESETS
    with pytest.raises(ValueError, match="ultrafast, superfast"):
        JobOptions(encoder_preset="turbo").validate()
    with pytest.raises(ValueError, match="encoder preset"):
        VideoWriter(tmp_path / "x.mp4", 25, (64, 64), preset="turbo")
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8), 10, axis=0)
    frames[:, 20:40] = rng.integers(0, 256, (10, 20, 64, 3), dtype=np.uint8)
    sizes = {}
    for preset in ("ultrafast", "veryfast"):
        with VideoWriter(tmp_path / f"{preset}.mp4", 25, (64, 64), preset=preset) as writer:
            writer.write(frames)
        sizes[preset] = (tmp_path / f"{preset}.mp4").stat().st_size
    assert sizes["ultrafast"] > sizes["veryfast"]  # ultrafast drops the tools that make files small


def test_cli_encoder_preset_overlap_and_compile_flags():
    from lipsync.cli import build_parser, job_options

    base = ["--video", "v.mp4", "--audio", "a.wav", "--output", "o.mp4"]
    default = job_options(build_parser().parse_args(base))
    assert default.encoder_preset == DEFAULT_ENCODER_PRESET and default.overlap is None and default.compile is None
    chosen = job_options(build_parser().parse_args(base + ["--encoder-preset", "medium", "--sequential",
                                                          "--no-compile"]))
    assert chosen.encoder_preset == "medium" and chosen.overlap is False and chosen.compile is False
    assert job_options(build_parser().parse_args(base + ["--overlap", "--compile"])).overlap is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--encoder-preset", "turbo"])


def test_engine_applies_the_defaults_it_chose(media_dir, tmp_path, monkeypatch):
    """With overlap and compile left to the engine: one core runs the stages one after another, a long clip on a
    GPU compiles (the GPU is faked: compile_pays_off sees the clip's frames and steps), and the encoder preset
    goes to every video written."""
    import soundfile

    from lipsync.engine import VideoWriter as EngineWriter
    from lipsync.media import audio as audio_io

    wav = audio_io.load_audio(media_dir / "tts_en.wav")[: int(0.4 * 16000)]
    soundfile.write(tmp_path / "speech.wav", wav, 16000)
    runs, asked, compiled, presets = [], [], [], []
    monkeypatch.setattr(stages, "available_cores", lambda: 1)
    real_sequential = stages.run_sequential
    monkeypatch.setattr(stages, "run_sequential", lambda *a: runs.append("sequential") or real_sequential(*a))
    monkeypatch.setattr(stages, "run_overlapped", lambda *a: runs.append("overlapped") or real_sequential(*a))
    monkeypatch.setattr(acceleration, "compile_pays_off", lambda device, frames, steps: asked.append(
        (str(device), frames, steps)) or True)
    monkeypatch.setattr(acceleration, "compile_pipeline", lambda pipe, notify=None: compiled.append(1) or pipe)

    class Recording(EngineWriter):
        def __init__(self, *args, **kwargs):
            presets.append(kwargs.get("preset"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("lipsync.engine.VideoWriter", Recording)
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="opencv")
    report = engine.run(media_dir / "pub_video1_retalking_face2.mp4", tmp_path / "speech.wav", tmp_path / "out.mp4",
                        JobOptions(num_inference_steps=2, detector="opencv", encoder_preset="ultrafast"))
    assert report.frames == 10 and (tmp_path / "out.mp4").exists() and (tmp_path / "out_side_by_side.mp4").exists()
    assert runs == ["sequential"]
    assert asked == [("cpu", 10, 2)] and compiled == [1]
    assert presets == ["ultrafast", "ultrafast"]  # the output and the side-by-side
    runs.clear(), compiled.clear()
    engine.run(media_dir / "pub_video1_retalking_face2.mp4", tmp_path / "speech.wav", tmp_path / "again.mp4",
               JobOptions(num_inference_steps=2, detector="opencv", side_by_side=False, overlap=True, compile=False))
    assert runs == ["overlapped"] and compiled == []  # what the job asks for wins


def test_summary_says_why_the_stage_times_differ_from_the_wall_time():
    """Overlapped stages add up to more than the wall time; sequential ones to less (set-up runs between them)."""
    from lipsync.job import JobReport

    def summary(wall):
        return JobReport(output=None, side_by_side=None, frames=10, fps=25.0, width=8, height=8, faces_found=10,
                         faces_missing=0, faces_interpolated=0, seconds={"decode": 2.0, "diffusion": 8.0},
                         wall_seconds=wall).summary()

    assert "8.0 s (stage times add up to 10.0 s: stages overlap)" in summary(8.0)
    assert "12.0 s (stage times add up to 10.0 s: the rest is set-up between stages)" in summary(12.0)

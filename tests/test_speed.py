"""Fast paths: bf16 vs fp32 on the fixture model, cached conditioning, DeepCache, overlapped stages."""

import threading
import time

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, small_pipeline

from lipsync.media import stages
from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
from lipsync.media.reader import iter_frames

# bf16 vs fp32 on the fixture model, 3 frames, 10 DDIM steps (measured: mean |d| 0.0014, 99th percentile 0.034,
# PSNR 42.5 dB; a few isolated pixels flip further because x0 clipping amplifies tiny differences)
BF16_MEAN_ABS = 0.005  # bound on the mean |bf16 - fp32| of the final samples in [-1, 1]
BF16_P99_ABS = 0.08  # bound on its 99th percentile
BF16_MIN_PSNR = 38.0  # dB on the generated (lower) half of the uint8 faces


@pytest.fixture(scope="module")
def fixture_inputs(fixtures_dir):
    from safetensors.torch import load_file

    return load_file(str(fixtures_dir / "tiny_ddim25.safetensors"))


def fixture_pipeline(fixtures_dir, dtype=torch.float32):
    from safetensors.torch import load_file

    from lipsync import Diff2LipPipeline, Diff2LipUNetModel
    from lipsync.model.acceleration import prepare_unet
    from lipsync.model.pipeline import default_scheduler

    unet = Diff2LipUNetModel.from_original_checkpoint(
        load_file(str(fixtures_dir / "tiny_state_dict.safetensors")), **TINY_OVERRIDES)
    pipe = Diff2LipPipeline(unet=unet.to(dtype), scheduler=default_scheduler())
    prepare_unet(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def test_bf16_stays_close_to_fp32_on_the_fixture_model(fixtures_dir, fixture_inputs):
    fx = fixture_inputs
    args = dict(faces=fx["image_u8"][:3], reference_faces=fx["ref_u8"].repeat(3, 1, 1, 1), mels=fx["indiv_mels"][:3],
                num_inference_steps=10, output_type="uint8", batch_size=3)
    ref = fixture_pipeline(fixtures_dir)(generator=torch.Generator().manual_seed(7), **args)
    pipe = fixture_pipeline(fixtures_dir, torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16
    assert pipe.unet.input_blocks[1][0].in_layers[2].weight.is_contiguous(memory_format=torch.channels_last)
    out = pipe(generator=torch.Generator().manual_seed(7), **args)
    diff = (out.samples - ref.samples).abs()
    quality = psnr(out.frames[:, 64:], ref.frames[:, 64:])
    assert 0 < diff.mean().item() <= BF16_MEAN_ABS, diff.mean()  # bf16 really ran (not fp32), within the bound
    assert diff.flatten().quantile(0.99).item() <= BF16_P99_ABS
    assert quality >= BF16_MIN_PSNR, quality
    assert np.array_equal(out.frames[:, :64], ref.frames[:, :64])  # the upper half is untouched in both


def test_cached_audio_style_and_deepcache_interval_one_are_exact(fixtures_dir, fixture_inputs):
    fx = fixture_inputs
    pipe = fixture_pipeline(fixtures_dir)
    unet = pipe.unet
    with torch.no_grad():
        args = (fx["image_u8"][:2].permute(0, 3, 1, 2).float() / 127.5 - 1,)
        mask = torch.zeros(2, 1, 128, 128)
        mask[:, :, 64:] = 1
        kw = dict(cond_image=args[0], mask=mask, reference=args[0])
        direct = unet(args[0], torch.tensor(480), audio=fx["indiv_mels"][:2], **kw).sample
        style = unet.audio_style(fx["indiv_mels"][:2])
        cached = unet(args[0], torch.tensor(480), style=style, **kw).sample
    assert torch.equal(direct, cached)  # the once-per-batch style gives bit-identical fp32 outputs

    common = dict(faces=fx["image_u8"][:2], mels=fx["indiv_mels"][:2], num_inference_steps=4)
    off = pipe(generator=torch.Generator().manual_seed(7), **common)
    one = pipe(generator=torch.Generator().manual_seed(7), deepcache_interval=1, **common)
    two = pipe(generator=torch.Generator().manual_seed(7), deepcache_interval=2, **common)
    assert torch.equal(off.samples, one.samples)
    d = (two.samples - off.samples).abs().max().item()
    assert 0 < d < 0.5, d  # reuse changed the result, but only a little
    with pytest.raises(ValueError, match="deepcache_interval"):
        pipe(deepcache_interval=0, **common)


def test_deepcache_full_step_returns_the_features_a_cached_step_reuses():
    unet = small_pipeline().unet
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    mask = torch.zeros(1, 1, 128, 128)
    mask[:, :, 64:] = 1
    kw = dict(cond_image=x, mask=mask, reference=x, audio=torch.randn(1, 80, 16))
    with torch.no_grad():
        full = unet(x, torch.tensor(500), deepcache_depth=2, **kw)
        plain = unet(x, torch.tensor(500), **kw).sample
        again = unet(x, torch.tensor(500), deepcache_depth=2, deep_features=full.deep_features, **kw).sample
    assert torch.equal(full.sample, plain) and full.deep_features.shape[0] == 1
    # same step, same input: reusing its own deep features reproduces the full output
    assert torch.allclose(again, plain, atol=1e-5)


# ---- overlapped stages ------------------------------------------------------------------------------


def test_overlapped_stages_keep_order_bound_memory_and_propagate_errors():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def produce():
        for i in range(40):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            yield i

    out = []

    def consume(v):
        time.sleep(0.002)
        out.append(v)
        with lock:
            in_flight[0] -= 1

    stages.run_overlapped(produce(), lambda i: i * i, consume, depth=2)
    assert out == [i * i for i in range(40)]
    assert peak[0] <= 2 * 2 + 3  # two bounded queues plus one item in each stage

    def bad_work(i):
        if i == 5:
            raise RuntimeError("model failed")
        return i

    seen = []
    with pytest.raises(RuntimeError, match="model failed"):
        stages.run_overlapped(iter(range(100)), bad_work, seen.append)
    assert seen == list(range(len(seen))) and len(seen) <= 5

    def bad_produce():
        yield 1
        raise OSError("decoder died")

    with pytest.raises(OSError, match="decoder died"):
        stages.run_overlapped(bad_produce(), lambda i: i, lambda v: None)
    with pytest.raises(ValueError, match="encoder"):
        stages.run_overlapped(iter(range(10)), lambda i: i, lambda v: (_ for _ in ()).throw(ValueError("encoder")))


@pytest.fixture(scope="module")
def short_audio(media_dir, tmp_path_factory):
    import soundfile

    from lipsync.media import audio as audio_io

    wav = audio_io.load_audio(media_dir / "tts_en.wav")[: int(1.0 * 16000)]
    path = tmp_path_factory.mktemp("audio") / "one_second.wav"
    soundfile.write(path, wav, 16000)
    return path


def decode(path):
    return np.concatenate(list(iter_frames(path)))


def test_overlapped_engine_writes_the_same_video_as_the_sequential_one(media_dir, short_audio, tmp_path):
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="opencv")
    video = media_dir / "pub_video1_retalking_face2.mp4"
    common = dict(num_inference_steps=2, detector="opencv", batch_size=4, chunk_frames=6, side_by_side=False)
    seq = engine.run(video, short_audio, tmp_path / "seq.mp4", JobOptions(overlap=False, **common))
    ovl = engine.run(video, short_audio, tmp_path / "ovl.mp4", JobOptions(overlap=True, **common))
    assert seq.frames == ovl.frames == 25
    a, b = decode(tmp_path / "seq.mp4"), decode(tmp_path / "ovl.mp4")
    assert a.shape == b.shape and np.array_equal(a, b)
    assert ovl.seconds["diffusion"] > 0 and ovl.seconds["decode"] > 0 and ovl.seconds["encode"] > 0


def test_overlapped_engine_error_leaves_no_output(media_dir, short_audio, tmp_path):
    pipe = small_pipeline()
    calls = [0]
    real = pipe.__class__.__call__

    class Failing(type(pipe)):
        def __call__(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 2:
                raise RuntimeError("out of memory in the model")
            return real(self, *args, **kwargs)

    pipe.__class__ = Failing
    engine = LipSyncEngine(pipeline=pipe, detector="opencv")
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.run(media_dir / "pub_video1_retalking_face2.mp4", short_audio, out,
                   JobOptions(num_inference_steps=1, detector="opencv", chunk_frames=6, side_by_side=True))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_presets_deepcache_and_compile_reach_the_job_options():
    from lipsync.cli import build_parser, job_options
    from lipsync.model.presets import PRESETS

    base = ["--video", "v.mp4", "--audio", "a.wav", "--output", "o.mp4"]
    paper = job_options(build_parser().parse_args(base))
    assert paper.sampling() == ("ddim", 25, 1) and not paper.compile and paper.batch_size is None
    assert paper.overlap is None  # the engine chooses (lipsync.media.stages.overlap_by_default)
    fast = job_options(build_parser().parse_args(base + ["--preset", "fast", "--compile", "--sequential"]))
    assert fast.sampling() == (PRESETS["fast"].scheduler, PRESETS["fast"].steps, PRESETS["fast"].deepcache_interval)
    assert fast.compile and not fast.overlap
    custom = job_options(build_parser().parse_args(base + ["--steps", "12", "--deepcache", "3"]))
    assert custom.sampling() == ("ddim", 12, 3)
    # every preset is cheaper than the one before it, and the paper preset costs exactly the paper's
    costs = [PRESETS[name].relative_cost for name in ("paper", "fast", "draft")]
    assert costs[0] == 1.0 and costs[0] > costs[1] > costs[2] > 0
    with pytest.raises(ValueError, match="deepcache_interval"):
        JobOptions(deepcache_interval=0).validate()
